"""How a run ended: the one ``Outcome`` enum and :func:`decide`, the one function that picks it.

Every final outcome in schedctl comes from :func:`decide`: a finished process (what the runner
saw, what pytest's results plugin reported, what the log says) or a run that stopped before its
process could finish (:class:`Stop`: never started, GPUs unavailable, cancelled, interrupted,
missed, overlapping).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol


class Outcome(str, enum.Enum):
    """How a run ended; one enum for the store, metrics labels, alerts and exit codes."""

    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    NO_TESTS = "no-tests"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    GPU_UNAVAILABLE = "gpu-unavailable"
    INFRA_ERROR = "infra-error"
    INTERRUPTED = "interrupted"
    SKIPPED_OVERLAP = "skipped-overlap"
    MISSED = "missed"
    PREEMPTED = "preempted"
    """Stopped to free its GPUs for a tier that preempts it; re-queued to run after."""

    @property
    def is_final(self) -> bool:
        return self not in (Outcome.QUEUED, Outcome.RUNNING)

    @property
    def is_infra(self) -> bool:
        """Outcomes that say nothing about the code under test."""
        return self in INFRA_OUTCOMES

    @property
    def is_test_evidence(self) -> bool:
        """Whether the run's per-test results count in test history (pass rates, flakiness).

        A run killed as a whole (timeout, OOM) or stopped by infrastructure says nothing about
        its tests: the test that was running when it died did not fail on its own.
        """
        return self in (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.NO_TESTS)

    @property
    def is_test_failure(self) -> bool:
        return self in (
            Outcome.FAILED,
            Outcome.ERROR,
            Outcome.NO_TESTS,
            Outcome.TIMEOUT,
            Outcome.OOM,
        )


INFRA_OUTCOMES = frozenset(
    {
        Outcome.GPU_UNAVAILABLE,
        Outcome.INFRA_ERROR,
        Outcome.INTERRUPTED,
        Outcome.MISSED,
        Outcome.CANCELLED,
        Outcome.SKIPPED_OVERLAP,
        Outcome.PREEMPTED,
    }
)


class Termination(str, enum.Enum):
    """Why the process under test stopped, as the runner saw it."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    INFRA = "infra"
    SCHEDULER = "scheduler"
    """A batch scheduler (Slurm) ended or never started the job: ``scheduler_state`` says how."""


class Stop(str, enum.Enum):
    """Why a run ended before (or without) its process finishing under the runner."""

    NEVER_STARTED = "never-started"
    """schedctl could not start it: source, runner or engine trouble."""
    GPU_UNAVAILABLE = "gpu-unavailable"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """The process that owned the run died mid-run."""
    CRASHED = "crashed"
    """schedctl's own code failed while carrying the run."""
    MISSED = "missed"
    OVERLAP = "overlap"
    PREEMPTED = "preempted"


_STOPS: dict[Stop, tuple[Outcome, str]] = {
    Stop.NEVER_STARTED: (Outcome.INFRA_ERROR, "schedctl could not start the run"),
    Stop.GPU_UNAVAILABLE: (Outcome.GPU_UNAVAILABLE, "the GPUs the tier needs were not free"),
    Stop.CANCELLED: (Outcome.CANCELLED, "cancelled"),
    Stop.INTERRUPTED: (Outcome.INTERRUPTED, "the schedctl process owning the run died"),
    Stop.CRASHED: (Outcome.INFRA_ERROR, "schedctl crashed while carrying the run"),
    Stop.MISSED: (Outcome.MISSED, "the slot was not run"),
    Stop.OVERLAP: (Outcome.SKIPPED_OVERLAP, "the tier was already running"),
    Stop.PREEMPTED: (Outcome.PREEMPTED, "stopped to free its GPUs for a preempting tier"),
}


