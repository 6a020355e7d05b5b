"""Flaky verdicts from history: same-commit evidence, intermittent episodes, regressions."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.history.flaky import classify, flip_rate
from scheduler.store import AttemptRow


def history(steps: Sequence[tuple[str, str] | tuple[str, str, int]]) -> list[AttemptRow]:
    """``(sha, outcome[, attempt])`` per attempt; a new run starts at each attempt 0."""
    rows: list[AttemptRow] = []
    run_id = 0
    for step in steps:
        sha, outcome = step[0], step[1]
        attempt = step[2] if len(step) == 3 else 0
        if attempt == 0:
            run_id += 1
        rows.append(AttemptRow("t::x", run_id, "hourly", sha, None, attempt, True, outcome, 0.1))
    return rows


def test_pass_and_fail_at_one_commit_is_flaky_with_evidence() -> None:
    """Two runs of commit b disagree: flaky, and the evidence names the commit and both runs."""
    verdict = classify("t::x", history([("a", "passed"), ("b", "failed"), ("b", "passed")]))
    assert verdict.flaky
    (evidence,) = verdict.evidence
    assert (evidence.kind, evidence.sha, evidence.run_ids) == ("same-commit", "b", (2, 3))


def test_failed_then_passed_on_rerun_is_flaky() -> None:
    """A rerun that passed in the same run is same-commit evidence."""
    verdict = classify("t::x", history([("a", "passed"), ("b", "failed"), ("b", "flaky", 1)]))
    assert verdict.flaky and verdict.evidence[0].run_ids == (2,)


def test_regression_broken_then_fixed_is_not_flaky() -> None:
    """Broken at commit c, failing through e, fixed at f: one episode explained by commits."""
    steps = [("a", "passed"), ("b", "passed"), ("c", "failed"), ("d", "failed"), ("e", "failed"),
             ("f", "passed"), ("g", "passed")]  # fmt: skip
    verdict = classify("t::x", history(steps))
    assert not verdict.flaky and verdict.score == 0.0


def test_recurring_failures_at_new_commits_are_intermittent() -> None:
    """Three separate failures, each at a fresh commit that then passes: intermittent."""
    steps = [("a", "passed"), ("b", "failed"), ("c", "passed"), ("d", "failed"),
             ("e", "passed"), ("f", "failed"), ("g", "passed")]  # fmt: skip
    verdict = classify("t::x", history(steps))
    assert verdict.flaky
    assert [e.kind for e in verdict.evidence] == ["intermittent"] * 3
    assert verdict.score == 3 / 7


def test_known_bad_commit_run_again_starts_no_new_episode() -> None:
    """Alternating a broken branch commit with a good one is not a flake."""
    steps = [("good", "passed"), ("bad", "failed")] * 4
    assert not classify("t::x", history(steps)).flaky


def test_skips_are_not_verdicts() -> None:
    """Skipped attempts neither pass nor fail."""
    verdict = classify("t::x", history([("a", "skipped"), ("a", "failed")]))
    assert not verdict.flaky and verdict.runs == 1


def test_flip_rate_baseline() -> None:
    """Flips per pair of consecutive runs, first attempts only."""
    steps = [("a", "passed"), ("b", "failed"), ("b", "flaky", 1), ("c", "passed")]
    assert flip_rate(history(steps)) == 1.0
