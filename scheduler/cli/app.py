"""What every command needs: the config (loaded lazily), the store, the assembled dispatcher."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.config import Config, load_config
from scheduler.kernel.errors import ConfigError
from scheduler.store.engine import Store

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
    _config: Config | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(find_config(self.config_path))
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.db_path)
        return self._store
