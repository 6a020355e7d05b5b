"""Reruns of failed tests: which tests may run again, and how the attempts fold into one result.

A test that failed in the first pytest process runs again, alone with the other failures, in a
fresh process of the same runner and image (``tiers.<t>.reruns`` times at most). A test marked
``distributed`` never does: a hang or a rank failure there is evidence, kept as it is (and
torchrun tiers never rerun at all). Every attempt is kept; the last one is the test's final
result, and a test that failed and then passed is ``flaky``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from scheduler.run.results import ParsedResults, empty_counts
from scheduler.store.records import TestResultRow

NEVER_RERUN_MARKERS = frozenset({"distributed"})
FAILING = ("failed", "error")


def rerunnable(parsed: ParsedResults) -> list[str]:
    """Node ids of the final failing tests that may run again, in their order."""
    if parsed.collect_errors:
        return []  # the project does not import cleanly: a rerun proves nothing
    out: list[str] = []
    for row in parsed.tests:
        if not row.final or row.outcome not in FAILING:
            continue
        if NEVER_RERUN_MARKERS & set(filter(None, row.markers.split(","))):
            continue
        if row.nodeid not in out:
            out.append(row.nodeid)
    return out


def merge(first: ParsedResults, reruns: Sequence[ParsedResults]) -> ParsedResults:
    """Every attempt's rows, numbered, with each test's last attempt final; counts of finals."""
    rows: list[TestResultRow] = [replace(r, attempt=0) for r in first.tests]
    for number, rerun in enumerate(reruns, start=1):
        rows += [replace(r, attempt=number) for r in rerun.tests]
    last: dict[str, int] = {}
    failed_before: set[str] = set()
    for index, row in enumerate(rows):
        last[row.nodeid] = index
    merged: list[TestResultRow] = []
    for index, row in enumerate(rows):
        final = last[row.nodeid] == index
        outcome = row.outcome
        if final and row.nodeid in failed_before and outcome == "passed":
            outcome = "flaky"
        if row.outcome in FAILING:
            failed_before.add(row.nodeid)
        merged.append(replace(row, final=final, outcome=outcome))
    counts = empty_counts()
    for row in merged:
        if row.final and row.outcome in counts:
            counts[row.outcome] += 1
    return replace(
        first,
        tests=merged,
        counts=counts,
        running=reruns[-1].running if reruns else first.running,
    )
