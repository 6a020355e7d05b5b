"""Counters and the duration histogram of finished runs, read from the store's run rows.

The tally follows the ``runs`` table instead of the dispatcher's events, so runs finished by any
process sharing the store (``schedctl run`` in a shell, the daemon, the control API) are counted
once, in the scrape after they finish. Per Prometheus convention the counters start at zero with
the process: rows that were already final when the tally was created are never counted.

SQLite hands out row ids in commit order (one writer at a time), so "every row above the cursor"
plus "the rows seen while still queued or running" is exactly the set still to be counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from scheduler.kernel.errors import StoreError
from scheduler.kernel.outcome import Outcome
from scheduler.metrics.families import CounterTally, HistogramTally
from scheduler.store.engine import Store, TallyRow

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["DURATION_BUCKETS", "KNOWN_TRIGGERS", "TEST_DURATION_BUCKETS", "RunTally"]

log = structlog.get_logger("schedctl.metrics")

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
TEST_DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)
KNOWN_TRIGGERS = ("schedule", "manual")
TEST_OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed", "flaky")
_NOT_EXECUTED = frozenset({Outcome.MISSED, Outcome.SKIPPED_OVERLAP})
_FINAL = [o for o in Outcome if o.is_final]


class RunTally:
    """Collector of ``schedctl_runs_total``, ``schedctl_tests_total``,
    ``schedctl_run_duration_seconds``, ``schedctl_missed_slots_total``,
    ``schedctl_test_reruns_total`` and ``schedctl_test_duration_seconds``.

    Args:
        store: the run rows to follow.
        tiers: the configured tiers; their label sets are exported as 0 from the start.
    """

    def __init__(self, store: Store, tiers: Sequence[str]) -> None:
        self._store = store
        self._lock = threading.Lock()
        self.runs_total = CounterTally(
            "schedctl_runs_total",
            "Runs that reached a final outcome since this process started.",
            ("tier", "outcome", "trigger"),
        )
        self.tests_total = CounterTally(
            "schedctl_tests_total",
            "Test results of finished runs since this process started, by test outcome.",
            ("tier", "outcome"),
        )
        self.missed_slots_total = CounterTally(
            "schedctl_missed_slots_total",
            "Scheduled slots that were never run (daemon down past the misfire grace).",
            ("tier",),
        )
        self.duration = HistogramTally(
            "schedctl_run_duration_seconds",
            "Wall time of runs that executed (missed and overlap-skipped slots excluded).",
            ("tier",),
            DURATION_BUCKETS,
        )
        self.test_reruns_total = CounterTally(
            "schedctl_test_reruns_total",
            "Test attempts beyond the first (reruns of failed tests) in finished runs.",
            ("tier",),
        )
        self.test_duration = HistogramTally(
            "schedctl_test_duration_seconds",
            "Duration of each test's final attempt in finished runs.",
            ("tier",),
            TEST_DURATION_BUCKETS,
        )
        self.runs_total.declare(
            (tier, outcome.value, trigger)
            for tier in tiers
            for outcome in _FINAL
            for trigger in KNOWN_TRIGGERS
        )
        self.tests_total.declare((tier, outcome) for tier in tiers for outcome in TEST_OUTCOMES)
        self.missed_slots_total.declare((tier,) for tier in tiers)
        self.test_reruns_total.declare((tier,) for tier in tiers)
        self._cursor, self._pending = store.tally_baseline()
        self._synced: int | None = None
        """The store's data version at the last sync (no commit since: nothing to count)."""

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        version = self._store.data_version()
        if version is None or version != self._synced:
            try:
                self.sync()
            except StoreError as exc:
                # Stale but still monotonic: the next scrape catches up.
                log.warning("metrics_store_unreadable", error=str(exc))
            else:
                self._synced = version
        return self._families()

    def sync(self) -> int:
        """Count the rows that became final since the last call; returns how many."""
        with self._lock:
            rows = self._store.tally_rows(self._cursor, self._pending)
            counted: dict[int, str] = {}
            for row in rows:
                self._cursor = max(self._cursor, row.id)
                if Outcome(row.outcome).is_final:
                    self._pending.discard(row.id)
                    self._count(row)
                    if row.counts:
                        counted[row.id] = row.tier
                else:
                    self._pending.add(row.id)
            self._count_tests(counted)
            return len([r for r in rows if Outcome(r.outcome).is_final])

    def _count_tests(self, tiers: dict[int, str]) -> None:
        """Reruns and per-test durations of the runs just counted (those with test results)."""
        for test in self._store.test_tally_rows(list(tiers)):
            tier = tiers[test.run_id]
            if test.attempt > 0:
                self.test_reruns_total.inc((tier,))
            if test.final:
                self.test_duration.observe((tier,), max(0.0, test.duration_s))

    def _count(self, row: TallyRow) -> None:
        tier, outcome = row.tier, Outcome(row.outcome)
        self.runs_total.inc((tier, outcome.value, row.trigger))
        if outcome is Outcome.MISSED:
            self.missed_slots_total.inc((tier,))
        if outcome not in _NOT_EXECUTED and row.duration_s is not None:
            self.duration.observe((tier,), float(row.duration_s))
        counts = row.counts
        for test_outcome in TEST_OUTCOMES:
            amount = counts.get(test_outcome) or 0
            if amount > 0:
                self.tests_total.inc((tier, test_outcome), float(amount))

    def _families(self) -> list[Metric]:
        return [
            self.runs_total.family(),
            self.tests_total.family(),
            self.missed_slots_total.family(),
            self.duration.family(),
            self.test_reruns_total.family(),
            self.test_duration.family(),
        ]
