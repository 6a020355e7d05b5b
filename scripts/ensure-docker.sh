#!/usr/bin/env bash
# Make sure a Docker engine answers on this host; idempotent.
#
# Installs docker.io (+ debootstrap, needed by build-image.sh) when missing and starts dockerd
# in the background when `docker info` fails. Written for root on Debian bookworm without
# systemd (containers, CI runners); on a host where systemd manages docker it only checks.
#
# Env: SCHEDCTL_DOCKERD_LOG (default /var/log/schedctl-dockerd.log, or $STATE/dockerd.log when
#      STATE is set), SCHEDCTL_DOCKER_WAIT_S (default 60).
set -euo pipefail

WAIT_S="${SCHEDCTL_DOCKER_WAIT_S:-60}"
if [[ -n "${STATE:-}" ]]; then
    DEFAULT_LOG="${STATE}/dockerd.log"
else
    DEFAULT_LOG=/var/log/schedctl-dockerd.log
fi
LOG="${SCHEDCTL_DOCKERD_LOG:-$DEFAULT_LOG}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

engine_up() { docker info >/dev/null 2>&1; }

ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
    command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_install "${missing[@]}"
    fi
    # docker.io ships its CLI in /usr/bin; a newer CLI elsewhere on PATH is fine (API negotiates).
    command -v docker >/dev/null || die "docker CLI not on PATH after installing docker.io"
}

start_dockerd() {
    local dockerd
    dockerd="$(command -v dockerd || echo /usr/sbin/dockerd)"
    [[ -x "$dockerd" ]] || die "dockerd not found"
    [[ $(id -u) -eq 0 ]] || die "docker engine is down and only root can start dockerd"
    if [[ -S /var/run/docker.sock ]] && pgrep -x dockerd >/dev/null; then
        log "dockerd is running but not answering yet; waiting"
        return
    fi
    mkdir -p "$(dirname "$LOG")"
    log "starting dockerd (log: $LOG)"
    # setsid + nohup: the engine must outlive this script and the shell that ran it.
    setsid nohup "$dockerd" >>"$LOG" 2>&1 </dev/null &
}

wait_for_engine() {
    local deadline=$((SECONDS + WAIT_S))
    until engine_up; do
        if ((SECONDS >= deadline)); then
            log "last lines of $LOG:"
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "docker engine did not answer within ${WAIT_S}s (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock})"
        fi
        sleep 1
    done
}

main() {
    if command -v docker >/dev/null && engine_up; then
        log "docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || apt_install debootstrap
        return 0
    fi
    ensure_packages
    engine_up || start_dockerd
    wait_for_engine
    log "docker engine is up ($(docker version --format '{{.Server.Version}}'))"
}

main "$@"
