"""``schedctl_slowest_test_duration_seconds``: the slowest tests of each tier, for a table.

A test id as a label is unbounded in general (DESIGN.md: never test ids), so this family carries
at most :data:`TOP` series per tier: the slowest final results of the tier's newest run with a
test verdict, ranked 1..TOP. Which tests those are changes with the runs; how many never grows.
Read from the store at scrape time: a scrape that finds the store unchanged
(:meth:`Store.data_version`) hands back the last family object as it is; otherwise it reads each
tier's newest run with a verdict, and the slowest tests of only the runs it has not seen (a
final run's results never change).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from scheduler.kernel.errors import StoreError
from scheduler.store.engine import SlowTest, Store

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape
    from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["MAX_TEST_LABEL", "TOP", "SlowestTestsCollector"]

log = structlog.get_logger("schedctl.metrics")

TOP = 20
MAX_TEST_LABEL = 200
NAME = "schedctl_slowest_test_duration_seconds"


def _family() -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(
        NAME,
        f"Duration of the {TOP} slowest tests (final attempts) in the tier's newest run with a "
        "test verdict; rank 1 is the slowest. At most 20 series per tier.",
        labels=["tier", "rank", "test"],
    )


class SlowestTestsCollector:
    def __init__(self, store: Store, tiers: Sequence[str], top: int = TOP) -> None:
        self._store = store
        self._tiers = tuple(tiers)
        self._top = min(top, TOP)
        self._last: tuple[int, list[Metric]] | None = None
        self._by_run: dict[int, list[SlowTest]] = {}  # the newest verdict runs' slowest tests

    def describe(self) -> Iterable[Metric]:
        return [_family()]

    def collect(self) -> Iterable[Metric]:
        version = self._store.data_version()  # before the reads: a commit during them shows
        if self._last is not None and version is not None and self._last[0] == version:
            return self._last[1]
        family = _family()
        try:
            newest = self._store.newest_evidence_runs(self._tiers)
            unseen = sorted(set(newest.values()) - set(self._by_run))
            read = self._store.slowest_in_runs(unseen, self._top) if unseen else {}
            self._by_run = {
                run_id: read.get(run_id, []) if run_id in unseen else self._by_run[run_id]
                for run_id in set(newest.values())
            }
            for tier in self._tiers:
                found = self._by_run.get(newest.get(tier, -1), [])
                for rank, slow in enumerate(found, 1):
                    family.add_metric([tier, str(rank), slow.nodeid[:MAX_TEST_LABEL]],
                                      slow.duration_s)  # fmt: skip
        except StoreError as exc:  # schedctl_store_up says so; keep the scrape whole
            log.warning("metrics_slowest_unreadable", error=str(exc))
            self._last = None
            return [_family()]
        out: list[Metric] = [family]
        self._last = (version, out) if version is not None else None
        return out
