"""The one outcome function: every way a run can end, and the reasons people read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from scheduler.kernel.outcome import (
    Decision,
    Outcome,
    PytestSession,
    RunEnding,
    Stop,
    Termination,
    decide,
)


def finished(exitstatus: int, **kw: object) -> PytestSession:
    return PytestSession(started=True, exitstatus=exitstatus, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, Outcome.PASSED),
        (1, Outcome.FAILED),
        (2, Outcome.ERROR),
        (3, Outcome.ERROR),
        (4, Outcome.ERROR),
        (5, Outcome.NO_TESTS),
        (77, Outcome.ERROR),
    ],
)
def test_pytest_exit_status_maps_to_outcome(code: int, outcome: Outcome) -> None:
    """pytest's exit status decides a finished session; exit 5 is never passed."""
    ending = RunEnding(Termination.EXITED, code, session=finished(code))
    assert decide(ending).outcome is outcome


@pytest.mark.parametrize(
    ("termination", "outcome"),
    [
        (Termination.TIMEOUT, Outcome.TIMEOUT),
        (Termination.OOM, Outcome.OOM),
        (Termination.CANCELLED, Outcome.CANCELLED),
        (Termination.INFRA, Outcome.INFRA_ERROR),
    ],
)
def test_terminations_win_over_exit_codes(termination: Termination, outcome: Outcome) -> None:
    """A timeout killed with 137 is a timeout, never an OOM or a failure."""
    ending = RunEnding(termination, 137, session=finished(0))
    assert decide(ending).outcome is outcome


@pytest.mark.parametrize(
    ("stop", "outcome"),
    [
        (Stop.NEVER_STARTED, Outcome.INFRA_ERROR),
        (Stop.GPU_UNAVAILABLE, Outcome.GPU_UNAVAILABLE),
        (Stop.CANCELLED, Outcome.CANCELLED),
        (Stop.INTERRUPTED, Outcome.INTERRUPTED),
        (Stop.MISSED, Outcome.MISSED),
        (Stop.OVERLAP, Outcome.SKIPPED_OVERLAP),
        (Stop.CRASHED, Outcome.INFRA_ERROR),
        (Stop.PREEMPTED, Outcome.PREEMPTED),
    ],
)
def test_runs_that_stopped_early(stop: Stop, outcome: Outcome) -> None:
    assert decide(stop, "why") == Decision(outcome, "why")
    assert decide(stop).reason  # a default reason, never empty


def test_timeout_names_the_test_that_was_running() -> None:
    session = PytestSession(started=True, running="tests/test_x.py::test_hangs")
    decision = decide(RunEnding(Termination.TIMEOUT, -9, "timed out after 30s", session=session))
    assert decision == Decision(
        Outcome.TIMEOUT, "timed out after 30s; last test running: tests/test_x.py::test_hangs"
    )


@pytest.mark.parametrize("code", [0, 1, 2, 5, -9, None])
def test_no_session_is_never_passed_or_failed(code: int | None) -> None:
    """An exit code alone never proves that tests ran."""
    ending = RunEnding(
        Termination.EXITED, code, session=PytestSession(), log_lines=["something odd"]
    )
    decision = decide(ending)
    assert decision.outcome not in (Outcome.PASSED, Outcome.FAILED)
    assert "something odd" in decision.reason


def test_interpreter_without_pytest_is_an_infra_error() -> None:
    ending = RunEnding(
        Termination.EXITED,
        1,
        session=PytestSession(),
        log_lines=["/opt/venv/bin/python: No module named pytest"],
        interpreter="/opt/venv/bin/python",
    )
    assert decide(ending) == Decision(
        Outcome.INFRA_ERROR,
        "pytest is not importable by /opt/venv/bin/python: No module named pytest",
    )


