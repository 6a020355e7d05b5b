#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are installed; idempotent.
#
# Installs Debian's `postgresql` package when /usr/lib/postgresql/*/bin/initdb is missing. Only
# installs: the tests start their own throwaway cluster (initdb + pg_ctl as the postgres user on
# a loopback port, see tests/pg.py), so no system cluster is started here. With --check it also
# starts and stops such a cluster once, so a server that cannot start fails here, loudly.
# Written for root on Debian bookworm (no systemd needed).
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

have_all() {
    local dir
    dir=$(bindir)
    [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]
}

if have_all; then
    log "present: $("$(bindir)/postgres" --version)"
else
    apt_install postgresql
    have_all || die "postgresql installed but initdb/pg_ctl/postgres are missing"
    log "installed: $("$(bindir)/postgres" --version)"
fi

if [[ ${1:-} == --check ]]; then
    dir=$(bindir)
    tmp=$(mktemp -d /tmp/ensure-postgres.XXXXXX)
    trap 'runuser -u postgres -- "$dir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
    as=()
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$tmp"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$dir/initdb" -D "$tmp/data" -U postgres --auth=trust --no-sync >/dev/null \
        || die "initdb failed"
    "${as[@]}" "$dir/pg_ctl" -D "$tmp/data" -o "-p 54329 -k $tmp -c listen_addresses=''" \
        -l "$tmp/log" -w -t 60 start >/dev/null || die "the server did not start: $(tail -n5 "$tmp/log")"
    log "a throwaway cluster starts and stops"
fi
