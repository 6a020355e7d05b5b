"""Per-test statistics for ``schedctl tests`` and one test's history for ``schedctl test``.

Sums (runs, passes, failures, flaky, duration, peak memory, first/last seen) come from the
store's rollups of the window (its whole weeks, then its edge days), so the window is counted in
whole UTC days. Flaky verdicts are computed only for the tests that failed at least once in the
window and that the listing needs (all for ``--flaky`` and ``--sort flaky``, else those shown),
from their attempts. p50/p90 durations are taken over each shown test's newest
:data:`PERCENTILE_SAMPLE` final results in the window.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from scheduler.history.flaky import Verdict, classify
from scheduler.history.owners import Owners
from scheduler.store import AttemptRow, Store, TestSummaryRow
from scheduler.store.daily import day_of
from scheduler.store.history_queries import WindowSums

PERCENTILE_SAMPLE = 100
SORT_KEYS = ("duration", "memory", "fail-rate", "flaky")


@dataclass(frozen=True)
class TestStats:
    __test__ = False

    summary: TestSummaryRow
    verdict: Verdict | None
    owner: str = ""
    p50_s: float | None = None
    p90_s: float | None = None

    @property
    def nodeid(self) -> str:
        return self.summary.nodeid

    @property
    def verdicts(self) -> int:
        """Runs with a pass or fail verdict (skips excluded)."""
        s = self.summary
        return s.passed + s.failed + s.flaky

    @property
    def pass_rate(self) -> float | None:
        s = self.summary
        return (s.passed + s.flaky) / self.verdicts if self.verdicts else None

    @property
    def fail_rate(self) -> float:
        return _fail_rate(self.summary)

    @property
    def mean_s(self) -> float:
        return _mean(self.summary)

    @property
    def flaky_score(self) -> float:
        return _flaky_score(self.verdict)

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "nodeid": s.nodeid,
            "runs": s.runs,
            "passed": s.passed,
            "failed": s.failed,
            "flaky_runs": s.flaky,
            "skipped": s.skipped,
            "pass_rate": self.pass_rate,
            "flaky": bool(self.verdict and self.verdict.flaky),
            "flaky_score": round(self.flaky_score, 4),
            "evidence": [e.to_json() for e in self.verdict.evidence] if self.verdict else [],
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "mean_s": self.mean_s,
            "max_s": s.duration_max,
            "peak_rss_bytes": s.peak_rss_max,
            "first_seen": s.first_at.isoformat() if s.first_at else None,
            "last_seen": s.last_at.isoformat() if s.last_at else None,
            "owner": self.owner or None,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class _Sums(Protocol):
    """What the orders read of a test's sums (:class:`WindowSums`, :class:`TestSummaryRow`)."""

    @property
    def runs(self) -> int: ...
    @property
    def passed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def flaky(self) -> int: ...
    @property
    def duration_sum(self) -> float: ...
    @property
    def peak_rss_max(self) -> int | None: ...


def _sort_key(sort: str, verdicts: Mapping[str, Verdict]) -> Callable[[WindowSums], Any]:
    """The order of ``sort`` over sums (descending), from the same values :class:`TestStats`
    shows: mean duration, peak memory, fail rate then failures, flaky score then flaky runs."""
    if sort == "flaky":
        return lambda s: (_flaky_score(verdicts.get(s.nodeid)), s.flaky)
    keys: dict[str, Callable[[WindowSums], Any]] = {
        "duration": _mean,
        "memory": lambda s: s.peak_rss_max or 0,
        "fail-rate": lambda s: (_fail_rate(s), s.failed),
    }
    return keys[sort]


def _mean(s: _Sums) -> float:
    return s.duration_sum / s.runs if s.runs else 0.0


def _fail_rate(s: _Sums) -> float:
    verdicts = s.passed + s.failed + s.flaky
    return s.failed / verdicts if verdicts else 0.0


def _flaky_score(verdict: Verdict | None) -> float:
    return verdict.score if verdict is not None and verdict.flaky else 0.0


