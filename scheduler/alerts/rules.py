"""When to alert: fire, repeat, escalate and resolve per fingerprint (tier + failure class).

Pure functions over plain data; :mod:`scheduler.alerts.recorder` loads and saves the state.

* Every failing outcome maps to one :class:`FailureClass`; ``cancelled`` and ``skipped-overlap``
  (and unfinished outcomes) never alert and change nothing.
* Code classes (tests-failed, error, timeout, oom) escalate on the tier's streak of test-failure
  runs, so ``failed, timeout, failed`` is three in a row, as a person would count. Infra outcomes
  neither count in nor break that streak (same rule as ``Store.consecutive_failures``).
* Infra classes (gpu-unavailable, infra, missed) escalate on their own streak and never alert as
  test failures. A run that executed (passed or failed) proves the infra works again, so it counts
  as a green for them.
* Only a passed run is green for code classes; a ``timeout`` says nothing about whether the
  ``tests-failed`` set is fixed, so it leaves that fingerprint as it is.
* Severity never drops while an alert fires; resolution needs ``resolve_after_green`` greens.
* ``flaky`` (tests that failed, then passed on rerun) is its own class at ``info`` severity: it
  fires for every executed run with flaky tests (a pass under ``flaky_fails_tier: false``, or a
  failure caused only by flakes under ``true``), never escalates, never counts as a code failure
  (a flaky-only failure is no green for tests-failed either, like a timeout) and resolves after
  ``resolve_after_green`` executed runs without flaky tests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scheduler.kernel.outcome import Outcome


class FailureClass(str, enum.Enum):
    """What kind of failure an alert is about; part of its fingerprint."""

    TESTS_FAILED = "tests-failed"
    ERROR = "error"
    TIMEOUT = "timeout"
    OOM = "oom"
    GPU_UNAVAILABLE = "gpu-unavailable"
    INFRA = "infra"
    MISSED = "missed"
    GPU_DRAINED = "gpu-drained"
    """Not a run's: the health check drained a GPU (tier ``gpu``, see :mod:`.drains`)."""
    FLAKY = "flaky"
    """Tests that failed, then passed on rerun; ``info``, never escalated."""

    @property
    def is_infra(self) -> bool:
        """True when it says nothing about the code under test: the class of infra outcomes
        (:attr:`Outcome.is_infra`), or a drained GPU."""
        return self in _INFRA_CLASSES


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Action(str, enum.Enum):
    """What a decision asks the sinks to do."""

    FIRE = "fire"
    REPEAT = "repeat"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    TEST = "test"


class Phase(str, enum.Enum):
    """``alert_state.state``."""

    FIRING = "firing"
    RESOLVED = "resolved"


_CLASS_OF: Mapping[Outcome, FailureClass] = {
    Outcome.FAILED: FailureClass.TESTS_FAILED,
    Outcome.ERROR: FailureClass.ERROR,
    # Exit 5: the tier's selection matched nothing; a setup problem, never a pass.
    Outcome.NO_TESTS: FailureClass.ERROR,
    Outcome.TIMEOUT: FailureClass.TIMEOUT,
    Outcome.OOM: FailureClass.OOM,
    Outcome.GPU_UNAVAILABLE: FailureClass.GPU_UNAVAILABLE,
    Outcome.INFRA_ERROR: FailureClass.INFRA,
    Outcome.INTERRUPTED: FailureClass.INFRA,
    Outcome.MISSED: FailureClass.MISSED,
}


_INFRA_CLASSES = frozenset(
    {cls for outcome, cls in _CLASS_OF.items() if outcome.is_infra} | {FailureClass.GPU_DRAINED}
)


def failure_class(outcome: Outcome) -> FailureClass | None:
    """The class a failing outcome alerts as; ``None`` for passed and never-alerting outcomes."""
    return _CLASS_OF.get(outcome)


def is_relevant(outcome: Outcome) -> bool:
    """False for outcomes that never touch alert state (cancelled, overlap skips, unfinished)."""
    return outcome is Outcome.PASSED or outcome in _CLASS_OF


def fingerprint(tier: str, cls: FailureClass) -> str:
    """Stable identity of an alert: one GitHub issue, one Alertmanager alert per fingerprint."""
    return f"{tier}/{cls.value}"


@dataclass(frozen=True)
class RulePolicy:
    """The thresholds from ``alerts`` in the config."""

    escalate_after: int = 3
    resolve_after_green: int = 1


@dataclass(frozen=True)
class Observation:
    """One finished run as the rules see it.

    :ivar streak: the tier's consecutive test-failure runs up to and including this one.
    :ivar failing: node ids of the failing tests, sorted.
    :ivar flaky: node ids of the tests that failed, then passed on rerun, sorted.
    """

    run_id: int
    tier: str
    outcome: Outcome
    streak: int = 0
    failing: tuple[str, ...] = ()
    flaky: tuple[str, ...] = ()

    @property
    def failure_class(self) -> FailureClass | None:
        """``flaky`` for a failed run whose only failures are flakes (``flaky_fails_tier``)."""
        if self.outcome is Outcome.FAILED and self.flaky and not self.failing:
            return FailureClass.FLAKY
        return failure_class(self.outcome)


