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
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

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

apt_install prometheus-alertmanager

binary="$(find_binary)" || die "alertmanager not on PATH after installing prometheus-alertmanager"
log "installed $binary ($("$binary" --version 2>&1 | head -n1))"
