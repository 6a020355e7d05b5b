"""Parsing plugin output and deciding outcomes in one place."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runners.base import RunResult
from scheduler.kernel.outcome import Outcome, Termination
from scheduler.run.results import ParsedResults, classify, load_results, parse_jsonl

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def result(termination: Termination = Termination.EXITED, code: int | None = 0) -> RunResult:
    return RunResult(termination, code, T0, T0)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, Outcome.PASSED),
        (1, Outcome.FAILED),
        (2, Outcome.ERROR),
        (3, Outcome.ERROR),
        (4, Outcome.ERROR),
        (5, Outcome.NO_TESTS),
        (-11, Outcome.ERROR),
        (77, Outcome.ERROR),
    ],
)
def test_exit_codes(code: int, outcome: Outcome) -> None:
    """pytest exit codes map to outcomes; exit 5 is never passed."""
    assert classify(result(code=code), ParsedResults())[0] is outcome


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
    assert classify(result(termination, 137), ParsedResults())[0] is outcome


def test_failed_reason_names_tests(tmp_path: Path) -> None:
    """The reason of a failed run lists the failing node ids."""
    path = tmp_path / "results.jsonl"
    lines = [
        {"type": "collection", "collected": 2},
        {
            "type": "test",
            "nodeid": "t.py::ok",
            "outcome": "passed",
            "duration_s": 0.1,
            "markers": ["hourly"],
        },
        {
            "type": "test",
            "nodeid": "t.py::bad",
            "outcome": "failed",
            "duration_s": 0.2,
            "markers": [],
            "longrepr": "assert 1 == 2",
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"type": "te')
    parsed = parse_jsonl(path)
    assert parsed.counts["passed"] == 1 and parsed.counts["failed"] == 1
    assert parsed.collected == 2
    assert parsed.tests[0].markers == "hourly"
    outcome, reason = classify(result(code=1), parsed)
    assert outcome is Outcome.FAILED and reason == "1 failing: t.py::bad"


def test_junit_fallback(tmp_path: Path) -> None:
    """Without plugin output, JUnit XML provides the per-test results."""
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_a" name="test_x" time="0.5"/>'
        '<testcase classname="tests.test_a" name="test_y" time="0.1"><failure message="boom"/>'
        "</testcase></testsuite></testsuites>"
    )
    parsed = load_results(tmp_path / "results.jsonl", tmp_path / "junit.xml")
    assert parsed.source == "junit"
    assert [(t.nodeid, t.outcome) for t in parsed.tests] == [
        ("tests/test_a.py::test_x", "passed"),
        ("tests/test_a.py::test_y", "failed"),
    ]
