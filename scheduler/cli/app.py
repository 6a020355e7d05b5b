"""What every command needs: the config (loaded lazily), the store, the assembled dispatcher."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.kernel.errors import ConfigError

if TYPE_CHECKING:  # imported when a command first asks for them: start-up stays light
    from scheduler.config import Config
    from scheduler.config_cache import Snapshot
    from scheduler.config_view import ConfigView
    from scheduler.run.protocols import RunStore
    from scheduler.store.engine import Store
    from scheduler.store.reader import RunReader

CONFIG_ENV = "SCHEDCTL_CONFIG"


def find_config(explicit: str | None) -> Path:
    """``--config``, else ``./config.yaml``, else ``$SCHEDCTL_CONFIG``."""
    if explicit:
        return Path(explicit)
    local = Path("config.yaml")
    if local.exists():
        return local
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    raise ConfigError(
        "config.yaml",
        [f"<file>: no ./config.yaml and ${CONFIG_ENV} is not set; pass --config PATH"],
    )


@dataclass
class AppContext:
    config_path: str | None = None
    force_new_db: bool = False
    _config: Config | None = field(default=None, repr=False)
    _snapshot: Snapshot | None = field(default=None, repr=False)
    _view: ConfigView | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _reader: RunReader | None = field(default=None, repr=False)
    _run_store: RunStore | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from scheduler.config import load_config

            self._config = load_config(find_config(self.config_path))
        return self._config

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot of an earlier full validation of the same input
        (:mod:`scheduler.config_cache`), or a full validation that writes one."""
        if self._snapshot is None:
            from scheduler.config_cache import load_snapshot

            self._snapshot = load_snapshot(find_config(self.config_path))
        return self._snapshot

    @property
    def read_config(self) -> Config:
        """The full config for commands that only read: :attr:`config` when it is loaded, else
        the snapshot's (:meth:`Snapshot.config <scheduler.config_cache.Snapshot.config>`)."""
        if self._config is not None:
            return self._config
        return self.snapshot.config()

    @property
    def read_view(self) -> ConfigView:
        """What ``schedule``, ``runs``, ``show`` and ``status`` need of the config, without
        pydantic (:class:`~scheduler.config_view.ConfigView`): the snapshot's view."""
        if self._config is not None:
            from scheduler.config_view import ConfigView

            return ConfigView.of(self._config)
        if self._snapshot is not None:
            return self._snapshot.view
        if self._view is None:
            import click

            from scheduler.config_cache import load_view  # right after a change: no pydantic

            # The background validation starts once the command is done (its context closes).
            ctx = click.get_current_context(silent=True)
            defer = ctx.call_on_close if ctx is not None else None
            self._view = load_view(find_config(self.config_path), defer=defer)
        return self._view

    @property
    def run_config(self) -> Config:
        """``schedctl run``'s config: the snapshot of an earlier full validation of the same
        input (:attr:`read_config`) when the host still agrees with it
        (:func:`scheduler.config_cache.host_agrees`), else a full validation. From then on it
        is :attr:`config` too, for everything the command opens."""
        if self._config is None:
            from scheduler.config_cache import host_agrees

            snapshot = self.read_config
            if self._config is None and host_agrees(snapshot):
                self._config = snapshot
        return self.config

    @property
    def store(self) -> Store:
        if self._store is None:
            from scheduler.run.rundirs import prepare_state_dir
            from scheduler.store.connect import open_store

            config = self.config
            if config.store.is_postgres:
                # Connect first: a wrong password or host writes nothing anywhere. Run ids come
                # from the shared database and never restart, so runs/ needs no check.
                store = open_store(config)
                prepare_state_dir(config.state_dir, None)
                self._store = store
            else:
                prepare_state_dir(config.state_dir, config.db_path, force=self.force_new_db)
                self._store = open_store(config)
        return self._store

    @property
    def reader(self) -> RunReader:
        """The store for commands that only read (``runs``, ``show``, ``status``).

        A SQLite store with the current schema is read through the standard ``sqlite3``
        module (:mod:`scheduler.store.reader`: no SQLAlchemy import, a third of a second less
        per command); anything else (PostgreSQL, no database yet, another schema version) opens
        the full :attr:`store`, which creates, migrates or refuses it as before.
        """
        if self._reader is None:
            reader: RunReader | None = None
            config = self.read_view
            if self._store is None and not config.is_postgres:
                from scheduler.run.rundirs import prepare_state_dir
                from scheduler.store.reader import open_reader

                if config.db_path.is_file():
                    prepare_state_dir(config.state_dir, config.db_path, force=self.force_new_db)
                    reader = open_reader(config.db_path)
            self._reader = reader if reader is not None else self.store
        return self._reader

    @property
    def run_store(self) -> RunStore:
        """The store ``schedctl run`` records its run in.

        A SQLite store with the current schema is written through the standard ``sqlite3``
        module (:mod:`scheduler.store.writer`: no SQLAlchemy import, a third of a second less
        per run); anything else (PostgreSQL, no database yet, another schema version) opens the
        full :attr:`store`, which creates, migrates or refuses it as before.
        """
        if self._run_store is None:
            found: RunStore | None = None
            config = self.config
            if self._store is None and not config.store.is_postgres:
                from scheduler.run.rundirs import prepare_state_dir
                from scheduler.store.writer import open_writer

                if config.db_path.is_file():
                    prepare_state_dir(config.state_dir, config.db_path, force=self.force_new_db)
                    found = open_writer(config.db_path)
            self._run_store = found if found is not None else self.store
        return self._run_store
