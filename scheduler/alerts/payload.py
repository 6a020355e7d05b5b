"""The alert message: everything a person needs to act, frozen when the run finished.

An :class:`Alert` is built once by the recorder and stored as JSON in the outbox, so a delivery
retried hours later (or after a restart) says exactly what it said the first time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from scheduler.alerts.rules import Action, Decision, FailureClass, Phase, Severity

MAX_FAILING = 25
MAX_LINE = 240

_HEADLINES: Mapping[FailureClass, str] = {
    FailureClass.TESTS_FAILED: "tests failing",
    FailureClass.ERROR: "pytest error (collection, usage or no tests selected)",
    FailureClass.TIMEOUT: "run timed out",
    FailureClass.OOM: "run killed: out of memory",
    FailureClass.GPU_UNAVAILABLE: "no GPU available (infra)",
    FailureClass.INFRA: "infrastructure error (infra)",
    FailureClass.MISSED: "scheduled slot missed (infra)",
    FailureClass.GPU_DRAINED: "GPU drained by the health check (infra)",
    FailureClass.FLAKY: "flaky tests (failed, then passed on rerun)",
}


@dataclass(frozen=True)
class FailingTest:
    nodeid: str
    outcome: str
    first_line: str = ""
    owner: str = ""
    """Space-separated owners (``@org/team``, ``@user``, e-mail) from CODEOWNERS or config."""


@dataclass(frozen=True)
class RunFacts:
    """What the recorder knows about the run that caused the alert."""

    run_id: int
    outcome: str
    trigger: str = ""
    reason: str = ""
    sha: str | None = None
    ref: str | None = None
    subject: str = ""
    author: str = ""
    host: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    failing: Sequence[FailingTest] = ()
    failing_total: int = 0
    last_green_run_id: int | None = None
    last_green_sha: str | None = None
    changes_since_green: Sequence[str] = ()
    flaky: Sequence[FailingTest] = ()
    """Tests that failed, then passed on rerun, with their owners."""


@dataclass(frozen=True)
class Alert:
    """One message about one fingerprint, as every sink receives it."""

    fingerprint: str
    tier: str
    failure_class: str
    action: str
    state: str
    severity: str
    created_at: str
    run: RunFacts
    consecutive: int = 0
    relapse: bool = False
    failing_changed: bool = False
    show_command: str = ""
    url: str | None = None
    report: str = ""
    """A Markdown report the alert carries (``kind: review`` runs); issue sinks show it whole."""

    @property
    def firing(self) -> bool:
        return self.state == Phase.FIRING.value

    @property
    def headline(self) -> str:
        try:
            return _HEADLINES[FailureClass(self.failure_class)]
        except ValueError:
            return self.failure_class

    @property
    def owners(self) -> tuple[str, ...]:
        """The owners of the failing tests, each once, in order of appearance."""
        seen: dict[str, None] = {}
        for test in self.run.failing:
            for owner in test.owner.split():
                seen.setdefault(owner)
        return tuple(seen)

    @property
    def title(self) -> str:
        """Stable per fingerprint (it names the GitHub issue)."""
        return f"[schedctl] {self.tier}: {self.headline}"

    def summary(self) -> str:
        """One line for notifications and logs."""
        verb = {
            Action.FIRE.value: "relapsed" if self.relapse else "failing",
            Action.REPEAT.value: "still failing",
            Action.ESCALATE.value: f"failing {self.consecutive} runs in a row",
            Action.RESOLVE.value: "recovered",
            Action.TEST.value: "test message",
        }.get(self.action, self.action)
        return (
            f"{self.tier} tier {verb}: {self.headline} "
            f"(run {self.run.run_id}, {self.run.outcome}, severity {self.severity})"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        run = dict(data["run"])
        run["failing"] = tuple(FailingTest(**f) for f in run.get("failing", ()))
        run["changes_since_green"] = tuple(run.get("changes_since_green", ()))
        run["flaky"] = tuple(FailingTest(**f) for f in run.get("flaky", ()))
        return cls(**{**data, "run": RunFacts(**run)})


def first_error_line(message: str | None) -> str:
    """The line a person reads first: pytest's first ``E`` line, else the first non-blank one."""
    if not message:
        return ""
    lines = [line.rstrip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E "):
            return _cap(line[1:].strip())
    return _cap(lines[0].strip()) if lines else ""


def _cap(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def build_alert(
    decision: Decision,
    facts: RunFacts,
    *,
    created_at: datetime,
    public_url: str | None,
) -> Alert:
    """The message for one decision of the rules."""
    track = decision.track
    assert decision.action is not None
    if track.failure_class is FailureClass.FLAKY:
        # The sinks list (and mention the owners of) ``run.failing``: for this class, the flakes.
        flaky = tuple(facts.flaky)
        facts = replace(facts, failing=flaky[:MAX_FAILING], failing_total=len(flaky))
    return Alert(
        fingerprint=track.fingerprint,
        tier=track.tier,
        failure_class=track.failure_class.value,
        action=decision.action.value,
        state=track.phase.value,
        severity=track.severity.value,
        created_at=created_at.isoformat(),
        run=facts,
        consecutive=track.consecutive,
        relapse=decision.relapse,
        failing_changed=decision.failing_changed,
        show_command=f"schedctl show {facts.run_id}",
        url=run_url(public_url, facts.run_id),
    )


def run_url(public_url: str | None, run_id: int) -> str | None:
    return f"{public_url.rstrip('/')}/runs/{run_id}" if public_url else None


def sample_alert(sink: str, *, created_at: datetime, public_url: str | None) -> Alert:
    """The synthetic message ``schedctl alerts test SINK`` sends."""
    facts = RunFacts(run_id=0, outcome="passed", trigger="test", reason=f"test of sink {sink}")
    return Alert(
        fingerprint="schedctl-test",
        tier="test",
        failure_class=FailureClass.TESTS_FAILED.value,
        action=Action.TEST.value,
        state=Phase.FIRING.value,
        severity=Severity.WARNING.value,
        created_at=created_at.isoformat(),
        run=facts,
        show_command="schedctl alerts",
        url=public_url,
    )
