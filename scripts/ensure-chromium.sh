#!/usr/bin/env bash
# Make sure Debian's headless-capable `chromium` is at /usr/bin/chromium; idempotent.
#
# The browser tests (pytest -m browser) drive it through Playwright for Python with
# executable_path=/usr/bin/chromium: Playwright's own browser download cannot be fetched on an
# offline box, Debian's package can. Written for root on Debian bookworm; ~35 s to install.
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

have() { [[ -x /usr/bin/chromium ]]; }

if have; then
    log "present: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
    exit 0
fi

apt_install chromium fonts-dejavu-core

have || die "/usr/bin/chromium still missing after installing the package"
log "installed: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
