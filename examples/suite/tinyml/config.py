"""Training configuration: a JSON file, overridable from ``TINYML_*`` environment variables."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

ENV_PREFIX = "TINYML_"


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value."""


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 0.05
    epochs: int = 20
    batch_size: int = 16
    seed: int = 0
    optimizer: str = "sgd"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr: must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}")


def _coerce(name: str, raw: Any, kind: type) -> Any:
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: expected {kind.__name__}, got {raw!r}") from exc


def load(path: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None) -> TrainConfig:
    """Defaults, then the JSON file at ``path``, then ``TINYML_<KEY>`` variables."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        raw = json.loads(path.read_text(encoding="utf-8"))
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(unknown)}")
        values.update(raw)
    env = os.environ if environ is None else environ
    for name in fields:
        if ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
    typed = {name: _coerce(name, v, type(fields[name].default)) for name, v in values.items()}
    return TrainConfig(**typed)
