"""The pure alert rules: fire, repeat, escalate, resolve per fingerprint."""

from __future__ import annotations

import pytest

from scheduler.alerts.rules import (
    Action,
    Decision,
    FailureClass,
    Observation,
    Phase,
    RulePolicy,
    Severity,
    Track,
    evaluate,
    failure_class,
    fingerprint,
)
from scheduler.kernel.outcome import Outcome

POLICY = RulePolicy(escalate_after=3, resolve_after_green=1)


class Timeline:
    """Feeds observations through ``evaluate`` and keeps the tracks, like the recorder does."""

    def __init__(self, policy: RulePolicy = POLICY) -> None:
        self.policy = policy
        self.tracks: dict[str, Track] = {}
        self.run_id = 0
        self.streak = 0

    def run(
        self, outcome: Outcome, failing: tuple[str, ...] = (), tier: str = "hourly"
    ) -> list[Decision]:
        self.run_id += 1
        if outcome is Outcome.PASSED:
            self.streak = 0
        elif outcome.is_test_failure:
            self.streak += 1
        obs = Observation(self.run_id, tier, outcome, self.streak, failing)
        decisions = evaluate(self.tracks, obs, self.policy)
        for d in decisions:
            self.tracks[d.track.fingerprint] = d.track
        return decisions

    def actions(self, outcome: Outcome, failing: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return [
            (d.track.fingerprint, d.action.value) for d in self.run(outcome, failing) if d.action
        ]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome.FAILED, FailureClass.TESTS_FAILED),
        (Outcome.ERROR, FailureClass.ERROR),
        (Outcome.NO_TESTS, FailureClass.ERROR),
        (Outcome.TIMEOUT, FailureClass.TIMEOUT),
        (Outcome.OOM, FailureClass.OOM),
        (Outcome.GPU_UNAVAILABLE, FailureClass.GPU_UNAVAILABLE),
        (Outcome.INFRA_ERROR, FailureClass.INFRA),
        (Outcome.INTERRUPTED, FailureClass.INFRA),
        (Outcome.MISSED, FailureClass.MISSED),
        (Outcome.PASSED, None),
        (Outcome.CANCELLED, None),
        (Outcome.SKIPPED_OVERLAP, None),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_failure_class_of_every_outcome(outcome: Outcome, expected: FailureClass | None) -> None:
    """Each outcome maps to the documented class; infra classes are flagged as infra."""
    assert failure_class(outcome) is expected
    if expected is not None:
        assert expected.is_infra == outcome.is_infra


def test_infra_classes_are_those_of_infra_outcomes_and_drained_gpus() -> None:
    """The classes that never count as test failures (derived from ``Outcome.is_infra``)."""
    assert {c for c in FailureClass if c.is_infra} == {
        FailureClass.GPU_UNAVAILABLE,
        FailureClass.INFRA,
        FailureClass.MISSED,
        FailureClass.GPU_DRAINED,
    }


