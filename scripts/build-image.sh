#!/usr/bin/env bash
# Build the local test image without any registry; cached by content.
#
#   1. schedctl-base:bookworm  = debootstrap --variant=minbase (python3, pytest, ...) | docker import
#   2. schedctl-test:bookworm  = docker build deploy/docker/Dockerfile.test FROM that base
#
# Each image carries the label schedctl.content-hash; a step is skipped when the image with that
# tag already has the hash of its inputs. Force a rebuild with SCHEDCTL_IMAGE_REBUILD=1.
#
# Env: SCHEDCTL_IMAGE (default schedctl-test:bookworm), SCHEDCTL_BASE_IMAGE
#      (default schedctl-base:bookworm), SCHEDCTL_DEBIAN_MIRROR (default: this host's apt mirror).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${SCHEDCTL_IMAGE:-schedctl-test:bookworm}"
BASE_IMAGE="${SCHEDCTL_BASE_IMAGE:-schedctl-base:bookworm}"
SUITE=bookworm
PACKAGES=python3,python3-pytest,python3-pytest-cov,procps,passwd
DOCKERFILE="$ROOT_DIR/deploy/docker/Dockerfile.test"
LABEL=schedctl.content-hash

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sha() { sha256sum | cut -c1-16; }

# The base depends only on the debootstrap recipe; the test image on the base, its Dockerfile and
# this script. Dockerfile.gpu is not an input (it is never built here).
base_hash() { printf '%s\n' "$SUITE" "$PACKAGES" minbase v1 | sha; }
test_hash() { cat "$DOCKERFILE" "${BASH_SOURCE[0]}" <(base_hash) | sha; }

image_hash() {
    docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

# The host's own Debian mirror: only the hosts apt is configured for are reachable.
debian_mirror() {
    if [[ -n "${SCHEDCTL_DEBIAN_MIRROR:-}" ]]; then
        echo "$SCHEDCTL_DEBIAN_MIRROR"
        return
    fi
    local url=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        url="$(awk '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "'"$SUITE"'") { print uri; exit } }
        ' /etc/apt/sources.list.d/*.sources)"
    fi
    if [[ -z "$url" && -f /etc/apt/sources.list ]]; then
        url="$(awk '$1 == "deb" && $3 == "'"$SUITE"'" { print $2; exit }' /etc/apt/sources.list)"
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

build_base() {
    local hash="$1" mirror rootfs
    command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] \
        || die "debootstrap missing: run scripts/ensure-docker.sh (or apt-get install debootstrap)"
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /tmp/schedctl-rootfs.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$rootfs'" EXIT
    log "debootstrap $SUITE from $mirror (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # Keep the image small: apt lists and caches are useless in a read-only test container.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -c . \
        | docker import --change "LABEL $LABEL=$hash" --change 'CMD ["/bin/sh"]' - "$BASE_IMAGE" >/dev/null \
        || die "docker import failed"
    rm -rf "$rootfs"
    trap - EXIT
    log "imported $BASE_IMAGE ($hash)"
}

build_test() {
    local hash="$1" out
    out="$(mktemp)"
    # Output only on failure: the legacy builder's deprecation banner is noise here.
    if ! docker build --build-arg "BASE=$BASE_IMAGE" --label "$LABEL=$hash" -t "$IMAGE" \
        -f "$DOCKERFILE" "$ROOT_DIR/deploy/docker" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "docker build $IMAGE failed"
    fi
    rm -f "$out"
    log "built $IMAGE ($hash)"
}

main() {
    docker info >/dev/null 2>&1 || die "docker engine not answering: run scripts/ensure-docker.sh first"
    local bh th
    bh="$(base_hash)"
    th="$(test_hash)"
    if [[ "${SCHEDCTL_IMAGE_REBUILD:-0}" != 1 && "$(image_hash "$IMAGE")" == "$th" ]]; then
        log "$IMAGE is up to date ($th)"
        return 0
    fi
    if [[ "${SCHEDCTL_IMAGE_REBUILD:-0}" == 1 || "$(image_hash "$BASE_IMAGE")" != "$bh" ]]; then
        build_base "$bh"
    else
        log "$BASE_IMAGE is up to date ($bh)"
    fi
    build_test "$th"
}

main "$@"
