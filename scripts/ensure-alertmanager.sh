#!/usr/bin/env bash
# Make sure the Prometheus Alertmanager binary is installed; idempotent.
#
# Installs Debian's `prometheus-alertmanager` (gives `alertmanager` and `amtool`) when missing.
# It does not start anything: tests run the binary themselves on loopback with a temporary
# config and storage path. Debian's package also ships a systemd/init service; on hosts
# without systemd nothing starts, and where one did start we leave it alone.
#
# Usage: scripts/ensure-alertmanager.sh   (root on Debian/Ubuntu, or the binary already on PATH)
set -euo pipefail

log() { printf 'ensure-alertmanager: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_binary() {
    command -v alertmanager 2>/dev/null && return 0
    for candidate in /usr/bin/prometheus-alertmanager /usr/sbin/alertmanager; do
        [[ -x "$candidate" ]] && { echo "$candidate"; return 0; }
    done
    return 1
}

if binary="$(find_binary)"; then
    log "found $binary ($("$binary" --version 2>&1 | head -n1))"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "alertmanager missing and not root (run: sudo apt-get install -y prometheus-alertmanager)"
command -v apt-get >/dev/null || die "alertmanager missing and no apt-get: install it by hand"

log "apt-get update"
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null || die "apt-get update failed"
log "apt-get install prometheus-alertmanager"
# policy-rc.d keeps the package's init script from starting a daemon on :9093 during install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends \
    prometheus-alertmanager >/dev/null || die "apt-get install prometheus-alertmanager failed"

binary="$(find_binary)" || die "alertmanager not on PATH after installing prometheus-alertmanager"
log "installed $binary ($("$binary" --version 2>&1 | head -n1))"
