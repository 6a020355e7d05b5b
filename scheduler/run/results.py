"""Per-test results from the plugin's JSON lines (or JUnit XML), read defensively.

Everything here was written by the process under test: a line that does not parse or a field of
the wrong type is skipped or neutralised, and nothing here decides an outcome alone (that is
:func:`scheduler.kernel.outcome.decide`, which also weighs the runner's own observation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from scheduler.kernel.outcome import PytestSession
from scheduler.store.records import TestResultRow

MESSAGE_LIMIT = 8000
COUNT_KEYS = ("passed", "failed", "skipped", "error", "xfailed", "xpassed", "flaky")


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
    started: bool = False
    running: str | None = None
    source: str = "none"
    ignored_lines: int = 0
    """Lines without the run's nonce: written by something other than the results plugin."""
    reported_counts: dict[str, int] | None = None
    """The session line's own per-outcome counts, to hold against the test lines seen."""
    quarantined: frozenset[str] = frozenset()
    """Failing tests under quarantine: recorded, but they do not fail the tier."""

    @property
    def failing(self) -> list[TestResultRow]:
        return [
            t for t in self.tests if t.final and t.outcome in ("failed", "error")
        ] + self.collect_errors

    def session(self, exit_code: int | None) -> PytestSession:
        """The session record the outcome decision weighs.

        JUnit XML is written only by a pytest that finished its session: a JUnit fallback (the
        plugin's lines are missing) counts as a session that ended with the process's exit code.
        """
        junit = self.source == "junit"
        failing = [t.nodeid for t in self.tests if t.final and t.outcome in ("failed", "error")]
        return PytestSession(
            started=self.started or junit,
            exitstatus=exit_code if junit else self.exitstatus,
            failing=failing,
            collect_errors=[t.nodeid for t in self.collect_errors],
            running=self.running,
            reported_counts=self.reported_counts,
            seen_counts=dict(self.counts),
            flaky=[t.nodeid for t in self.tests if t.final and t.outcome == "flaky"],
            quarantined=[n for n in failing if n in self.quarantined],
        )


def test_row(record: dict[str, Any]) -> TestResultRow:
    markers = record.get("markers") or []
    peak, start = _bytes(record.get("peak_rss_bytes")), _bytes(record.get("start_rss_bytes"))
    method = record.get("rss_method")
    return TestResultRow(
        nodeid=str(record.get("nodeid", "?")),
        outcome=str(record.get("outcome", "error")),
        duration_s=_number(record.get("duration_s")),
        markers=",".join(map(str, markers)) if isinstance(markers, list) else str(markers),
        message=_text(record.get("longrepr")),
        peak_rss_bytes=max(peak - (start or 0), 0) if peak is not None else None,
        rss_method=method[:16] if isinstance(method, str) else None,
        cuda_peak_bytes=_bytes(record.get("cuda_peak_bytes")),
    )


def _bytes(value: Any) -> int | None:
    """A byte count the test process wrote: a non-negative int below 2**53, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MESSAGE_LIMIT]


def _number(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _lines(fh: TextIO) -> Iterator[str]:
    """The file's lines, with NUL bytes read as line breaks and runs of them skipped.

    The plugin writes through a shared mapping of a file it allocates ahead: a process that died
    leaves zero bytes after its last line (and anything appended to the file after those).
    """
    for line in fh:
        if "\0" not in line:
            yield line
            continue
        for piece in line.split("\0"):
            if piece.strip():
                yield piece


def parse_jsonl(path: Path, nonce: str | None = None) -> ParsedResults:
    """The plugin's lines; with ``nonce``, a line not carrying it is ignored and counted."""
    parsed = ParsedResults(source="plugin")
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in _lines(fh):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                parsed.ignored_lines += 1
                continue
            if not isinstance(record, dict) or (nonce is not None and record.get("nonce") != nonce):
                parsed.ignored_lines += 1
                continue
            kind = record.get("type")
            if kind == "start":
                parsed.started = True
            elif kind == "test_start":
                parsed.running = str(record.get("nodeid", "?"))[:500]
            elif kind == "test":
                row = test_row(record)
                parsed.tests.append(row)
                if parsed.running == row.nodeid:
                    parsed.running = None
                if row.outcome in parsed.counts:
                    parsed.counts[row.outcome] += 1
            elif kind == "collection":
                parsed.collected = int(_number(record.get("collected")))
            elif kind == "collect_error":
                parsed.collect_errors.append(
                    TestResultRow(
                        str(record.get("nodeid", "")),
                        "error",
                        0.0,
                        "",
                        _text(record.get("longrepr")),
                    )
                )
            elif kind == "session":
                status = record.get("exitstatus")
                parsed.exitstatus = status if isinstance(status, int) else -1
                parsed.reported_counts = _counts(record.get("counts"))
    return parsed


def parse_junit(path: Path) -> ParsedResults:
    """Raises ``xml.etree.ElementTree.ParseError`` on a file that is not XML."""
    import xml.etree.ElementTree as ET  # only when the plugin's JSON lines are missing

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


def _counts(value: Any) -> dict[str, int]:
    """The session line's counts, every outcome present; a malformed entry reads as -1."""
    raw = value if isinstance(value, dict) else {}
    counts = {}
    for key in COUNT_KEYS:
        n = raw.get(key, 0)
        counts[key] = n if isinstance(n, int) and not isinstance(n, bool) else -1
    return counts


def load_results(results_path: Path, junit_path: Path, nonce: str | None = None) -> ParsedResults:
    """Prefer the plugin's live JSON lines; fall back to JUnit XML; else nothing."""
    if results_path.exists():
        return parse_jsonl(results_path, nonce)
    if junit_path.exists():
        from xml.etree.ElementTree import ParseError

        try:
            return parse_junit(junit_path)
        except ParseError:
            return ParsedResults(source="junit-unreadable")
    return ParsedResults()