class TestRules:
    def test_first_failure_fires_warning(self) -> None:
        """One failure fires at warning severity."""
        t = Timeline()
        [d] = t.run(Outcome.FAILED, ("a",))
        assert (d.action, d.track.severity, d.track.phase) == (
            Action.FIRE,
            Severity.WARNING,
            Phase.FIRING,
        )
        assert d.track.fingerprint == fingerprint("hourly", FailureClass.TESTS_FAILED)

    def test_repeat_then_escalate_on_the_third(self) -> None:
        """Failures 2 and 3: a repeat, then one escalation to critical, then repeats."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",))
        assert t.actions(Outcome.FAILED, ("a",)) == [("hourly/tests-failed", "repeat")]
        [d] = t.run(Outcome.FAILED, ("a",))
        assert (d.action, d.track.severity, d.track.consecutive) == (
            Action.ESCALATE,
            Severity.CRITICAL,
            3,
        )
        assert t.actions(Outcome.FAILED, ("a",)) == [("hourly/tests-failed", "repeat")]

    def test_failing_set_change_is_flagged(self) -> None:
        """A repeat knows whether the failing tests changed."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",))
        assert not t.run(Outcome.FAILED, ("a",))[0].failing_changed
        assert t.run(Outcome.FAILED, ("a", "b"))[0].failing_changed

    def test_resolve_after_k_greens_and_relapse(self) -> None:
        """Two greens needed to resolve; the next failure is a relapse that fires again."""
        t = Timeline(RulePolicy(escalate_after=3, resolve_after_green=2))
        t.run(Outcome.FAILED, ("a",))
        assert t.actions(Outcome.PASSED) == []
        assert t.actions(Outcome.PASSED) == [("hourly/tests-failed", "resolve")]
        assert t.actions(Outcome.PASSED) == []
        [d] = t.run(Outcome.FAILED, ("a",))
        assert (d.action, d.relapse) == (Action.FIRE, True)

    def test_failure_between_greens_keeps_firing(self) -> None:
        """fail, pass, fail with K=2 never resolves and the streak restarts at 1."""
        t = Timeline(RulePolicy(escalate_after=2, resolve_after_green=2))
        t.run(Outcome.FAILED, ("a",))
        t.run(Outcome.PASSED)
        [d] = t.run(Outcome.FAILED, ("a",))
        assert (d.action, d.track.consecutive, d.track.severity) == (
            Action.REPEAT,
            1,
            Severity.WARNING,
        )

    def test_infra_is_its_own_fingerprint_and_executed_runs_resolve_it(self) -> None:
        """infra-error fires hourly/infra; a run that executed (even failing) resolves it."""
        t = Timeline()
        assert t.actions(Outcome.INFRA_ERROR) == [("hourly/infra", "fire")]
        assert t.actions(Outcome.FAILED, ("a",)) == [
            ("hourly/tests-failed", "fire"),
            ("hourly/infra", "resolve"),
        ]

    def test_infra_never_touches_test_failure_tracks(self) -> None:
        """An infra outcome neither resolves nor repeats the tests-failed alert."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",))
        assert t.actions(Outcome.GPU_UNAVAILABLE) == [("hourly/gpu-unavailable", "fire")]
        assert t.tracks["hourly/tests-failed"].phase is Phase.FIRING
        assert t.tracks["hourly/tests-failed"].last_run_id == 1

    def test_infra_escalates_on_its_own_streak(self) -> None:
        """Three missed slots in a row escalate the missed alert."""
        t = Timeline()
        t.run(Outcome.MISSED)
        t.run(Outcome.MISSED)
        [d] = t.run(Outcome.MISSED)
        assert (d.action, d.track.severity) == (Action.ESCALATE, Severity.CRITICAL)

    def test_timeout_leaves_tests_failed_alone(self) -> None:
        """A timeout does not say the failing tests are fixed: tests-failed stays firing."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",))
        assert t.actions(Outcome.TIMEOUT) == [("hourly/timeout", "fire")]
        assert t.tracks["hourly/tests-failed"].phase is Phase.FIRING
        assert sorted(t.actions(Outcome.PASSED)) == [
            ("hourly/tests-failed", "resolve"),
            ("hourly/timeout", "resolve"),
        ]

    @pytest.mark.parametrize(
        "outcome", [Outcome.CANCELLED, Outcome.SKIPPED_OVERLAP, Outcome.QUEUED]
    )
    def test_never_alerting_outcomes_change_nothing(self, outcome: Outcome) -> None:
        """Cancelled, skipped-overlap and unfinished runs produce no decision at all."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",))
        assert t.run(outcome) == []

    def test_same_run_applied_twice_is_ignored(self) -> None:
        """A repeated event for the same run id (RunFinished + SlotMissed) decides nothing."""
        t = Timeline()
        t.run(Outcome.MISSED)
        obs = Observation(t.run_id, "hourly", Outcome.MISSED)
        assert evaluate(t.tracks, obs, POLICY) == []

    def test_tiers_are_independent(self) -> None:
        """A green in one tier does not resolve another tier's alert."""
        t = Timeline()
        t.run(Outcome.FAILED, ("a",), tier="hourly")
        assert t.run(Outcome.PASSED, tier="daily") == []
        assert t.tracks["hourly/tests-failed"].phase is Phase.FIRING
