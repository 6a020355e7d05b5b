"""``schedctl tests`` statistics over the store's weekly and daily rollups, against the results,
on both engines (their queries differ: PostgreSQL reads p50/p90 durations in one LATERAL join)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scheduler.history import stats
from scheduler.history.flaky import classify
from scheduler.history.stats import SORT_KEYS, History, TestStats, percentile
from scheduler.kernel.outcome import Outcome
from scheduler.store import Store, TestResultRow, history_queries

START = datetime(2026, 3, 4, 1, tzinfo=timezone.utc)  # a Wednesday: windows start mid-week
NOW = START + timedelta(days=24)
PASSING = {"passed", "xfailed", "xpassed"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(tmp_path / "state" / "schedctl.db")
    pg_store: Store = request.getfixturevalue("pg_store")
    return pg_store


def _fill(store: Store) -> list[tuple[int, str, datetime, Outcome, list[TestResultRow]]]:
    """72 runs over 24 days (two tiers, a timeout), 16 tests: stable, flaky with reruns,
    a regression, skips, memory. Returns every run as written."""
    rng = random.Random(22)
    nodeids = [f"tests/t{i % 4}.py::test_{i}" for i in range(16)]
    written = []
    for k in range(72):
        when = START + timedelta(hours=8 * k)
        tier = "daily" if k % 5 == 0 else "hourly"
        outcome = Outcome.TIMEOUT if k == 30 else Outcome.FAILED
        run_id = store.create_run(tier=tier, trigger="schedule", kind="pytest", queued_at=when)
        assert run_id is not None
        rows: list[TestResultRow] = []
        for i, nodeid in enumerate(nodeids):
            duration = round(0.1 * (i + 1) * rng.uniform(0.5, 1.5), 4)
            memory = rng.randrange(1 << 20, 1 << 28) if i % 3 else None
            if i < 3 and rng.random() < 0.2:  # flaky: failed, then passed on a rerun
                rows.append(TestResultRow(nodeid, "failed", duration, attempt=0, final=False))
                rows.append(TestResultRow(nodeid, "flaky", duration, attempt=1,
                                          peak_rss_bytes=memory))  # fmt: skip
            elif i == 3 and 20 <= k < 26:  # a regression
                rows.append(TestResultRow(nodeid, "failed", duration, peak_rss_bytes=memory))
            elif i in (4, 5) and rng.random() < 0.15:  # intermittent, different commits
                rows.append(TestResultRow(nodeid, "error", duration, peak_rss_bytes=memory))
            elif i == 6 and k % 4 == 0:
                rows.append(TestResultRow(nodeid, "skipped", 0.0))
            else:
                rows.append(TestResultRow(nodeid, "passed", duration, peak_rss_bytes=memory))
        finished = when + timedelta(minutes=30)
        store.finish_run(run_id, rows, outcome=outcome, sha=f"{k // 2:040x}", finished_at=finished)
        written.append((run_id, tier, finished, outcome, rows))
    return written


def _expected(written: list[Any], since_day: str, tier: str | None) -> dict[str, dict[str, Any]]:
    """Per test, the sums `schedctl tests` shows, from the results themselves."""
    sums: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "passed": 0, "failed": 0, "flaky": 0, "skipped": 0,
                 "duration_sum": 0.0, "duration_max": 0.0, "peak_rss_max": None,
                 "first_at": None, "last_at": None}
    )  # fmt: skip
    for _run_id, run_tier, finished, outcome, rows in written:
        if not outcome.is_test_evidence or finished.strftime("%Y-%m-%d") < since_day:
            continue
        if tier and run_tier != tier:
            continue
        for r in rows:
            if not r.final:
                continue
            s = sums[r.nodeid]
            s["runs"] += 1
            key = {"flaky": "flaky", "skipped": "skipped"}.get(
                r.outcome, "passed" if r.outcome in PASSING else "failed"
            )
            s[key] += 1
            s["duration_sum"] += r.duration_s
            s["duration_max"] = max(s["duration_max"], r.duration_s)
            if r.peak_rss_bytes is not None:
                s["peak_rss_max"] = max(s["peak_rss_max"] or 0, r.peak_rss_bytes)
            s["first_at"] = min(s["first_at"] or finished, finished)
            s["last_at"] = max(s["last_at"] or finished, finished)
    return dict(sums)


@pytest.mark.parametrize("days", [3, 9, 17, 30])
def test_listing_sums_weeks_and_edge_days_as_the_results_do(store: Store, days: int) -> None:
    """Every sort, with and without a tier, over windows that start mid-week (edge days from
    test_daily, whole weeks from test_weekly): the sums equal those of the stored results; the
    verdicts equal those judged from every attempt of the window; the order is the sort's."""
    written = _fill(store)
    history = History(store)
    since_s = days * 86400.0
    since_day, first_run = history.window(NOW, since_s)
    assert datetime.fromisoformat(since_day).weekday() != 0 or days == 30
    for tier in (None, "hourly"):
        expected = _expected(written, since_day, tier)
        for sort in SORT_KEYS:
            shown = history.tests(NOW, since_s=since_s, tier=tier, sort=sort, limit=6)
            assert len(shown) == 6
            for t in shown:
                want = expected[t.nodeid]
                s = t.summary
                got = {"runs": s.runs, "passed": s.passed, "failed": s.failed, "flaky": s.flaky,
                       "skipped": s.skipped, "duration_sum": pytest.approx(s.duration_sum),
                       "duration_max": s.duration_max, "peak_rss_max": s.peak_rss_max,
                       "first_at": s.first_at, "last_at": s.last_at}  # fmt: skip
                assert got == want, (t.nodeid, sort, tier)
                # `schedctl test NODEID`: the same sums, by key lookups of the one test (floats
                # to the last bits: PostgreSQL adds them in whatever order its plan reads them)
                one = store.test_summaries(since_day, tier, nodeids=[t.nodeid])
                assert [replace(r, duration_sum=pytest.approx(r.duration_sum)) for r in one] == [s]
                attempts = store.test_attempts([t.nodeid], tier=tier, from_run_id=first_run)
                judged = classify(t.nodeid, attempts)
                assert (t.verdict is not None and t.verdict.flaky) == judged.flaky
                if s.failed or s.flaky:
                    assert t.verdict is not None, (t.nodeid, sort)
            full = history.tests(NOW, since_s=since_s, tier=tier, sort=sort, limit=100)
            assert [t.nodeid for t in full[:6]] == [t.nodeid for t in shown]
            assert set(expected) == {t.nodeid for t in full}
            keys = [_key(t, sort) for t in full]
            assert keys == sorted(keys, reverse=True)
        flaky = history.tests(NOW, since_s=since_s, tier=tier, flaky_only=True, limit=100)
        assert all(t.verdict is not None and t.verdict.flaky for t in flaky)
        # --flaky lists exactly the tests judged flaky from every attempt of the window.
        judged_flaky = {
            n
            for n in expected
            if classify(n, store.test_attempts([n], tier=tier, from_run_id=first_run)).flaky
        }
        assert {t.nodeid for t in flaky} == judged_flaky