@dataclass(frozen=True)
class PytestSession:
    """What the results plugin reported about pytest's session (untrusted: written by the tests).

    ``started`` is true once pytest loaded the plugin and began its session; ``exitstatus`` is the
    session's own exit status, ``None`` when pytest never finished it (killed, crashed, os._exit).
    """

    started: bool = False
    exitstatus: int | None = None
    failing: Sequence[str] = ()
    collect_errors: Sequence[str] = ()
    running: str | None = None
    """The test that had started and not finished when the record ends."""
    reported_counts: Mapping[str, int] | None = None
    """The session record's per-outcome counts (``None``: it gave none, e.g. JUnit)."""
    seen_counts: Mapping[str, int] | None = None
    """Per-outcome counts of the test lines actually seen."""
    flaky: Sequence[str] = ()
    """Tests that failed and then passed on a rerun in the same run (no longer in ``failing``)."""
    quarantined: Sequence[str] = ()
    """Those of ``failing`` under quarantine: recorded, but they do not fail the run."""


class VerdictLike(Protocol):
    """The torchrun comparison's verdict (see :mod:`scheduler.smoketest.compare`)."""

    @property
    def passed(self) -> bool: ...

    @property
    def reasons(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class BuildReport:
    """What an image build (``kind: build``) produced: the image, or the builder's error line."""

    image_id: str | None = None
    error: str = ""


@dataclass(frozen=True)
class RunEnding:
    """How a run's process ended: what the runner saw, what pytest reported, what the log says.

    ``session`` is ``None`` for kinds that run no pytest (torchrun: ``verdict`` decides instead;
    an image build: ``build``).
    """

    termination: Termination
    exit_code: int | None = None
    message: str = ""
    session: PytestSession | None = None
    verdict: VerdictLike | None = None
    build: BuildReport | None = None
    log_lines: Sequence[str] = ()
    """The first lines of the run's log: they explain a run pytest never began."""
    interpreter: str = ""
    scheduler_state: str = ""
    """With ``Termination.SCHEDULER``: the batch scheduler's job state (Slurm: ``TIMEOUT``,
    ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``PREEMPTED``, ``CANCELLED`` by someone else, ``PENDING``
    past the GPU wait, ...); ``message`` carries the scheduler's reason."""
    flaky_fails: bool = False
    """The tier's ``flaky_fails_tier``: a flaky test fails the run (default: it passes)."""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


_PYTEST_EXIT: dict[int, tuple[Outcome, str]] = {
    0: (Outcome.PASSED, "all selected tests passed"),
    1: (Outcome.FAILED, "tests failed"),
    2: (
        Outcome.ERROR,
        "test run interrupted (pytest exit 2: collection error or KeyboardInterrupt)",
    ),
    3: (Outcome.ERROR, "internal pytest error (exit 3)"),
    4: (Outcome.ERROR, "pytest usage error (exit 4)"),
    5: (Outcome.NO_TESTS, "no tests were collected/selected (pytest exit 5)"),
}


def decide(ending: RunEnding | Stop, detail: str = "") -> Decision:
    """The one place that turns how a run ended into its outcome and a one-line reason.

    An exit code alone never proves that tests ran: a pytest run whose plugin reported no session
    is ``infra-error`` (pytest or the plugin could not load) or ``error`` (pytest refused the
    project: conftest import error, usage error), explained by the log; it is never ``passed``
    nor ``failed``. ``passed`` needs the process exit code and the session record to agree, and
    the session's counts to equal the test lines seen.
    """
    if isinstance(ending, Stop):
        outcome, default = _STOPS[ending]
        return Decision(outcome, detail or default)
    termination = ending.termination
    if termination is Termination.INFRA:
        return Decision(Outcome.INFRA_ERROR, ending.message or "the runner could not start the run")
    if termination is Termination.TIMEOUT:
        return Decision(
            Outcome.TIMEOUT, _with_running(ending, "run exceeded its timeout and was killed")
        )
    if termination is Termination.OOM:
        return Decision(Outcome.OOM, _with_running(ending, "killed by the out-of-memory killer"))
    if termination is Termination.CANCELLED:
        return Decision(Outcome.CANCELLED, detail or ending.message or "cancelled")
    if termination is Termination.SCHEDULER:
        return _by_scheduler_state(ending)
    if ending.verdict is not None:
        if ending.verdict.passed:
            return Decision(Outcome.PASSED, ending.message or "smoketest verdict: passed")
        return Decision(
            Outcome.FAILED, "smoketest verdict: failed: " + "; ".join(ending.verdict.reasons)
        )
    if ending.build is not None:
        if ending.build.image_id:
            return Decision(Outcome.PASSED, f"built image {ending.build.image_id}")
        cause = ending.build.error or _exit_text(ending.exit_code)
        return Decision(Outcome.FAILED, f"image build failed: {_clip(cause)}")
    session = ending.session
    if session is None:
        return _by_exit_code(ending.exit_code)
    if not session.started:
        return _never_began(ending)
    if session.exitstatus is None:
        running = f" while running {session.running}" if session.running else ""
        return Decision(
            Outcome.ERROR,
            f"pytest ended before finishing its session ({_exit_text(ending.exit_code)}){running}",
        )
    return _from_session(session, ending.exit_code, ending.flaky_fails)


_SCHEDULER_STATES: dict[str, tuple[Outcome, str]] = {
    "TIMEOUT": (Outcome.TIMEOUT, "Slurm ended the job at its time limit"),
    "DEADLINE": (Outcome.TIMEOUT, "Slurm ended the job at its deadline"),
    "OUT_OF_MEMORY": (Outcome.OOM, "Slurm killed the job: it exceeded its memory limit"),
    "NODE_FAIL": (Outcome.INFRA_ERROR, "a node of the job failed"),
    "BOOT_FAIL": (Outcome.INFRA_ERROR, "a node of the job failed to boot"),
    "LAUNCH_FAILED": (Outcome.INFRA_ERROR, "Slurm could not launch the job"),
    "PREEMPTED": (Outcome.PREEMPTED, "Slurm preempted the job"),
    "CANCELLED": (Outcome.INFRA_ERROR, "the Slurm job was cancelled outside schedctl"),
    "PENDING": (
        Outcome.GPU_UNAVAILABLE,
        "Slurm did not start the job within gpu.wait (the resources it asks for were not free)",
    ),
}


def _by_scheduler_state(ending: RunEnding) -> Decision:
    """A job the batch scheduler ended (or never started): its state decides, never pytest."""
    state = ending.scheduler_state.upper()
    outcome, default = _SCHEDULER_STATES.get(
        state, (Outcome.INFRA_ERROR, f"the Slurm job ended in state {state or 'unknown'}")
    )
    reason = f"{default}: {ending.message}" if ending.message else default
    if outcome in (Outcome.TIMEOUT, Outcome.OOM):
        reason = _with_running(replace(ending, message=reason), reason)
    return Decision(outcome, _clip(reason))


def _from_session(session: PytestSession, exit_code: int | None, flaky_fails: bool) -> Decision:
    status = session.exitstatus
    if status != exit_code:
        return Decision(
            Outcome.ERROR,
            f"pytest's {_exit_text(exit_code)} disagrees with its session record "
            f"(exitstatus {status}): the test process exited on its own terms",
        )
    if status not in _PYTEST_EXIT:
        return Decision(Outcome.ERROR, f"pytest ended with unexpected exit status {status}")
    outcome, reason = _PYTEST_EXIT[status]
    mismatch = _count_mismatch(session) if outcome is Outcome.PASSED else ""
    if mismatch:
        return Decision(
            Outcome.ERROR, f"the session record's counts disagree with its test lines: {mismatch}"
        )
    if outcome is Outcome.PASSED and (session.failing or session.collect_errors):
        return Decision(
            Outcome.ERROR,
            "pytest exited 0 but the results record failing tests: "
            + ", ".join([*session.collect_errors, *session.failing][:3]),
        )
    if outcome is Outcome.FAILED and not session.collect_errors:
        forgiven = _forgiven(session, flaky_fails)
        if forgiven is not None:
            return forgiven
    if outcome is Outcome.FAILED and session.failing:
        blocking = [n for n in session.failing if n not in session.quarantined] or list(
            session.failing
        )
        reason = f"{len(blocking)} failing: {_names(blocking)}"
        if len(blocking) < len(session.failing):
            reason += f"; {len(session.failing) - len(blocking)} quarantined"
    elif outcome is Outcome.ERROR and session.collect_errors:
        reason = f"collection error in {session.collect_errors[0]}"
    return Decision(outcome, reason)


def _count_mismatch(session: PytestSession) -> str:
    """``""`` when the session's counts equal the test lines seen, else the differences."""
    reported, seen = session.reported_counts, session.seen_counts
    if reported is None or seen is None:
        return ""
    keys = sorted(set(reported) | set(seen))
    diffs = [
        f"{k} {reported.get(k, 0)} reported, {seen.get(k, 0)} seen"
        for k in keys
        if reported.get(k, 0) != seen.get(k, 0)
    ]
    return "; ".join(diffs)


def _forgiven(session: PytestSession, flaky_fails: bool) -> Decision | None:
    """pytest exited 1, but every failure was a flake (passed on rerun) or is quarantined."""
    quarantined = [n for n in session.failing if n in session.quarantined]
    if len(quarantined) < len(session.failing) or not (session.failing or session.flaky):
        return None
    if session.flaky and flaky_fails:
        return Decision(
            Outcome.FAILED,
            f"{len(session.flaky)} flaky (failed, then passed on rerun; flaky_fails_tier): "
            + _names(session.flaky),
        )
    parts = []
    if session.flaky:
        parts.append(
            f"{len(session.flaky)} flaky (failed, then passed on rerun): " + _names(session.flaky)
        )
    if quarantined:
        parts.append(f"{len(quarantined)} quarantined failing: " + _names(quarantined))
    return Decision(Outcome.PASSED, "passed with " + "; ".join(parts))


def _names(nodeids: Sequence[str]) -> str:
    more = f" (+{len(nodeids) - 3} more)" if len(nodeids) > 3 else ""
    return ", ".join(nodeids[:3]) + more


def _by_exit_code(code: int | None) -> Decision:
    """A kind with no session record and no verdict: only the exit code speaks."""
    if code == 0:
        return Decision(Outcome.PASSED, "exited 0")
    return Decision(Outcome.FAILED if code == 1 else Outcome.ERROR, _exit_text(code))


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _with_running(ending: RunEnding, default: str) -> str:
    reason = ending.message or default
    session = ending.session
    if session is not None and session.running:
        reason += f"; last test running: {session.running}"
    return reason


def _never_began(ending: RunEnding) -> Decision:
    """pytest never began a session: say why, from the log, and whose problem it is."""
    lines = [line.rstrip() for line in ending.log_lines if line.strip()]
    python = ending.interpreter or "the interpreter"
    exit_text = _exit_text(ending.exit_code)
    if any(_NO_PYTEST.search(line) for line in lines):
        return Decision(
            Outcome.INFRA_ERROR, f"pytest is not importable by {python}: No module named pytest"
        )
    plugin = next((line for line in lines if "Error importing plugin" in line), None)
    if plugin is not None:
        return Decision(
            Outcome.INFRA_ERROR,
            f"the results plugin could not be loaded ({exit_text}): {_clip(plugin)}",
        )
    conftest = next((line for line in lines if "while loading conftest" in line), None)
    if conftest is not None:
        cause = _last_error_line(lines)
        return Decision(
            Outcome.ERROR, _clip(conftest.rstrip(".") + (f": {cause}" if cause else ""))
        )
    usage = next((line for line in lines if _USAGE.search(line)), None)
    if usage is not None:
        return Decision(Outcome.ERROR, f"pytest usage error ({exit_text}): {_clip(usage)}")
    cause = _last_error_line(lines) or (lines[0] if lines else "the log is empty")
    return Decision(
        Outcome.INFRA_ERROR,
        f"pytest never started its session ({exit_text}): {_clip(cause)}",
    )


_NO_PYTEST = re.compile(r"No module named '?pytest'?\s*$")
_USAGE = re.compile(r"^(ERROR: |\S*: error: |pytest: error: )")
_ERROR_LINE = re.compile(r"^(E\s+)?([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*)$")


def _last_error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(2)
    return ""


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