@dataclass(frozen=True)
class Track:
    """The state of one fingerprint (a row of ``alert_state``)."""

    fingerprint: str
    tier: str
    failure_class: FailureClass
    phase: Phase
    severity: Severity = Severity.WARNING
    consecutive: int = 0
    greens: int = 0
    last_run_id: int | None = None
    failing: tuple[str, ...] = ()

    def seen(self, run_id: int) -> bool:
        """True when this run (or a later one) was already applied: events may repeat."""
        return self.last_run_id is not None and self.last_run_id >= run_id


@dataclass(frozen=True)
class Decision:
    """A track's new state and, when the sinks must hear about it, the action."""

    track: Track
    action: Action | None
    failing_changed: bool = False
    relapse: bool = False


def evaluate(tracks: Mapping[str, Track], obs: Observation, policy: RulePolicy) -> list[Decision]:
    """Apply one run to the tier's tracks; returns every track that changed."""
    if not is_relevant(obs.outcome):
        return []
    cls = obs.failure_class
    decisions: list[Decision] = []
    if cls is not None and cls is not FailureClass.FLAKY:
        failed = _on_failure(tracks.get(fingerprint(obs.tier, cls)), cls, obs, policy)
        if failed is not None:
            decisions.append(failed)
    executed = cls is None or not cls.is_infra
    flaky_key = fingerprint(obs.tier, FailureClass.FLAKY)
    for track in _tier_tracks(tracks, obs.tier):
        if track.failure_class in (cls, FailureClass.FLAKY) or track.seen(obs.run_id):
            continue
        if cls is None or (executed and track.failure_class.is_infra):
            decisions.append(_on_green(track, obs.run_id, policy))
    flaky = tracks.get(flaky_key)
    # A timeout or an error may have cut the reruns short: only a verdict says "no flakes".
    verdict = obs.outcome in (Outcome.PASSED, Outcome.FAILED)
    if executed and obs.flaky:
        flaked = _on_failure(flaky, FailureClass.FLAKY, obs, policy)
        if flaked is not None:
            decisions.append(flaked)
    elif verdict and flaky is not None and not flaky.seen(obs.run_id):
        decisions.append(_on_green(flaky, obs.run_id, policy))
    return decisions


def _tier_tracks(tracks: Mapping[str, Track], tier: str) -> Sequence[Track]:
    return sorted((t for t in tracks.values() if t.tier == tier), key=lambda t: t.fingerprint)


def _on_failure(
    old: Track | None, cls: FailureClass, obs: Observation, policy: RulePolicy
) -> Decision | None:
    if old is not None and old.seen(obs.run_id):
        return None
    firing = old is not None and old.phase is Phase.FIRING
    if cls.is_infra or cls is FailureClass.FLAKY:
        consecutive = (old.consecutive if old is not None and firing else 0) + 1
    else:
        consecutive = max(obs.streak, 1)
    severity = Severity.CRITICAL if consecutive >= policy.escalate_after else Severity.WARNING
    if firing and old is not None and old.severity is Severity.CRITICAL:
        severity = Severity.CRITICAL
    if cls is FailureClass.FLAKY:
        severity = Severity.INFO
    failing = obs.flaky if cls is FailureClass.FLAKY else obs.failing
    track = Track(
        fingerprint=fingerprint(obs.tier, cls),
        tier=obs.tier,
        failure_class=cls,
        phase=Phase.FIRING,
        severity=severity,
        consecutive=consecutive,
        greens=0,
        last_run_id=obs.run_id,
        failing=failing,
    )
    if not firing or old is None:
        return Decision(track, Action.FIRE, failing_changed=True, relapse=old is not None)
    changed = old.failing != failing
    if old.severity is Severity.WARNING and severity is Severity.CRITICAL:
        return Decision(track, Action.ESCALATE, failing_changed=changed)
    return Decision(track, Action.REPEAT, failing_changed=changed)


def _on_green(track: Track, run_id: int, policy: RulePolicy) -> Decision:
    if track.phase is not Phase.FIRING:
        return Decision(replace(track, consecutive=0, greens=0, last_run_id=run_id), None)
    greens = track.greens + 1
    if greens < policy.resolve_after_green:
        return Decision(replace(track, consecutive=0, greens=greens, last_run_id=run_id), None)
    resolved = replace(
        track, phase=Phase.RESOLVED, consecutive=0, greens=greens, last_run_id=run_id
    )
    return Decision(resolved, Action.RESOLVE)