def _key(t: TestStats, sort: str) -> Any:
    return {
        "duration": t.mean_s,
        "memory": t.summary.peak_rss_max or 0,
        "fail-rate": (t.fail_rate, t.summary.failed),
        "flaky": (t.flaky_score, t.summary.flaky),
    }[sort]


def test_p50_p90_are_taken_over_each_tests_newest_results_of_the_window(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p50/p90 of each shown test: over its newest final, not skipped results in evidence runs
    of the window (and tier), as the stored results give them. A sample of 5 (fewer than the
    window's runs) so that taking the oldest instead would show."""
    monkeypatch.setattr(stats, "PERCENTILE_SAMPLE", 5)
    # Every tier: with --tier, both engines take the newest results and then drop those of
    # other tiers' runs (fewer than the sample when tiers interleave): not checked here.
    tier = None
    written = _fill(store)
    history = History(store)
    since_s = 9 * 86400.0
    _day, first_run = history.window(NOW, since_s)
    durations: dict[str, list[float]] = defaultdict(list)
    for run_id, run_tier, _finished, outcome, rows in written:
        if run_id < first_run or not outcome.is_test_evidence or (tier and run_tier != tier):
            continue
        for r in rows:
            if r.final and r.outcome != "skipped":
                durations[r.nodeid].append(r.duration_s)
    shown = history.tests(NOW, since_s=since_s, tier=tier, sort="duration", limit=100)
    assert len(shown) == 16
    for t in shown:
        newest = durations[t.nodeid][-5:]
        assert (t.p50_s, t.p90_s) == (percentile(newest, 50), percentile(newest, 90)), t.nodeid
    assert {t.p50_s is None for t in shown} == {False}


@pytest.mark.parametrize("days", [3, 9, 30])
def test_window_sums_and_seen_times_are_the_summaries(
    store: Store, days: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing's two reads (every test's sums without seen times, then the seen times of
    the tests it shows) give the rows test_summaries gives, with and without a tier and a
    failures-only filter; a test that has no row in the window gets no seen times."""
    _fill(store)
    since_day, _ = History(store).window(NOW, days * 86400.0)
    for tier in (None, "hourly", "daily"):
        for with_failures in (False, True):
            whole = store.test_summaries(since_day, tier, with_failures=with_failures)
            sums = store.test_sums(since_day, tier, with_failures=with_failures)
            assert sorted(s.nodeid for s in sums) == sorted(s.nodeid for s in whole)
            assert whole or with_failures, tier
            completed = store.test_seen(since_day, tier, sums)
            # More rows than the by-id reads take: the one pass over the window.
            monkeypatch.setattr(history_queries, "_SEEN_BY_ID", len(sums) // 2)
            assert store.test_seen(since_day, tier, sums) == completed
            monkeypatch.undo()
            by_nodeid = {s.nodeid: s for s in whole}
            for row in completed:
                want = by_nodeid[row.nodeid]
                assert replace(row, duration_sum=pytest.approx(want.duration_sum)) == want
    unseen = store.test_seen("2030-01-01", None, store.test_sums(since_day)[:1])
    assert (unseen[0].first_at, unseen[0].last_at) == (None, None)
