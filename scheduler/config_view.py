"""What the read commands (``schedule``, ``runs``, ``show``, ``status``) need of the config, as
plain frozen data: no pydantic.

A validated :class:`~scheduler.config.Config` is a tree of pydantic models; unpickling one from
a snapshot imports pydantic and builds the model classes (~0.1 s per command). So a snapshot
(:mod:`scheduler.config_cache`) holds this view beside the full config, and a read command
takes the full config only when it needs more (``show``'s commit list, which runs git).
:meth:`ConfigView.of` makes the view from a validated config; nothing else constructs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from scheduler.kernel.errors import UnknownTierError

if TYPE_CHECKING:
    from scheduler.config import Config

__all__ = ["ConfigView", "TierTable", "TierView"]


@dataclass(frozen=True)
class TierView:
    """A tier as the read commands show it (the fields of ``TierConfig`` they print)."""

    schedule: str | None
    enabled: bool
    kind: str
    markers: str | None
    timeout: float
    gpus: int | str


class _Tier(Protocol):
    @property
    def schedule(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def kind(self) -> str: ...
    @property
    def markers(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def gpus(self) -> int | str: ...


class TierTable(Protocol):
    """A :class:`~scheduler.config.Config` or a :class:`ConfigView`: tiers by name, in order,
    and the time zone of their schedules."""

    @property
    def timezone(self) -> str: ...
    @property
    def tiers(self) -> Mapping[str, _Tier]: ...


@dataclass(frozen=True)
class ConfigView:
    """The config's tiers (build tiers included), time zone, and where its state lives."""

    source_file: Path | None
    timezone: str
    state_dir: Path
    db_path: Path
    api_socket: Path
    store_url: str | None
    tiers: Mapping[str, TierView]

    @classmethod
    def of(cls, config: Config) -> ConfigView:
        from scheduler.api.address import socket_path

        return cls(
            source_file=config.source_file,
            timezone=config.timezone,
            state_dir=config.state_dir,
            db_path=config.db_path,
            api_socket=socket_path(config),
            store_url=config.store.url,
            tiers={
                name: TierView(
                    schedule=tier.schedule,
                    enabled=tier.enabled,
                    kind=tier.kind,
                    markers=tier.markers,
                    timeout=tier.timeout,
                    gpus=tier.gpus,
                )
                for name, tier in config.tiers.items()
            },
        )

    def tier(self, name: str) -> TierView:
        """As :meth:`Config.tier <scheduler.config.Config.tier>`: unknown names are exit 2."""
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(name, list(self.tiers)) from None

    @property
    def is_postgres(self) -> bool:
        return self.store_url is not None
