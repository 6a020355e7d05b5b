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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.history.flaky import Verdict, classify
from scheduler.history.owners import Owners
from scheduler.store import AttemptRow, Store, TestSummaryRow
from scheduler.store.daily import day_of

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
        return self.verdict.score if self.verdict is not None and self.verdict.flaky else 0.0

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


def _sort_key(sort: str) -> Any:
    keys: dict[str, Any] = {
        "duration": lambda t: _mean(t.summary),
        "memory": lambda t: t.summary.peak_rss_max or 0,
        "fail-rate": lambda t: (_fail_rate(t.summary), t.summary.failed),
        "flaky": lambda t: (t.flaky_score, t.summary.flaky),
    }
    return keys[sort]


def _summary_key(sort: str) -> Any:
    """The order of ``sort`` from a summary alone (every sort but ``flaky``): the same values
    as :func:`_sort_key`, without building a :class:`TestStats` per test."""
    keys: dict[str, Any] = {
        "duration": _mean,
        "memory": lambda s: s.peak_rss_max or 0,
        "fail-rate": lambda s: (_fail_rate(s), s.failed),
    }
    return keys[sort]


def _mean(s: TestSummaryRow) -> float:
    return s.duration_sum / s.runs if s.runs else 0.0


def _fail_rate(s: TestSummaryRow) -> float:
    verdicts = s.passed + s.failed + s.flaky
    return s.failed / verdicts if verdicts else 0.0


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
        # Sums without first/last seen times (the shown tests get theirs below), sorted as
        # summaries: a TestStats is built only for the tests a verdict or the listing needs.
        summaries = self.store.test_summaries(day, tier, with_failures=flaky_only, seen=False)
        summaries.sort(key=lambda s: s.nodeid)
        candidates = [s.nodeid for s in summaries if s.failed or s.flaky]
        if flaky_only or sort == "flaky":
            judged = candidates  # the verdicts filter or order the whole list
            verdicts = self.verdicts(judged, tier=tier, from_run_id=first_run)
            stats = [TestStats(s, verdicts.get(s.nodeid)) for s in summaries]
            if flaky_only:
                stats = [t for t in stats if t.verdict is not None and t.verdict.flaky]
            stats.sort(key=_sort_key(sort), reverse=True)
            shown = stats[:limit]
        else:
            # The order needs no verdict: judge only the failing tests that will be shown.
            summaries.sort(key=_summary_key(sort), reverse=True)
            top = summaries[:limit]
            wanted = {s.nodeid for s in top}
            verdicts = self.verdicts(
                [n for n in candidates if n in wanted], tier=tier, from_run_id=first_run
            )
            shown = [TestStats(s, verdicts.get(s.nodeid)) for s in top]
        with_seen = self.store.test_seen(day, tier, [t.summary for t in shown])
        shown = [TestStats(s, t.verdict) for s, t in zip(with_seen, shown, strict=True)]
        return self._detailed(shown, tier, first_run)

    def _detailed(
        self, shown: Sequence[TestStats], tier: str | None, first_run: int
    ) -> list[TestStats]:
        durations = self.store.recent_durations(
            [t.nodeid for t in shown], tier=tier, from_run_id=first_run, limit=PERCENTILE_SAMPLE
        )
        return [
            TestStats(
                t.summary,
                t.verdict,
                owner=" ".join(self.owners.of_test(t.nodeid)),
                p50_s=percentile(durations[t.nodeid], 50),
                p90_s=percentile(durations[t.nodeid], 90),
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
