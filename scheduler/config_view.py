"""What the read commands (``schedule``, ``runs``, ``show``, ``status``) need of the config, as
plain frozen data: no pydantic.

A validated :class:`~scheduler.config.Config` is a tree of pydantic models; unpickling one from
a snapshot imports pydantic and builds the model classes (~0.1 s per command). So a snapshot
(:mod:`scheduler.config_cache`) holds this view beside the full config, and a read command
takes the full config only when it needs more (``show``'s commit list, which runs git).
:meth:`ConfigView.of` makes the view from a validated config.

Right after the config file changed there is no snapshot to read, and validating it in full
(pydantic's import and schemas) cost ``runs`` ~0.27 s more. :func:`view_from_yaml` makes the same
view straight from the YAML for a file in plain form (no ``${VAR}``, no ``images:``, no
``store:``, no ``daemon.api.socket``), checking what the view holds as the full validation does
(time zone, durations, cron expressions, marker expressions, ``state_dir``); anything else, or
anything it doubts, answers ``None`` and the caller validates in full, which reports errors as
always. The full validation and the snapshot then follow in the background
(:func:`scheduler.config_cache.load_view`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scheduler.kernel.errors import UnknownTierError

if TYPE_CHECKING:
    from scheduler.config import Config

__all__ = ["ConfigView", "TierTable", "TierView", "view_from_yaml"]


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


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_KINDS = ("pytest", "torchrun", "review")  # 'build' tiers come only from images:
_DEFAULT_TIMEOUT_S = 1800.0
_DEFAULT_STATE_DIR = ".schedctl"


class _Doubt(Exception):
    """Something :func:`view_from_yaml` leaves to the full validation."""


def view_from_yaml(path: Path, text: str) -> ConfigView | None:
    """The view of the config file ``path`` (its contents ``text``) without pydantic, or
    ``None`` when the file is not in the plain form this reads (see the module docstring) or
    anything in it would fail the full validation: the caller then validates in full. Where it
    answers, the view equals ``ConfigView.of(load_config(path))`` (tests hold it to that)."""
    if "${" in text:
        return None  # environment interpolation: the full validation's
    try:
        return _view(path, text)
    except (_Doubt, ValueError, TypeError, KeyError, OSError, ImportError):
        return None
    except Exception:  # a YAML error, or anything unforeseen: the full validation reports it
        return None


def _view(path: Path, text: str) -> ConfigView:
    from scheduler import config_validate as check
    from scheduler import yaml_safe

    data = yaml_safe.load(text)
    if not isinstance(data, dict) or any(k in data for k in ("images", "store")):
        raise _Doubt
    daemon = data.get("daemon")
    if daemon is not None:
        api = daemon.get("api") if isinstance(daemon, dict) else None
        if not isinstance(daemon, dict) or (api is not None and not isinstance(api, dict)):
            raise _Doubt
        if api and api.get("socket") is not None:
            raise _Doubt
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise _Doubt
    from zoneinfo import ZoneInfo

    ZoneInfo(timezone)  # the full validation's check: a known zone
    state_text = data.get("state_dir", _DEFAULT_STATE_DIR)
    if not isinstance(state_text, str) or not state_text:
        raise _Doubt
    state_dir = Path(state_text)
    if not state_dir.is_absolute():
        state_dir = (path.resolve().parent / state_dir).resolve()
    check.check_state_dir(state_dir)
    tiers_in = data.get("tiers")
    if not isinstance(tiers_in, dict) or not tiers_in:
        raise _Doubt
    tiers: dict[str, TierView] = {}
    for name, tier in tiers_in.items():
        if not isinstance(name, str) or not isinstance(tier, dict):
            raise _Doubt
        tiers[name] = _tier(tier, check)
    return ConfigView(
        source_file=path,
        timezone=timezone,
        state_dir=state_dir,
        db_path=state_dir / "schedctl.db",
        api_socket=state_dir / "api.sock",
        store_url=None,
        tiers=tiers,
    )


def _tier(tier: dict[str, Any], check: Any) -> TierView:
    schedule = tier.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, str):
            raise _Doubt
        from scheduler.daemon.crontab import UTC, CrontabSchedule

        CrontabSchedule(schedule, UTC)
        check.check_cron_fires(schedule)
    enabled = tier.get("enabled", True)
    kind = tier.get("kind", "pytest")
    markers = tier.get("markers")
    gpus = tier.get("gpus", 0)
    if not isinstance(enabled, bool) or kind not in _KINDS:
        raise _Doubt
    if markers is not None:
        if not isinstance(markers, str):
            raise _Doubt
        markers = check.check_marker_expression(markers)
    if gpus != "all" and (type(gpus) is not int or not 0 <= gpus <= 1024):
        raise _Doubt
    return TierView(
        schedule=schedule,
        enabled=enabled,
        kind=kind,
        markers=markers,
        timeout=_timeout(tier.get("timeout", _DEFAULT_TIMEOUT_S), check),
        gpus=gpus,
    )


def _timeout(value: object, check: Any) -> float:
    """As ``scheduler.config.parse_timeout``: seconds from ``90``, ``"30m"``, at most a week."""
    if isinstance(value, bool):
        raise _Doubt
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise _Doubt
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise _Doubt
    if seconds <= 0:
        raise _Doubt
    seconds = check.check_duration(seconds, high=check.MAX_DURATION_S, original=value)
    return float(check.check_duration(seconds, high=check.WEEK_S, original=value))
