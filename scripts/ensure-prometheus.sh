#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH; idempotent.
#
# Installs Debian's `prometheus` package (it ships both binaries) when either is missing. Only
# installs: the integration tests start their own prometheus on loopback with a temp storage dir,
# so no service is enabled or started here. Written for root on Debian bookworm.
set -euo pipefail

log() { printf 'ensure-prometheus: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_all() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

if have_all; then
    log "present: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "need root to install (run: sudo apt-get install -y prometheus)"
command -v apt-get >/dev/null || die "no apt-get: install prometheus and promtool by hand"

log "apt-get update"
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
log "apt-get install prometheus"
# policy-rc.d 101 keeps the package's init script from starting a system-wide prometheus.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
status=0
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    >/dev/null || status=$?
if [[ $created_policy -eq 1 ]]; then
    rm -f "$policy"
fi
[[ $status -eq 0 ]] || die "apt-get install prometheus failed (exit $status)"

have_all || die "prometheus/promtool still not on PATH after installing the package"
log "installed: $(prometheus --version 2>&1 | head -n1)"
