#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH; idempotent.
#
# Installs Debian's `prometheus` package (it ships both binaries) when either is missing. Only
# installs: the integration tests start their own prometheus on loopback with a temp storage dir,
# so no service is enabled or started here. Written for root on Debian bookworm.
set -euo pipefail

log() { printf 'ensure-prometheus: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

have_all() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

if have_all; then
    log "present: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

apt_install prometheus

have_all || die "prometheus/promtool still not on PATH after installing the package"
log "installed: $(prometheus --version 2>&1 | head -n1)"
