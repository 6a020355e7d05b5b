"""The web pages' queries: filtered runs paged by id, tier durations, slowest tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunFilter, Store, TestResultRow

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def make(store: Store, tier: str, trigger: str, outcome: Outcome, hours: int, **kw: object) -> int:
    run_id = store.create_run(tier=tier, trigger=trigger, queued_at=T0 + timedelta(hours=hours))
    assert run_id is not None
    store.finish_run(run_id, outcome=outcome, **kw)
    return run_id


def test_filter_runs_by_each_column_and_page(store: Store) -> None:
    a = make(store, "hourly", "schedule", Outcome.PASSED, 0)
    b = make(store, "hourly", "cli", Outcome.FAILED, 30)
    c = make(store, "daily", "schedule", Outcome.FAILED, 50)
    ids = lambda where, **kw: [r.id for r in store.filter_runs(where, limit=10, **kw)]  # noqa: E731
    assert ids(RunFilter()) == [c, b, a]
    assert ids(RunFilter(tier="hourly")) == [b, a]
    assert ids(RunFilter(outcome="failed")) == [c, b]
    assert ids(RunFilter(trigger="cli")) == [b]
    assert ids(RunFilter(since=T0 + timedelta(hours=1))) == [c, b]
    assert ids(RunFilter(until=T0 + timedelta(hours=31))) == [b, a]
    assert ids(RunFilter(), before_id=c) == [b, a]
    assert [r.id for r in store.filter_runs(RunFilter(), limit=1)] == [c]
    assert store.known_tiers() == ["daily", "hourly"]


def test_tier_durations_oldest_first_finished_only(store: Store) -> None:
    first = make(store, "hourly", "schedule", Outcome.PASSED, 0, duration_s=10.0)
    second = make(store, "hourly", "schedule", Outcome.FAILED, 1, duration_s=20.0)
    store.create_run(tier="hourly", trigger="schedule", outcome="running")
    assert store.tier_durations("hourly", 5) == [(first, 10.0, "passed"), (second, 20.0, "failed")]
    assert store.tier_durations("hourly", 1) == [(second, 20.0, "failed")]


def test_slowest_tests_of_the_newest_verdict_run(store: Store) -> None:
    rows = [TestResultRow(f"t.py::{i}", "passed", float(i)) for i in range(5)]
    rows.append(TestResultRow("t.py::retried", "failed", 99.0, final=False))
    run_id = make(store, "hourly", "schedule", Outcome.PASSED, 0, results=rows)
    make(store, "hourly", "schedule", Outcome.INFRA_ERROR, 1)
    slow = store.slowest_tests("hourly", 3)
    assert [(s.nodeid, s.duration_s, s.run_id) for s in slow] == [
        ("t.py::4", 4.0, run_id), ("t.py::3", 3.0, run_id), ("t.py::2", 2.0, run_id)
    ]  # fmt: skip
    assert store.slowest_tests("daily", 3) == []


def test_slowest_tests_of_many_tiers_match_one_tier_at_a_time(store: Store) -> None:
    """The gauge's one-transaction read of every tier agrees with the per-tier query."""
    for tier, durations in (("hourly", [0.5, 3.0, 1.0]), ("daily", [2.0, 2.0])):
        run_id = store.create_run(tier=tier, trigger="manual")
        assert run_id is not None
        results = [TestResultRow(f"t.py::{tier}_{i}", "passed", d) for i, d in enumerate(durations)]
        store.finish_run(run_id, outcome="passed", results=results)
    both = store.slowest_tests_of(["hourly", "daily", "weekly"], 2)
    assert both == {t: store.slowest_tests(t, 2) for t in ("hourly", "daily", "weekly")}
    assert [s.nodeid for s in both["hourly"]] == ["t.py::hourly_1", "t.py::hourly_2"]
    assert [s.nodeid for s in both["daily"]] == ["t.py::daily_0", "t.py::daily_1"]
    assert both["weekly"] == []
