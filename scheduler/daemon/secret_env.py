"""Secrets leave the daemon's environment once they are loaded.

A local-runner test runs as the daemon's user, and a process may read the ``/proc/PID/environ``
of any process of its own user: that file shows the environment the process was *started*
with, whatever ``os.environ`` says later. So after the API token and the alert sinks' secrets
are loaded, :func:`scrub_environment` removes each configured secret variable from
``os.environ`` (``unsetenv``: no child inherits it) and overwrites its bytes in the process's
original environment block (the stack memory ``/proc/PID/environ`` reads), with NUL bytes.

Systemd ``LoadCredential=`` files are the better home for secrets; this covers the variables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from scheduler.config import Config

log = structlog.get_logger("schedctl.secrets")

_ENV_START_FIELD = 50  # proc(5): fields 50 and 51 of /proc/PID/stat, 1-based


def secret_env_names(config: Config) -> set[str]:
    """Every environment variable the config names as holding a secret."""
    names = {config.daemon.api.token_env}
    alerts = config.alerts
    for hook in alerts.webhooks:
        names.update(n for n in (hook.url_env, hook.secret_env) if n)
    names.update(sink.url_env for sink in alerts.slack)
    names.update(sink.token_env for sink in alerts.github)
    if config.store.is_postgres:
        names.add(config.store.password_env)
    return names


def scrub_environment(names: Iterable[str], proc_self: Path = Path("/proc/self")) -> list[str]:
    """Remove ``names`` from this process's environment, old and new; returns those removed."""
    removed = sorted(name for name in names if name in os.environ)
    for name in removed:
        del os.environ[name]
    if removed:
        try:
            _wipe_initial_block({n.encode() for n in removed}, proc_self)
        except (OSError, ValueError, IndexError) as exc:
            log.warning("secret_env_not_wiped", names=removed, error=str(exc))
    return removed


def _wipe_initial_block(names: set[bytes], proc_self: Path) -> None:
    import ctypes  # only when a secret was in the environment

    # The comm field may hold spaces and parentheses: split after its closing parenthesis.
    stat = (proc_self / "stat").read_bytes()
    fields = stat[stat.rindex(b")") + 2 :].split()
    start, end = (int(fields[_ENV_START_FIELD - 3 + i]) for i in (0, 1))
    if not 0 < start < end:
        raise ValueError("no environment block")
    block = ctypes.string_at(start, end - start)
    offset = 0
    for entry in block.split(b"\0"):
        name = entry.partition(b"=")[0]
        if name in names and b"=" in entry:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
