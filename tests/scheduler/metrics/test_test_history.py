"""Test-history series: reruns, per-test durations, flaky tests per tier, quarantined tests.

Labels stay bounded (tier, state): no series ever carries a test id.
"""

from __future__ import annotations

from datetime import timedelta

from scheduler.config import Config
from scheduler.metrics.state import StoreStateCollector, TierSpec
from scheduler.store.engine import QuarantineRow, Store, TestResultRow
from tests.scheduler.metrics.conftest import T0, metrics_for


def _finish(store: Store, tier: str, outcome: str, results: list[TestResultRow]) -> int:
    run_id = store.create_run(tier=tier, kind="pytest", trigger="schedule", outcome="running")
    assert run_id is not None
    counts: dict[str, int] = {}
    for r in results:
        if r.final:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
    store.finish_run(run_id, results, outcome=outcome, counts=counts, finished_at=T0)
    return run_id


def test_reruns_durations_and_flaky_tests_per_tier(config: Config, store: Store) -> None:
    """A run with a flake (failed, passed on rerun) and a twice-rerun failure: 3 reruns, one
    duration per test (final attempts), flaky gauge 1; the next clean run sets it back to 0."""
    metrics = metrics_for(config, store)
    get = metrics.registry.get_sample_value
    _finish(
        store,
        "hourly",
        "failed",
        [
            TestResultRow("t.py::a", "passed", duration_s=0.002),
            TestResultRow("t.py::flake", "failed", duration_s=0.2, attempt=0, final=False),
            TestResultRow("t.py::flake", "flaky", duration_s=0.3, attempt=1),
            TestResultRow("t.py::bad", "failed", duration_s=2.0, attempt=0, final=False),
            TestResultRow("t.py::bad", "failed", duration_s=2.0, attempt=1, final=False),
            TestResultRow("t.py::bad", "failed", duration_s=2.0, attempt=2),
        ],
    )
    hourly = {"tier": "hourly"}
    assert get("schedctl_test_reruns_total", hourly) == 3
    assert get("schedctl_test_reruns_total", {"tier": "daily"}) == 0
    assert get("schedctl_test_duration_seconds_count", hourly) == 3
    assert get("schedctl_test_duration_seconds_sum", hourly) == 0.002 + 0.3 + 2.0
    assert get("schedctl_test_duration_seconds_bucket", {**hourly, "le": "0.005"}) == 1
    assert get("schedctl_test_duration_seconds_bucket", {**hourly, "le": "0.5"}) == 2
    assert get("schedctl_tier_flaky_tests", hourly) == 1
    assert get("schedctl_tier_flaky_tests", {"tier": "daily"}) == 0
    # Counted once: a second scrape adds nothing.
    assert get("schedctl_test_reruns_total", hourly) == 3

    _finish(store, "hourly", "passed", [TestResultRow("t.py::a", "passed", duration_s=0.002)])
    assert get("schedctl_tier_flaky_tests", hourly) == 0
    assert get("schedctl_test_reruns_total", hourly) == 3
    assert get("schedctl_test_duration_seconds_count", hourly) == 4
    for family in metrics.registry.collect():
        if family.name == "schedctl_slowest_test_duration_seconds":
            # the one family with test ids: bounded to the top 20 per tier (test_slowest.py)
            assert len(family.samples) <= 20 * 2
            continue
        for sample in family.samples:
            assert "nodeid" not in sample.labels and "t.py" not in str(sample.labels)


def test_quarantined_tests_gauge_splits_active_and_expired(config: Config, store: Store) -> None:
    """Quarantines are read from the store at scrape time; expiry is judged by the clock."""
    metrics = metrics_for(config, store)
    get = metrics.registry.get_sample_value
    assert get("schedctl_quarantined_tests", {"state": "active"}) == 0
    now = metrics.state._clock()
    store.quarantine_add(QuarantineRow("t.py::a", "flaky", now, owner="@a"))
    store.quarantine_add(QuarantineRow("t.py::b", "slow", now, expires_at=now + timedelta(days=7)))
    store.quarantine_add(
        QuarantineRow(
            "t.py::c", "old", now - timedelta(days=30), expires_at=now - timedelta(days=1)
        )
    )
    assert get("schedctl_quarantined_tests", {"state": "active"}) == 2
    assert get("schedctl_quarantined_tests", {"state": "expired"}) == 1
    store.quarantine_remove("t.py::a")
    assert get("schedctl_quarantined_tests", {"state": "active"}) == 1


def test_a_quarantine_expires_on_the_clock_while_the_store_stands_still(store: Store) -> None:
    """The store-unchanged reuse ends at the next expiry: the clock alone moves the split."""
    now = [T0]
    collector = StoreStateCollector(store, [TierSpec("hourly")], clock=lambda: now[0])
    store.quarantine_add(QuarantineRow("t.py::b", "slow", T0, expires_at=T0 + timedelta(hours=1)))

    def split() -> tuple[float, float]:
        family = {f.name: f for f in collector.collect()}["schedctl_quarantined_tests"]
        values = {s.labels["state"]: s.value for s in family.samples}
        return values["active"], values["expired"]

    assert split() == (1.0, 0.0)
    now[0] = T0 + timedelta(minutes=59)
    assert split() == (1.0, 0.0)
    now[0] = T0 + timedelta(hours=1)
    assert split() == (0.0, 1.0)