def test_plugin_that_cannot_load_is_an_infra_error() -> None:
    lines = [
        "Traceback (most recent call last):",
        'ImportError: Error importing plugin "schedctl_results": '
        "No module named 'schedctl_results'",
    ]
    decision = decide(RunEnding(Termination.EXITED, 1, session=PytestSession(), log_lines=lines))
    assert decision.outcome is Outcome.INFRA_ERROR
    assert "results plugin could not be loaded" in decision.reason
    assert "No module named 'schedctl_results'" in decision.reason


def test_conftest_import_error_names_the_cause() -> None:
    """pytest exits 4 for it; the reason is the import error, not 'usage error (exit 4)'."""
    lines = [
        "ImportError while loading conftest '/work/src/tests/conftest.py'.",
        "tests/conftest.py:1: in <module>",
        "    import not_installed_dep",
        "E   ModuleNotFoundError: No module named 'not_installed_dep'",
    ]
    decision = decide(RunEnding(Termination.EXITED, 4, session=PytestSession(), log_lines=lines))
    assert decision == Decision(
        Outcome.ERROR,
        "ImportError while loading conftest '/work/src/tests/conftest.py': "
        "ModuleNotFoundError: No module named 'not_installed_dep'",
    )


def test_usage_error_quotes_pytest() -> None:
    lines = [
        "ERROR: usage: python3 -m pytest [options] [file_or_dir] [file_or_dir] [...]",
        "python3 -m pytest: error: unrecognized arguments: --bogus",
    ]
    decision = decide(RunEnding(Termination.EXITED, 4, session=PytestSession(), log_lines=lines))
    assert decision.outcome is Outcome.ERROR
    assert decision.reason.startswith("pytest usage error (exit code 4): ERROR: usage:")


def test_session_that_never_finished_is_an_error() -> None:
    """A test that calls os._exit(0) mid-run ends pytest without a session record."""
    session = PytestSession(started=True, running="t.py::test_exits")
    decision = decide(RunEnding(Termination.EXITED, 0, session=session))
    assert decision == Decision(
        Outcome.ERROR,
        "pytest ended before finishing its session (exit code 0) while running t.py::test_exits",
    )


def test_forged_session_record_does_not_pass_a_failing_process() -> None:
    """A test that writes its own ``exitstatus: 0`` line cannot turn exit 1 into passed."""
    decision = decide(RunEnding(Termination.EXITED, 1, session=finished(0)))
    assert decision.outcome is Outcome.ERROR
    assert "disagrees" in decision.reason


def test_exit_zero_with_failing_tests_recorded_is_not_passed() -> None:
    decision = decide(RunEnding(Termination.EXITED, 0, session=finished(0, failing=["t.py::x"])))
    assert decision.outcome is Outcome.ERROR


def test_failed_reason_lists_at_most_three() -> None:
    failing = [f"t.py::t{i}" for i in range(5)]
    decision = decide(RunEnding(Termination.EXITED, 1, session=finished(1, failing=failing)))
    assert decision.reason == "5 failing: t.py::t0, t.py::t1, t.py::t2 (+2 more)"


def test_collection_error_is_named() -> None:
    session = finished(2, collect_errors=["tests/test_broken.py"])
    decision = decide(RunEnding(Termination.EXITED, 2, session=session))
    assert decision == Decision(Outcome.ERROR, "collection error in tests/test_broken.py")


@dataclass
class Verdict:
    passed: bool
    reasons: Sequence[str] = field(default_factory=list)


def test_smoketest_verdict_decides_a_torchrun_run() -> None:
    assert decide(RunEnding(Termination.EXITED, 0, verdict=Verdict(True))).outcome is Outcome.PASSED
    failed = decide(RunEnding(Termination.EXITED, 0, verdict=Verdict(False, ["loss differs"])))
    assert failed == Decision(Outcome.FAILED, "smoketest verdict: failed: loss differs")


@pytest.mark.parametrize(
    ("code", "outcome"), [(0, Outcome.PASSED), (1, Outcome.FAILED), (-11, Outcome.ERROR)]
)
def test_kind_without_session_or_verdict_goes_by_exit_code(code: int, outcome: Outcome) -> None:
    assert decide(RunEnding(Termination.EXITED, code)).outcome is outcome
