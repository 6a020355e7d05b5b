"""schedctl_slowest_test_duration_seconds: the top 20 per tier, and never more series."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.metrics import Metrics
from scheduler.metrics.slowest import NAME, TOP
from scheduler.store.engine import Store, TestResultRow

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def run(store: Store, tier: str, prefix: str, count: int, outcome: Outcome, n: int) -> int:
    run_id = store.create_run(tier=tier, trigger="schedule", queued_at=T0 + timedelta(hours=n))
    assert run_id is not None
    rows = [TestResultRow(f"tests/{prefix}.py::test_{i}", "passed", float(i)) for i in range(count)]
    store.finish_run(run_id, rows, outcome=outcome)
    return run_id


def samples(metrics: Metrics) -> list[tuple[dict[str, str], float]]:
    text = generate_latest(metrics.registry).decode()
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        if family.name == NAME
        for s in family.samples
    ]


def test_top_20_per_tier_slowest_first_and_bounded(
    make_config: Callable[..., Config], store: Store
) -> None:
    config = make_config(tiers={"hourly": {"schedule": "15 * * * *"},
                                "daily": {"schedule": "30 2 * * *"}})  # fmt: skip
    metrics = Metrics(CollectorRegistry(), config, store, process_metrics=False)
    assert samples(metrics) == []  # no runs: the family, no series
    run(store, "hourly", "a", 50, Outcome.FAILED, 0)
    run(store, "daily", "d", 5, Outcome.PASSED, 0)
    found = samples(metrics)
    hourly = [(labels, value) for labels, value in found if labels["tier"] == "hourly"]
    assert len(hourly) == TOP == 20
    assert [labels["rank"] for labels, _ in hourly] == [str(r) for r in range(1, 21)]
    assert hourly[0] == ({"tier": "hourly", "rank": "1", "test": "tests/a.py::test_49"}, 49.0)
    assert [v for _, v in hourly] == sorted((v for _, v in hourly), reverse=True)
    assert len([1 for labels, _ in found if labels["tier"] == "daily"]) == 5

    # Many runs, each with new test names: the series count never grows past 20 per tier.
    for n in range(1, 8):
        run(store, "hourly", f"gen{n}", 60, Outcome.PASSED, n)
        found = samples(metrics)
        assert len(found) == TOP + 5
        assert {labels["test"].split("::")[0] for labels, _ in found
                if labels["tier"] == "hourly"} == {f"tests/gen{n}.py"}  # fmt: skip


def test_a_run_without_test_verdict_keeps_the_previous_table(
    make_config: Callable[..., Config], store: Store
) -> None:
    metrics = Metrics(CollectorRegistry(), make_config(), store, process_metrics=False)
    run(store, "hourly", "kept", 3, Outcome.PASSED, 0)
    run(store, "hourly", "infra", 3, Outcome.INFRA_ERROR, 1)
    assert {labels["test"] for labels, _ in samples(metrics)} == {
        f"tests/kept.py::test_{i}" for i in range(3)
    }


def test_long_and_odd_test_ids_are_cut_and_escaped(
    make_config: Callable[..., Config], store: Store
) -> None:
    metrics = Metrics(CollectorRegistry(), make_config(), store, process_metrics=False)
    run_id = store.create_run(tier="hourly", trigger="schedule")
    assert run_id is not None
    odd = 'tests/x.py::test["quote"\n' + "y" * 500
    store.finish_run(run_id, [TestResultRow(odd, "failed", 1.0)], outcome=Outcome.FAILED)
    ((labels, value),) = samples(metrics)
    assert labels["test"] == odd[:200] and value == 1.0
