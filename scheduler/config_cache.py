"""Validated configs kept for the commands that only read (``runs``, ``show``, ``status``,
``schedule``).

Validating ``config.yaml`` costs such a command more than everything else it does: pydantic's
schemas, then the validators (cron expressions through APScheduler). So these commands take what
an earlier full validation made of the same input -- the file's path and bytes, the values of
the environment variables it names (``${VAR}``), this schedctl's version and the source of its
config modules, the Python and pydantic versions. Any difference, and the file is validated in
full again (errors exactly as always: key and file) and the snapshot replaced.

A snapshot holds two things: a :class:`~scheduler.config_view.ConfigView` (plain frozen data:
reading it imports no pydantic) and the full :class:`~scheduler.config.Config`, pickled apart so
that it is unpickled -- pydantic imported -- only for a command that asks for it
(:meth:`Snapshot.config`, :func:`load_config_cached`).

The snapshot is a pickle in ``$SCHEDCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/schedctl``, else
``~/.cache/schedctl``: one per config path, the directory 0700 and the file 0600, and it is only
read when this user owns both and nobody else can write them (a pickle runs code when loaded).
What a full validation checks on the host itself (that ``project.path`` is a directory, that
``local.user`` is an account) is not checked again on this path for the read-only commands.
``schedctl run`` acts on them: it takes a snapshot only when :func:`host_agrees` with it (the
same host checks, run again), else it validates in full and gets the usual error. ``daemon`` and
``config check`` always validate in full.

Right after a change, the commands that only need the view (``runs``, ``status``, ``schedule``)
ask :func:`load_view`: when the file is in plain form, the view comes straight from the YAML
(:func:`scheduler.config_view.view_from_yaml`, no pydantic) and the full validation runs in a
background process (``python -m scheduler.config_cache FILE``) that writes the snapshot for the
next command. When that validation fails it leaves a marker with the key instead, and every
command on that input validates in full in the foreground: the error (key and file, exit 2)
from the next command on.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import scheduler

if TYPE_CHECKING:
    from scheduler.config import Config
    from scheduler.config_view import ConfigView

__all__ = [
    "CACHE_ENV",
    "Snapshot",
    "cache_dir",
    "host_agrees",
    "load_config_cached",
    "load_snapshot",
    "load_view",
    "refresh",
]

CACHE_ENV = "SCHEDCTL_CACHE_DIR"
_ENV_NAME_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_SOURCES = ("config.py", "config_validate.py", "config_view.py", "yaml_safe.py")
FORMAT = 2
"""The snapshot's layout: ``{format, key, view, config}``, ``config`` a pickle of its own."""
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


class Snapshot:
    """A config as an earlier full validation left it: :attr:`view` at once (plain data, no
    pydantic), :meth:`config` -- the full :class:`~scheduler.config.Config` -- when asked."""

    def __init__(
        self,
        view: ConfigView,
        config: Config | None = None,
        *,
        blob: bytes | None = None,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        self.view = view
        self._config = config
        self._blob = blob
        self._reload = reload

    def config(self) -> Config:
        """The full config: unpickled from the snapshot (importing pydantic), else validated
        again from the file (a snapshot whose config no longer loads is replaced)."""
        if self._config is None:
            try:
                from scheduler.config import Config

                found = pickle.loads(self._blob or b"")  # noqa: S301 -- see the module docstring
                if not isinstance(found, Config):
                    raise TypeError(type(found).__name__)
                self._config = found
            except Exception:
                assert self._reload is not None
                self._config = self._reload()
        return self._config


def load_snapshot(path: Path, env: Mapping[str, str] | None = None) -> Snapshot:
    """The snapshot of ``path`` when one matches (see above), else a full validation that
    writes one. Errors are :func:`scheduler.config.load_config`'s, raised by this call."""
    env = os.environ if env is None else env
    slot = _slot(path, env)
    if slot is not None:
        payload = _read(*slot)
        if payload is not None:
            return Snapshot(
                payload["view"],
                blob=payload["config"],
                reload=lambda: _validate(path, env, slot),
            )
    config = _validate(path, env, slot)
    return Snapshot(_view_of(config), config)


def load_view(
    path: Path,
    env: Mapping[str, str] | None = None,
    *,
    defer: Callable[[Callable[[], object]], object] | None = None,
) -> ConfigView:
    """The view of ``path``: the snapshot's when one matches; else, for a file in plain form,
    straight from the YAML with the full validation and the snapshot left to a background
    process; else (or when that validation failed for this input) :func:`load_snapshot`'s.

    ``defer``: hands it the start of that process to call later (a command starts it once its
    output is written, so that the two do not share the CPU meanwhile); default: at once."""
    env = os.environ if env is None else env
    slot = _slot(path, env)
    if slot is not None and _rejected(*slot) is False:
        payload = _read(*slot)
        if payload is not None:
            view: ConfigView = payload["view"]
            return view
        from scheduler.config_view import view_from_yaml

        try:
            light = view_from_yaml(path, path.read_text())
        except (OSError, UnicodeDecodeError):
            light = None
        if light is not None:
            if defer is not None:
                absolute = path.resolve()
                defer(lambda: _in_background(absolute, env))
                return light
            if _in_background(path.resolve(), env):
                return light
    return load_snapshot(path, env).view


def refresh(path: Path, env: Mapping[str, str] | None = None) -> int:
    """The background step of :func:`load_view`: validate ``path`` in full and write its
    snapshot (0), or mark its input rejected (1) so that commands validate in the foreground."""
    from scheduler.kernel.errors import ConfigError

    env = os.environ if env is None else env
    slot = _slot(path, env)
    if slot is None:
        return 0
    try:
        _validate(path, env, slot)
    except ConfigError:
        _reject(*slot)
        return 1
    return 0


_REFRESH = (
    "import os, sys; os.nice(10); del sys.path[0]; from pathlib import Path; "
    "from scheduler.config_cache import refresh; sys.exit(refresh(Path(sys.argv[1])))"
)


def _in_background(path: Path, env: Mapping[str, str]) -> bool:
    """Start :func:`refresh` of ``path`` in a new interpreter (as ``python -m
    scheduler.config_cache PATH`` would), detached, in this environment with ``env`` over it;
    ``False`` if it cannot. The current directory is not on its ``sys.path`` (a ``scheduler/``
    there is not imported: ``-c`` puts it first, :data:`_REFRESH` takes it off). It runs at a
    lower priority (nice 10): the user's next command comes first."""
    import subprocess

    try:
        subprocess.Popen(
            [sys.executable, "-c", _REFRESH, str(path)],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **env},
        )
    except OSError:
        return False
    return True


