"""Validated configs kept for the commands that only read (``runs``, ``show``, ``status``,
``schedule``).

Validating ``config.yaml`` costs such a command more than everything else it does: pydantic's
schemas, then the validators (cron expressions through APScheduler). So these commands take the
model that an earlier full validation made of the same input -- the file's path and bytes, the
values of the environment variables it names (``${VAR}``), this schedctl's version and the source
of its config modules, the Python and pydantic versions. Any difference, and the file is
validated in full again (errors exactly as always: key and file) and the snapshot replaced.

The snapshot is a pickle in ``$SCHEDCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/schedctl``, else
``~/.cache/schedctl``: one per config path, the directory 0700 and the file 0600, and it is only
read when this user owns both and nobody else can write them (a pickle runs code when loaded).
What a full validation checks on the host itself (that ``project.path`` is a directory, that
``local.user`` is an account) is not checked again on this path for the read-only commands.
``schedctl run`` acts on them: it takes a snapshot only when :func:`host_agrees` with it (the
same host checks, run again), else it validates in full and gets the usual error. ``daemon`` and
``config check`` always validate in full.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import scheduler

if TYPE_CHECKING:
    from scheduler.config import Config

__all__ = ["CACHE_ENV", "cache_dir", "host_agrees", "load_config_cached"]

CACHE_ENV = "SCHEDCTL_CACHE_DIR"
_ENV_NAME_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_SOURCES = ("config.py", "config_validate.py", "yaml_safe.py")
KEEP_UNUSED_S = 30 * 86400
"""Snapshots written longer ago are removed when another one is written (a config moved or
deleted leaves its snapshot behind; one still in use is simply written again)."""


def cache_dir(env: Mapping[str, str]) -> Path | None:
    """Where snapshots live; ``None`` when there is no home to put them in."""
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "schedctl"
    home = env.get("HOME")
    return Path(home) / ".cache" / "schedctl" if home else None


def load_config_cached(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """:func:`scheduler.config.load_config`, from a snapshot when one matches (see above)."""
    env = os.environ if env is None else env
    where = cache_dir(env)
    try:
        text = path.read_bytes()
        absolute = path.resolve()
    except OSError:
        where = None  # load_config reports it, as always
    if where is None:
        return _load(path, env)
    key = _key(absolute, text, env)
    snapshot = where / f"config-{hashlib.sha256(str(absolute).encode()).hexdigest()[:24]}.pickle"
    found = _read(snapshot, key)
    if found is not None:
        return found
    config = _load(path, env)
    _write(snapshot, key, config)
    return config


def _load(path: Path, env: Mapping[str, str]) -> Config:
    from scheduler.config import load_config

    return load_config(path, env)


def _key(absolute: Path, text: bytes, env: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for part in (scheduler.__version__, sys.version, str(absolute)):
        digest.update(part.encode() + b"\0")
    digest.update(text + b"\0")
    for name in sorted(set(_ENV_NAME_RE.findall(text.decode("utf-8", "replace")))):
        value = env.get(name)
        digest.update(f"{name}={'' if value is None else '=' + value}".encode() + b"\0")
    package = Path(scheduler.__file__).parent
    for name in _SOURCES:
        digest.update((package / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(snapshot: Path, key: str) -> Config | None:
    try:
        if not (_private(snapshot.parent.stat()) and _private(snapshot.stat())):
            return None
        payload: Any = pickle.loads(snapshot.read_bytes())  # noqa: S301 -- our own file, see above
        from pydantic import VERSION

        if payload.get("key") != key or payload.get("pydantic") != VERSION:
            return None
        config: Config = payload["config"]
    except Exception:
        return None
    return config


def _write(snapshot: Path, key: str, config: Config) -> None:
    """Best effort: a cache that cannot be written only costs the next command the time."""
    from pydantic import VERSION

    tmp: Path | None = None
    try:
        snapshot.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(snapshot.parent.stat()):
            return
        data = pickle.dumps({"key": key, "pydantic": VERSION, "config": config})
        tmp = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        os.replace(tmp, snapshot)
    except (OSError, pickle.PicklingError, TypeError):
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        return
    _prune(snapshot.parent)


def _prune(where: Path) -> None:
    """Remove snapshots written more than :data:`KEEP_UNUSED_S` ago."""
    import time

    cutoff = time.time() - KEEP_UNUSED_S
    try:
        for old in where.glob("config-*.pickle"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
    except OSError:
        return


def host_agrees(config: Config) -> bool:
    """Whether this host still passes what a full validation of ``config`` checked on it:
    ``project.path`` is a directory, ``local.user`` an unprivileged account, the container
    uid and gid no host account or group. ``False``: validate in full (its error names the key).
    """
    from scheduler import config_validate as check

    path = config.project.path
    if path is not None and not path.is_dir():
        return False
    try:
        if config.local.user is not None:
            check.local_user(config.local.user)
        check.foreign_uid(config.docker.uid)
        check.foreign_gid(config.docker.gid)
    except ValueError:
        return False
    return True
