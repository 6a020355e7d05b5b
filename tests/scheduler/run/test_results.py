"""Parsing the results plugin's output (JSON lines, JUnit fallback), defensively."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.kernel.outcome import Decision, Outcome, RunEnding, Termination, decide
from scheduler.run.results import load_results, parse_jsonl


def test_failed_reason_names_tests(tmp_path: Path) -> None:
    """The reason of a failed run lists the failing node ids."""
    path = tmp_path / "results.jsonl"
    lines = [
        {"type": "start", "pytest_version": "8", "python": "3", "pid": 1},
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
    lines += [{"type": "session", "exitstatus": 1}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"type": "te')
    parsed = parse_jsonl(path)
    assert parsed.counts["passed"] == 1 and parsed.counts["failed"] == 1
    assert parsed.collected == 2
    assert parsed.tests[0].markers == "hourly"
    decision = decide(RunEnding(Termination.EXITED, 1, session=parsed.session(1)))
    assert decision == Decision(Outcome.FAILED, "1 failing: t.py::bad")


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


def test_hostile_lines_are_skipped_or_neutralised(tmp_path: Path) -> None:
    """Lines a test process wrote are untrusted: junk types, NaN durations and non-dict JSON
    neither crash the parser nor pass as a finished session."""
    path = tmp_path / "results.jsonl"
    path.write_text(
        "\n".join(
            [
                "[1, 2, 3]",
                '"just a string"',
                json.dumps({"type": "start"}),
                json.dumps({"type": "test_start", "nodeid": "t.py::hang"}),
                json.dumps(
                    {
                        "type": "test",
                        "nodeid": "t.py::x",
                        "outcome": "passed",
                        "duration_s": "NaN",
                        "markers": [1, None],
                        "longrepr": {"a": 1},
                    }
                ),
                json.dumps({"type": "session", "exitstatus": "0"}),
                json.dumps({"type": "collection", "collected": "lots"}),
            ]
        )
    )
    parsed = parse_jsonl(path)
    assert parsed.tests[0].duration_s == 0.0
    assert parsed.tests[0].markers == "1,None"
    assert parsed.tests[0].message == "{'a': 1}"
    assert parsed.collected == 0
    session = parsed.session(0)
    assert session.started and session.running == "t.py::hang"
    assert session.exitstatus == -1  # a non-integer status is no status
    assert decide(RunEnding(Termination.EXITED, 0, session=session)).outcome is Outcome.ERROR


@pytest.mark.parametrize("exit_code", [0, 1])
def test_junit_fallback_session_ends_with_the_exit_code(tmp_path: Path, exit_code: int) -> None:
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite><testcase classname="a" name="x" time="0.5"/>'
        "</testsuite></testsuites>"
    )
    parsed = load_results(tmp_path / "results.jsonl", tmp_path / "junit.xml")
    session = parsed.session(exit_code)
    assert session.started and session.exitstatus == exit_code
