"""Gauges read from the store at scrape time, so a restart never forgets them.

Last run, last success, the failure streak, runs in progress, GPU leases and the alert outbox all
live in SQLite; this collector asks for them at scrape time (a few indexed queries per tier). A
scrape that finds the store unchanged since the last one (:meth:`Store.data_version`, bumped by
every commit of any process) hands back the same family objects, which the renderer then does
not render again; the only clock-dependent answer (a quarantine expiring) bounds that reuse. A
store that cannot be read yields ``schedctl_store_up 0`` and no other sample from here, never a
failed scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import StoreError
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import StatsReader, Store

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape
    from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["StoreStateCollector", "TierHistory", "TierSpec", "scaling_efficiency"]

log = structlog.get_logger("schedctl.metrics")

_VERDICTS = [o.value for o in Outcome if o is Outcome.PASSED or o.is_test_failure]
RECENT_WINDOW = 16
"""Rows per tier read on every scrape; older history is queried only when these lack the answer."""


@dataclass(frozen=True)
class TierSpec:
    """What the collector needs to know about a configured tier."""

    name: str
    kind: str = "pytest"


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _families() -> dict[str, GaugeMetricFamily]:
    specs: list[tuple[str, str, Sequence[str]]] = [
        ("schedctl_store_up", "1 when the last scrape could read the state store, else 0.", ()),
        (
            "schedctl_tier_last_run_timestamp_seconds",
            "Finish time of the tier's last run with a test verdict (infra outcomes excluded).",
            ("tier",),
        ),
        (
            "schedctl_tier_last_success_timestamp_seconds",
            "Finish time of the tier's last passed run.",
            ("tier",),
        ),
        (
            "schedctl_tier_last_outcome",
            "1 for the outcome of the tier's last finished run (any outcome, infra included).",
            ("tier", "outcome"),
        ),
        (
            "schedctl_tier_consecutive_failures",
            "Test-failure outcomes since the tier's last pass; infra outcomes do not count.",
            ("tier",),
        ),
        (
            "schedctl_tier_flaky_tests",
            "Tests that failed, then passed on rerun, in the tier's last run with a test verdict.",
            ("tier",),
        ),
        (
            "schedctl_quarantined_tests",
            "Quarantined tests; state active or expired (expired ones alert their owner).",
            ("state",),
        ),
        ("schedctl_runs_in_progress", "Runs of the tier now running.", ("tier",)),
        ("schedctl_queue_depth", "Runs recorded but not started yet (waiting for GPUs).", ()),
        ("schedctl_gpu_leased", "1 per GPU leased to a run of the tier.", ("gpu", "uuid", "tier")),
        ("schedctl_alert_outbox_pending", "Alerts waiting in the outbox for delivery.", ()),
        (
            "schedctl_alert_outbox_oldest_pending_timestamp_seconds",
            "Creation time of the oldest alert still waiting for delivery (absent when none).",
            (),
        ),
        (
            "schedctl_smoketest_scaling_efficiency",
            "Scaling efficiency per world size in the tier's last torchrun comparison.",
            ("tier", "nproc"),
        ),
    ]
    return {name: _gauge(name, doc, labels) for name, doc, labels in specs}


class StoreStateCollector:
    """Per-scrape gauges from the ``runs``, ``gpu_leases`` and ``alerts_outbox`` tables."""

    def __init__(
        self,
        store: Store,
        tiers: Sequence[TierSpec],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tiers = tuple(tiers)
        self._cache: dict[str, tuple[Hashable, TierHistory]] = {}
        # (store version, valid until, families) of the last good scrape
        self._last: tuple[int, datetime | None, list[Metric]] | None = None

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        version = self._store.data_version()  # before the reads: a commit during them shows
        now = self._clock()
        last = self._last
        unchanged = last is not None and version is not None and last[0] == version
        if last is not None and unchanged and (last[1] is None or now < last[1]):
            return last[2]
        families = _families()
        try:
            until = self._fill(families, now)
        except StoreError as exc:
            log.warning("metrics_store_unreadable", error=str(exc))
            self._last = None
            families = {"schedctl_store_up": _families()["schedctl_store_up"]}
            families["schedctl_store_up"].add_metric([], 0.0)
            return list(families.values())
        families["schedctl_store_up"].add_metric([], 1.0)
        out: list[Metric] = list(families.values())
        self._last = (version, until, out) if version is not None else None
        return out

    def _fill(self, f: Mapping[str, GaugeMetricFamily], now: datetime) -> datetime | None:
        """Fill the families; returns when a clock-dependent answer next changes (``None``:
        never, while the store stays unchanged)."""
        with self._store.stats_reader() as reader:
            active = reader.active_counts()
            newest = reader.newest_ids([t.name for t in self._tiers])
            keys: dict[str, Hashable] = {}
            for tier in self._tiers:
                running = active.get((tier.name, Outcome.RUNNING.value), 0)
                queued = active.get((tier.name, Outcome.QUEUED.value), 0)
                keys[tier.name] = (newest.get(tier.name), running + queued)
            stale = [name for name, key in keys.items() if self._cached_key(name) != key]
            recents = reader.recent_of(stale, RECENT_WINDOW) if stale else {}
            for tier in self._tiers:
                history = self._history(reader, tier, keys[tier.name], recents.get(tier.name))
                self._tier(tier, history, f)
                running = active.get((tier.name, Outcome.RUNNING.value), 0)
                f["schedctl_runs_in_progress"].add_metric([tier.name], float(running))
            queued = sum(n for (_, outcome), n in active.items() if outcome == Outcome.QUEUED)
            f["schedctl_queue_depth"].add_metric([], float(queued))
            for lease in reader.leases():
                labels = [str(lease.gpu_index), lease.gpu_uuid, lease.tier]
                f["schedctl_gpu_leased"].add_metric(labels, 1.0)
            active_q, expired_q = reader.quarantine_counts(now)
            f["schedctl_quarantined_tests"].add_metric(["active"], float(active_q))
            f["schedctl_quarantined_tests"].add_metric(["expired"], float(expired_q))
            pending, oldest = reader.outbox_pending()
            f["schedctl_alert_outbox_pending"].add_metric([], float(pending))
            if oldest is not None:
                f["schedctl_alert_outbox_oldest_pending_timestamp_seconds"].add_metric(
                    [], _timestamp(oldest)
                )
            return reader.next_quarantine_expiry(now) if active_q else None

    def _tier(
        self, tier: TierSpec, history: TierHistory, f: Mapping[str, GaugeMetricFamily]
    ) -> None:
        name = tier.name
        if history.last_verdict is not None:
            f["schedctl_tier_last_run_timestamp_seconds"].add_metric(
                [name], _timestamp(history.last_verdict)
            )
        if history.last_success is not None:
            f["schedctl_tier_last_success_timestamp_seconds"].add_metric(
                [name], _timestamp(history.last_success)
            )
        if history.last_outcome is not None:
            f["schedctl_tier_last_outcome"].add_metric([name, history.last_outcome.value], 1.0)
        f["schedctl_tier_consecutive_failures"].add_metric([name], float(history.streak or 0))
        f["schedctl_tier_flaky_tests"].add_metric([name], float(history.flaky))
        for nproc, value in sorted(history.efficiency.items()):
            f["schedctl_smoketest_scaling_efficiency"].add_metric([name, str(nproc)], value)

    def _cached_key(self, tier: str) -> Hashable:
        cached = self._cache.get(tier)
        return cached[0] if cached is not None else None

    def _history(
        self,
        reader: StatsReader,
        tier: TierSpec,
        key: Hashable,
        recent: tuple[tuple[str, datetime | None], ...] | None,
    ) -> TierHistory:
        """The tier's history, recomputed only when its newest run id or its number of active
        runs changed (``key``); ``recent``: its newest rows, read when the key changed.

        A run's outcome and finish time are written once, when it leaves the active state
        (queued/running), and a tier has at most one active run: a row that becomes final
        lowers the active count, a new row raises the newest id. So an unchanged key means
        unchanged rows, and the window and deeper queries run once per change instead of once
        per scrape.
        """
        cached = self._cache.get(tier.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        if recent is None:
            recent = reader.recent_of([tier.name], RECENT_WINDOW)[tier.name]
        history = TierHistory.from_rows(recent, complete=len(recent) < RECENT_WINDOW)
        if not history.complete:
            name = tier.name
            if history.last_verdict is None:
                history.last_verdict = reader.last_finished_at(name, _VERDICTS)
            if history.last_success is None:
                history.last_success = reader.last_finished_at(name, [Outcome.PASSED.value])
            if history.streak is None:  # no pass in the window: count the long streak
                history.streak = reader.failure_streak(name)
        history.flaky = _count(reader.last_counts(tier.name, _VERDICTS).get("flaky"))
        if tier.kind == "torchrun":
            details = reader.last_details(tier.name, _VERDICTS)
            history.efficiency = scaling_efficiency(details)
        self._cache[tier.name] = (key, history)
        return history


@dataclass
class TierHistory:
    """What the newest rows of one tier say; ``None`` where the window holds no answer.

    :ivar streak: test failures since the last pass, counted like
        :meth:`scheduler.store.Store.consecutive_failures` (infra outcomes neither count nor
        break it); ``None`` when the window ends before a pass and holds more rows.
    """

    complete: bool
    last_outcome: Outcome | None = None
    last_verdict: datetime | None = None
    last_success: datetime | None = None
    streak: int | None = None
    flaky: int = 0
    efficiency: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[Any], complete: bool) -> TierHistory:
        """``rows``: ``(outcome, finished_at)`` newest first."""
        history = cls(complete)
        failures = 0
        for outcome_text, finished_at in rows:
            outcome = Outcome(outcome_text)
            if not outcome.is_final:
                continue
            if history.last_outcome is None:
                history.last_outcome = outcome
            verdict = outcome is Outcome.PASSED or outcome.is_test_failure
            if verdict and history.last_verdict is None:
                history.last_verdict = finished_at
            if outcome is Outcome.PASSED:
                if history.last_success is None:
                    history.last_success = finished_at
                if history.streak is None:
                    history.streak = failures
            elif outcome.is_test_failure and history.streak is None:
                failures += 1
        if history.streak is None and complete:
            history.streak = failures
        return history


def _count(value: Any) -> int:
    """A count from a stored ``counts`` map; anything but a non-negative int reads as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _timestamp(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _aware(value).timestamp()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def scaling_efficiency(details: Any) -> dict[int, float]:
    """``{world_size: efficiency}`` from ``details["comparison"]["table"]``; ``{}`` if absent."""
    if not isinstance(details, Mapping):
        return {}
    comparison = details.get("comparison")
    table = comparison.get("table") if isinstance(comparison, Mapping) else None
    if not isinstance(table, list):
        return {}
    out: dict[int, float] = {}
    for row in table:
        if not isinstance(row, Mapping):
            continue
        size, eff = row.get("world_size"), row.get("efficiency")
        if isinstance(size, int) and isinstance(eff, int | float) and not isinstance(eff, bool):
            out[size] = float(eff)
    return out
