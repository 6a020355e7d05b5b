"""The 1-vs-N comparison, on synthetic summaries (no torch)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.config import Thresholds
from scheduler.smoketest.compare import Verdict, compare, efficiency, format_table


def summary(world: int, loss: float = 0.05, rate: float = 1000.0, **checks: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "summary",
        "world_size": world,
        "final_loss": loss,
        "initial_loss": 0.4,
        "samples_per_s": rate,
        "peak_memory_mb": 300.0,
        "allreduce_ok": True,
        "params_in_sync": True,
        "loss_decreased": True,
        "checks_failed": [],
    }
    base.update(checks)
    return base


DEFAULT = Thresholds()


class TestEfficiency:
    def test_perfect_scaling_is_one(self) -> None:
        """Twice the samples/s on two processes is an efficiency of exactly 1."""
        assert efficiency(2, summary(2, rate=2000), 1, summary(1, rate=1000)) == 1.0

    def test_formula(self) -> None:
        """Efficiency is samples/s at N divided by N times samples/s at 1."""
        assert efficiency(4, summary(4, rate=2800), 1, summary(1, rate=1000)) == 0.7

    def test_baseline_other_than_one(self) -> None:
        """With a baseline of 2 processes, the rates are compared per process."""
        assert efficiency(4, summary(4, rate=3000), 2, summary(2, rate=2000)) == 0.75

    def test_missing_rate(self) -> None:
        """No samples/s in either summary gives no efficiency rather than a wrong number."""
        assert efficiency(2, summary(2, rate=None), 1, summary(1)) is None  # type: ignore[arg-type]
        assert efficiency(2, summary(2), 1, summary(1, rate=0)) is None


class TestCompare:
    def test_all_good_passes_with_numbers(self) -> None:
        """Matching losses and good scaling pass, with one row per N carrying the numbers."""
        verdict = compare({1: summary(1), 2: summary(2, loss=0.051, rate=1800)}, DEFAULT, True)
        assert verdict.status == "passed"
        assert verdict.reasons == []
        assert [row["world_size"] for row in verdict.table] == [1, 2]
        assert verdict.table[1]["efficiency"] == 0.9
        assert verdict.table[1]["loss_rel_diff"] == pytest.approx(0.02)
        assert verdict.efficiency() == {1: 1.0, 2: 0.9}

    def test_loss_outside_tolerance_fails(self) -> None:
        """A final loss more than loss_rtol away from N=1's fails, naming N and both losses."""
        verdict = compare({1: summary(1, loss=0.05), 2: summary(2, loss=0.06)}, DEFAULT, False)
        assert verdict.status == "failed"
        assert len(verdict.reasons) == 1
        assert "N=2: final loss 0.06" in verdict.reasons[0]
        assert "20.0%" in verdict.reasons[0]

    def test_loss_inside_tolerance_passes(self) -> None:
        """A 4 % difference is within the default 5 % tolerance."""
        verdict = compare({1: summary(1, loss=0.05), 2: summary(2, loss=0.052)}, DEFAULT, False)
        assert verdict.passed

    def test_missing_run_fails(self) -> None:
        """A run without a summary (timeout, crash) fails the verdict and is named."""
        verdict = compare({1: summary(1), 4: None}, DEFAULT, True)
        assert verdict.status == "failed"
        assert verdict.reasons == ["N=4: the run produced no summary (timed out or crashed)"]
        assert verdict.table[1]["checks"] == "no summary"

    def test_failed_check_is_named(self) -> None:
        """A run whose params_in_sync check failed fails the verdict, naming the check."""
        bad = summary(2, loss=0.4, params_in_sync=False, loss_decreased=None)
        verdict = compare({1: summary(1), 2: bad}, DEFAULT, False)
        assert verdict.status == "failed"
        assert verdict.reasons == [
            "N=2: check params_in_sync failed (the ranks' parameters diverged)"
        ]
        assert verdict.table[1]["checks"] == "params_in_sync"

    def test_missing_check_counts_as_failed(self) -> None:
        """A summary that does not report a check at all does not pass it."""
        partial = summary(2)
        del partial["allreduce_ok"]
        verdict = compare({1: summary(1), 2: partial}, DEFAULT, False)
        assert any("allreduce_ok" in reason for reason in verdict.reasons)

    def test_wrong_world_size_fails(self) -> None:
        """A summary that reports another world size than launched is a failure."""
        verdict = compare({1: summary(1), 2: summary(1)}, DEFAULT, False)
        assert verdict.reasons == ["N=2: the run reports world size 1, expected 2"]

    def test_low_efficiency_fails_on_gpu(self) -> None:
        """On GPU an efficiency under min_efficiency fails, naming N and the number."""
        verdict = compare({1: summary(1), 4: summary(4, rate=2000)}, DEFAULT, on_gpu=True)
        assert verdict.status == "failed"
        assert verdict.reasons == ["N=4: scaling efficiency 0.50 is below 0.70"]

    def test_low_efficiency_only_reported_on_cpu(self) -> None:
        """On CPU the same efficiency is reported in the table but does not fail the verdict."""
        verdict = compare({1: summary(1), 4: summary(4, rate=2000)}, DEFAULT, on_gpu=False)
        assert verdict.passed
        assert verdict.table[1]["efficiency"] == 0.5
        assert not verdict.efficiency_enforced

    def test_cpu_efficiency_enforced_when_configured(self) -> None:
        """enforce_efficiency_on_cpu makes the CPU verdict apply min_efficiency too."""
        strict = Thresholds(enforce_efficiency_on_cpu=True)
        verdict = compare({1: summary(1), 2: summary(2, rate=1000)}, strict, on_gpu=False)
        assert verdict.reasons == ["N=2: scaling efficiency 0.50 is below 0.70"]

    def test_no_runs_fails(self) -> None:
        """An empty comparison is never a pass."""
        assert compare({}, DEFAULT, False).status == "failed"

    def test_json_round_trip(self) -> None:
        """to_json/from_json give back an equal verdict, for storing it with the run."""
        verdict = compare({1: summary(1), 2: None}, DEFAULT, True)
        assert Verdict.from_json(verdict.to_json()) == verdict


class TestFormatTable:
    def test_side_by_side_table(self) -> None:
        """The table has a header, one aligned line per N, and the verdict with reasons."""
        verdict = compare({1: summary(1, rate=1000), 2: None}, DEFAULT, False)
        lines = format_table(verdict).splitlines()
        assert lines[0].split()[:3] == ["N", "final", "loss"]
        assert lines[1].split()[0] == "1"
        assert "1,000" in lines[1]
        assert lines[2].split()[0] == "2"
        assert lines[2].rstrip().endswith("no summary")
        assert len({len(line) for line in lines[:3]}) == 1
        assert lines[3] == "verdict: failed (CPU, efficiency reported only)"
        assert lines[4].startswith("  - N=2:")
