"""Opening the configured store: the SQLite file in ``state_dir``, or ``store.url`` (PostgreSQL).

The PostgreSQL password is looked up like the other secrets and handed to the engine, never put
into a URL that could be printed: ``$<store.password_env>`` (default ``SCHEDCTL_STORE_PASSWORD``),
then ``store.password_file`` (relative to ``$CREDENTIALS_DIRECTORY`` when set), then
``$CREDENTIALS_DIRECTORY/<password_env>`` (systemd ``LoadCredential=``). No password at all is
fine (``trust`` or peer authentication, a ``~/.pgpass``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from scheduler.config import Config, StoreConfig
from scheduler.kernel.errors import StoreConnectError
from scheduler.store.engine import Store

__all__ = ["open_store", "open_url", "store_password"]

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def store_password(cfg: StoreConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The configured database password, or ``None`` when none is configured."""
    env = os.environ if env is None else env
    if env.get(cfg.password_env):
        return env[cfg.password_env]
    creds = env.get(CREDENTIALS_ENV)
    path: Path | None = None
    if cfg.password_file:
        path = Path(cfg.password_file).expanduser()
        if not path.is_absolute() and creds:
            path = Path(creds) / path
    elif creds and (Path(creds) / cfg.password_env).is_file():
        path = Path(creds) / cfg.password_env
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise StoreConnectError(
            f"store.password_file: cannot read {path}: {exc.strerror or exc}"
        ) from None
    if not text:
        raise StoreConnectError(f"store.password_file: {path} is empty")
    return text


def open_store(config: Config, *, migrate: bool | None = None) -> Store:
    """The store ``config`` names (a SQLite file is created and migrated on open; a PostgreSQL
    database is checked, and migrated only with ``migrate=True``)."""
    cfg = config.store
    if cfg.url is None:
        return Store(config.db_path, migrate=migrate)
    return Store(
        cfg.url,
        password=store_password(cfg),
        migrate=migrate,
        connect_timeout_s=cfg.connect_timeout,
    )


def open_url(url: str, cfg: StoreConfig, *, migrate: bool | None = None) -> Store:
    """A store by URL (``sqlite:///PATH`` or ``postgresql://...``) with the configured password
    lookup for PostgreSQL (``schedctl store copy``)."""
    if url.startswith("sqlite:///"):
        return Store(Path(url.removeprefix("sqlite:///")), migrate=migrate)
    return Store(url, password=store_password(cfg), migrate=migrate,
                 connect_timeout_s=cfg.connect_timeout)  # fmt: skip
