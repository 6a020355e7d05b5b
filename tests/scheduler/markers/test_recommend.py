"""The plan on hand-made facts: budget, value per second, unknown durations, flaky, demotions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.config import Config
from scheduler.kernel.clock import utcnow
from scheduler.markers.audit import Audit, TestFacts, distribution, predict
from scheduler.markers.collect import Collection
from scheduler.markers.recommend import plan


def make_audit(config: Config, tests: dict[str, tuple[list[str], dict[str, Any]]]) -> Audit:
    items = {n: frozenset(m) for n, (m, _) in tests.items()}
    facts = {n: TestFacts(nodeid=n, **f) for n, (_, f) in tests.items()}
    tiers = [predict(config, t, items, facts) for t in ("hourly", "daily")]
    selected = {n for p in tiers for n in p.selected}
    return Audit(
        collection=Collection(items, ("hourly", "daily", "slow")),
        facts=facts,
        distribution=distribution(items, ("hourly", "daily", "slow")),
        tiers=tiers,
        unselected=sorted(set(items) - selected),
        multi={},
        generated_at=utcnow(),
        window_s=86400.0,
    )


def fast(p90: float, **extra: Any) -> dict[str, Any]:
    return {"p90_s": p90, "runs": 10, **extra}


def test_budget_value_per_second_and_what_is_never_added(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(
        tiers={
            "hourly": {"schedule": "15 * * * *", "timeout": 100, "markers": "hourly"},
            "daily": {"schedule": "30 2 * * *", "timeout": 1000, "markers": "daily"},
        },
        markers={"hourly_budget": "10s", "critical_paths": ["t/crit*"]},
    )
    found = make_audit(
        config,
        {
            "t/kept": (["hourly"], fast(4.0)),
            "t/kept_unknown": (["hourly"], {}),
            "t/cheap": ([], fast(1.0)),
            "t/crit": ([], fast(2.5)),  # 3/2.5 = 1.2 per s beats cheap's 1.0
            "t/pricey": ([], fast(4.5)),  # would overflow the budget
            "t/flaky": ([], fast(0.1, flaky=True, flaky_score=0.3)),
            "t/failed": ([], fast(0.1, failed=1)),
            "t/few_runs": ([], {"p90_s": 0.1, "runs": 2}),
            "t/no_history": ([], {}),
            "t/slowpoke": ([], fast(120.0)),
        },
    )
    result = plan(config, found)
    hourly = [r.nodeid for r in result.of("hourly")]
    assert hourly == ["t/cheap", "t/crit"]
    assert result.of("demote") == []
    assert result.after["hourly"]["predicted_s"] == 7.5 <= 10
    assert result.after["hourly"]["unknown"] == 1  # t/kept_unknown stays, counted as unknown
    daily = {r.nodeid for r in result.of("daily")}
    assert daily == {"t/pricey", "t/flaky", "t/failed", "t/few_runs", "t/no_history", "t/slowpoke"}
    assert result.after["daily"]["unknown"] == 1
    assert [r.nodeid for r in result.of("slow")] == ["t/slowpoke"]


def test_an_overflowing_hourly_set_loses_its_lowest_value_per_second(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(
        tiers={
            "hourly": {"schedule": "15 * * * *", "timeout": 100, "markers": "hourly"},
            "daily": {"schedule": "30 2 * * *", "timeout": 1000, "markers": "daily"},
        },
        markers={"hourly_budget": "5s"},
    )
    found = make_audit(
        config,
        {
            "t/a": (["hourly"], fast(2.0)),
            "t/b": (["hourly"], fast(2.5)),
            "t/c": (["hourly"], fast(3.0)),
            "t/flaky": (["hourly"], fast(0.1, flaky=True, flaky_score=0.5)),
        },
    )
    result = plan(config, found)
    demoted = {r.nodeid: r.evidence for r in result.of("demote")}
    assert set(demoted) == {"t/c", "t/flaky"}
    assert "budget" in demoted["t/c"] and "flaky" in demoted["t/flaky"]
    assert result.before["hourly"]["predicted_s"] == 7.6
    assert result.after["hourly"]["predicted_s"] == 4.5
    assert {r.nodeid for r in result.of("daily")} == {"t/c", "t/flaky"}
