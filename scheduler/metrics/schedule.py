"""Next fire time and period of each scheduled tier, at scrape time.

The next fire time comes from the running scheduler when one is attached (it knows about paused
or removed jobs) and from the tier's cron expression otherwise. The period is the gap between the
tier's next two slots; rules compare ``time() - last run`` with it to find tiers that stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from scheduler.config import Config
from scheduler.daemon.cron import next_fire_times, parse_cron
from scheduler.kernel.clock import utcnow

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape
    from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["NextFireSource", "ScheduleCollector"]

log = structlog.get_logger("schedctl.metrics")

NextFireSource = Callable[[], Mapping[str, datetime | None]]
"""Like :meth:`scheduler.daemon.scheduler.Daemon.next_fire_times`: tier -> next fire or ``None``."""


class ScheduleCollector:
    """``schedctl_tier_next_fire_timestamp_seconds`` and ``schedctl_tier_period_seconds``."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or utcnow
        self._triggers: dict[str, Any] = {
            name: parse_cron(tier.schedule, config.timezone)
            for name, tier in config.tiers.items()
            if tier.schedule and tier.enabled
        }
        self._source: NextFireSource | None = None
        self._upcoming: dict[str, list[datetime]] = {}

    def attach(self, source: NextFireSource | None) -> None:
        """Read next fire times from the live scheduler (``None`` goes back to cron)."""
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        next_fire, period = self._families()
        now = self._clock()
        live = self._live()
        for name, trigger in sorted(self._triggers.items()):
            upcoming = self._next_two(name, trigger, now)
            if live is not None:
                nxt: datetime | None = live.get(name)
            else:
                nxt = upcoming[0] if upcoming else None
            if nxt is not None:
                next_fire.add_metric([name], nxt.timestamp())
            if len(upcoming) == 2:
                period.add_metric([name], (upcoming[1] - upcoming[0]).total_seconds())
        return [next_fire, period]

    def _next_two(self, name: str, trigger: Any, now: datetime) -> list[datetime]:
        """The tier's next two slots, recomputed only once the first one has passed."""
        upcoming = self._upcoming.get(name)
        if not upcoming or upcoming[0] <= now:
            upcoming = next_fire_times(trigger, now, 2)
            self._upcoming[name] = upcoming
        return upcoming

    def _live(self) -> Mapping[str, datetime | None] | None:
        if self._source is None:
            return None
        try:
            return self._source()
        except Exception as exc:  # a scheduler mid-shutdown must not fail the scrape
            log.warning("metrics_next_fire_unavailable", error=repr(exc))
            return None

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        return (
            GaugeMetricFamily(
                "schedctl_tier_next_fire_timestamp_seconds",
                "When the scheduler fires the tier next (absent while the tier is paused).",
                labels=["tier"],
            ),
            GaugeMetricFamily(
                "schedctl_tier_period_seconds",
                "Gap between the tier's next two cron slots.",
                labels=["tier"],
            ),
        )
