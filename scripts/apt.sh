# Sourced by the ensure-*.sh scripts: installs Debian packages the one way they all need.
# The caller defines log() and die(). Written for root on Debian bookworm.

apt_updated=0

# apt_install PKG...: apt-get update (once per script), then install PKG... without
# recommends. policy-rc.d 101 keeps the packages' init scripts from starting services during
# the install: the tests and the ensure scripts start what they need themselves.
apt_install() {
    local policy=/usr/sbin/policy-rc.d created=0 status=0
    [[ $(id -u) -eq 0 ]] || die "need root to install: $* (run: sudo apt-get install -y $*)"
    command -v apt-get >/dev/null || die "no apt-get: install $* by hand"
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
            || die "apt-get update failed"
        apt_updated=1
    fi
    log "apt-get install $*"
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "$@" >/dev/null || status=$?
    if [[ $created -eq 1 ]]; then
        rm -f "$policy"
    fi
    [[ $status -eq 0 ]] || die "apt-get install $* failed (exit $status)"
}