def _rejected(snapshot: Path, key: str) -> bool:
    """Whether a background validation rejected this very input (its marker carries ``key``)."""
    marker = snapshot.with_name(snapshot.name + ".rejected")
    try:
        return _private(marker.stat()) and marker.read_text() == key
    except OSError:
        return False


def _reject(snapshot: Path, key: str) -> None:
    marker = snapshot.with_name(snapshot.name + ".rejected")
    try:
        snapshot.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(snapshot.parent.stat()):
            return
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(key)
        os.replace(tmp, marker)
    except OSError:
        return


def load_config_cached(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """:func:`scheduler.config.load_config`, from a snapshot when one matches (see above)."""
    return load_snapshot(path, env).config()


def _slot(path: Path, env: Mapping[str, str]) -> tuple[Path, str] | None:
    """Where ``path``'s snapshot lives and the key it must carry; ``None``: no snapshot."""
    where = cache_dir(env)
    try:
        text = path.read_bytes()
        absolute = path.resolve()
    except OSError:
        return None  # load_config reports it, as always
    if where is None:
        return None
    name = f"config-{hashlib.sha256(str(absolute).encode()).hexdigest()[:24]}.pickle"
    return where / name, _key(absolute, text, env)


def _validate(path: Path, env: Mapping[str, str], slot: tuple[Path, str] | None) -> Config:
    from scheduler.config import load_config

    config = load_config(path, env)
    if slot is not None:
        _write(*slot, config)
    return config


def _view_of(config: Config) -> ConfigView:
    from scheduler.config_view import ConfigView

    return ConfigView.of(config)


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
    digest.update(_pydantic_version() + b"\0")
    return digest.hexdigest()


def _pydantic_version() -> bytes:
    """pydantic's ``version.py``, read without importing pydantic (the pickled config's
    classes must be the ones that validated it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("pydantic")
        if spec is None or spec.origin is None:
            return b"-"
        return (Path(spec.origin).parent / "version.py").read_bytes()
    except (ImportError, OSError, ValueError):
        return b"-"


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(snapshot: Path, key: str) -> dict[str, Any] | None:
    """The snapshot's payload when it is private and carries ``key``; else ``None``."""
    from scheduler.config_view import ConfigView

    try:
        if not (_private(snapshot.parent.stat()) and _private(snapshot.stat())):
            return None
        payload: Any = pickle.loads(snapshot.read_bytes())  # noqa: S301 -- our own file, see above
        if (
            payload.get("format") != FORMAT
            or payload.get("key") != key
            or not isinstance(payload.get("view"), ConfigView)
            or not isinstance(payload.get("config"), bytes)
        ):
            return None
    except Exception:
        return None
    found: dict[str, Any] = payload
    return found


def _write(snapshot: Path, key: str, config: Config) -> None:
    """Best effort: a cache that cannot be written only costs the next command the time."""
    tmp: Path | None = None
    try:
        snapshot.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(snapshot.parent.stat()):
            return
        data = pickle.dumps(
            {
                "format": FORMAT,
                "key": key,
                "view": _view_of(config),
                "config": pickle.dumps(config),  # unpickled only when asked: it imports pydantic
            }
        )
        tmp = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        os.replace(tmp, snapshot)
        snapshot.with_name(snapshot.name + ".rejected").unlink(missing_ok=True)
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
        for old in [*where.glob("config-*.pickle"), *where.glob("config-*.pickle.rejected")]:
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


if __name__ == "__main__":
    sys.exit(refresh(Path(sys.argv[1])))