class History:
    """Reads the store's test history and applies the rules of :mod:`scheduler.history`."""

    def __init__(self, store: Store, owners: Owners | None = None) -> None:
        self.store = store
        self.owners = owners or Owners()

    def window(self, now: datetime, since_s: float) -> tuple[str, int]:
        """The window's first UTC day and the id of its first run."""
        start = now - timedelta(seconds=since_s)
        return day_of(start), self.store.first_run_id_since(
            start.replace(hour=0, minute=0, second=0, microsecond=0)
        )

    def verdicts(
        self, nodeids: Sequence[str], *, tier: str | None, from_run_id: int
    ) -> dict[str, Verdict]:
        if not nodeids:
            return {}
        grouped: dict[str, list[AttemptRow]] = {n: [] for n in nodeids}
        rows, totals = self.store.verdict_runs(nodeids, tier=tier, from_run_id=from_run_id)
        for row in rows:
            grouped[row.nodeid].append(row)
        return {n: classify(n, found, totals.get(n)) for n, found in grouped.items()}

    def tests(
        self,
        now: datetime,
        *,
        since_s: float,
        tier: str | None = None,
        sort: str = "fail-rate",
        limit: int = 50,
        flaky_only: bool = False,
    ) -> list[TestStats]:
        day, first_run = self.window(now, since_s)
        # Every test's sums, sorted as tuples; first/last seen times, p50/p90 and owners only
        # for the shown tests.
        sums = self.store.test_sums(day, tier, with_failures=flaky_only)
        sums.sort(key=operator.attrgetter("nodeid"))
        candidates = [s.nodeid for s in sums if s.failed or s.flaky]
        if flaky_only or sort == "flaky":
            verdicts = self.verdicts(candidates, tier=tier, from_run_id=first_run)
            if flaky_only:
                sums = [s for s in sums if s.nodeid in verdicts and verdicts[s.nodeid].flaky]
            sums.sort(key=_sort_key(sort, verdicts), reverse=True)
        else:
            # The order needs no verdict: judge only the failing tests that will be shown.
            sums.sort(key=_sort_key(sort, {}), reverse=True)
            wanted = {s.nodeid for s in sums[:limit]}
            verdicts = self.verdicts(
                [n for n in candidates if n in wanted], tier=tier, from_run_id=first_run
            )
        shown = self.store.test_seen(day, tier, sums[:limit])
        return self._detailed(
            [TestStats(s, verdicts.get(s.nodeid)) for s in shown], tier, first_run
        )

    def _detailed(
        self, shown: Sequence[TestStats], tier: str | None, first_run: int
    ) -> list[TestStats]:
        # Nearest rank, as percentile() (the store's SQL is PostgreSQL's percentile_disc).
        found = self.store.recent_percentiles(
            [t.nodeid for t in shown],
            tier=tier,
            from_run_id=first_run,
            limit=PERCENTILE_SAMPLE,
            fractions=(50 / 100, 90 / 100),
        )
        return [
            TestStats(
                t.summary,
                t.verdict,
                owner=" ".join(self.owners.of_test(t.nodeid)),
                p50_s=found[t.nodeid][0],
                p90_s=found[t.nodeid][1],
            )
            for t in shown
        ]

    def test(
        self, nodeid: str, now: datetime, *, since_s: float, tier: str | None = None, last: int = 30
    ) -> dict[str, Any] | None:
        """One test: its statistics in the window, its verdict, and its newest attempts."""
        day, first_run = self.window(now, since_s)
        found = self.store.test_summaries(day, tier, nodeids=[nodeid])
        attempts = self.store.test_attempts(
            [nodeid], tier=tier, from_run_id=0, newest=last, evidence_only=False
        )
        if not found and not attempts:
            return None
        stats = None
        if found:
            verdict = self.verdicts([nodeid], tier=tier, from_run_id=first_run)[nodeid]
            stats = self._detailed([TestStats(found[0], verdict)], tier, first_run)[0]
        return {
            "nodeid": nodeid,
            "stats": stats.to_json() if stats else None,
            "owner": " ".join(self.owners.of_test(nodeid)) or None,
            "attempts": [
                {
                    "run_id": a.run_id,
                    "tier": a.tier,
                    "sha": a.sha,
                    "finished_at": a.finished_at.isoformat() if a.finished_at else None,
                    "attempt": a.attempt,
                    "final": a.final,
                    "outcome": a.outcome,
                    "duration_s": a.duration_s,
                    "peak_rss_bytes": a.peak_rss_bytes,
                    "cuda_peak_bytes": a.cuda_peak_bytes,
                    "owner": a.owner,
                }
                for a in attempts
            ],
        }
