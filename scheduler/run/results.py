"""Per-test results from the plugin's JSON lines (or JUnit XML), and the outcome decision.

:func:`classify` is the only place where a run's :class:`~runners.base.Outcome` is decided.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runners.base import RunResult
from scheduler.kernel.outcome import Outcome, Termination
from scheduler.store.engine import TestResultRow

COUNT_KEYS = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass
class ParsedResults:
    """What the results plugin reported; tolerant of a file cut off mid-line by a crash."""

    tests: list[TestResultRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=empty_counts)
    collected: int | None = None
    collect_errors: list[TestResultRow] = field(default_factory=list)
    exitstatus: int | None = None
    source: str = "none"

    @property
    def failing(self) -> list[TestResultRow]:
        return [t for t in self.tests if t.outcome in ("failed", "error")] + self.collect_errors


def test_row(record: dict[str, Any]) -> TestResultRow:
    markers = record.get("markers") or []
    return TestResultRow(
        nodeid=str(record.get("nodeid", "?")),
        outcome=str(record.get("outcome", "error")),
        duration_s=float(record.get("duration_s") or 0.0),
        markers=",".join(markers) if isinstance(markers, list) else str(markers),
        message=record.get("longrepr"),
    )


def parse_jsonl(path: Path) -> ParsedResults:
    parsed = ParsedResults(source="plugin")
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = record.get("type")
            if kind == "test":
                row = test_row(record)
                parsed.tests.append(row)
                if row.outcome in parsed.counts:
                    parsed.counts[row.outcome] += 1
            elif kind == "collection":
                parsed.collected = int(record.get("collected", 0))
            elif kind == "collect_error":
                parsed.collect_errors.append(
                    TestResultRow(
                        str(record.get("nodeid", "")), "error", 0.0, "", record.get("longrepr")
                    )
                )
            elif kind == "session":
                parsed.exitstatus = record.get("exitstatus")
    return parsed


def parse_junit(path: Path) -> ParsedResults:
    parsed = ParsedResults(source="junit")
    # Written by pytest into the run's own dir; expat refuses entity expansion bombs.
    root = ET.parse(path).getroot()  # noqa: S314
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        nodeid = f"{classname.replace('.', '/')}.py::{name}" if classname else name
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "")[:2000]
                break
        parsed.tests.append(
            TestResultRow(nodeid, outcome, float(case.get("time", 0) or 0), "", message)
        )
        parsed.counts[outcome] += 1
    return parsed


def load_results(results_path: Path, junit_path: Path) -> ParsedResults:
    """Prefer the plugin's live JSON lines; fall back to JUnit XML; else nothing."""
    if results_path.exists():
        return parse_jsonl(results_path)
    if junit_path.exists():
        try:
            return parse_junit(junit_path)
        except ET.ParseError:
            return ParsedResults(source="junit-unreadable")
    return ParsedResults()


_PYTEST_EXIT = {
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


class VerdictLike(Protocol):
    """The torchrun comparison's verdict (see :mod:`scheduler.smoketest.compare`)."""

    @property
    def passed(self) -> bool: ...

    reasons: list[str]


def classify(
    result: RunResult, parsed: ParsedResults, verdict: VerdictLike | None = None
) -> tuple[Outcome, str]:
    """Decide the outcome of a finished run and a one-line reason.

    For a torchrun tier, ``verdict`` (the 1-vs-N comparison) decides a run that ended normally.
    """
    termination = result.termination
    if termination is Termination.INFRA:
        return Outcome.INFRA_ERROR, result.message or "the runner could not start the run"
    if termination is Termination.TIMEOUT:
        return Outcome.TIMEOUT, result.message or "run exceeded its timeout and was killed"
    if termination is Termination.OOM:
        return Outcome.OOM, result.message or "killed by the out-of-memory killer"
    if termination is Termination.CANCELLED:
        return Outcome.CANCELLED, result.message or "cancelled"
    if verdict is not None:
        if verdict.passed:
            return Outcome.PASSED, result.message or "smoketest verdict: passed"
        return Outcome.FAILED, "smoketest verdict: failed: " + "; ".join(verdict.reasons)
    code = result.exit_code
    if code in _PYTEST_EXIT:
        outcome, reason = _PYTEST_EXIT[code]
        if outcome is Outcome.FAILED and parsed.failing:
            names = ", ".join(t.nodeid for t in parsed.failing[:3])
            more = f" (+{len(parsed.failing) - 3} more)" if len(parsed.failing) > 3 else ""
            reason = f"{len(parsed.failing)} failing: {names}{more}"
        if outcome is Outcome.ERROR and parsed.collect_errors:
            reason = f"collection error in {parsed.collect_errors[0].nodeid}"
        return outcome, reason
    if code is not None and code < 0:
        return Outcome.ERROR, f"test process killed by signal {-code}"
    return Outcome.ERROR, f"test process exited with unexpected code {code}"
