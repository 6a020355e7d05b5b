"""The rows a run adds to ``test_daily`` and ``test_weekly``: plain values, no SQL.

:mod:`.daily` (SQLAlchemy, both engines) and :mod:`.writer` (``sqlite3``) write the same rows,
built here: per test, its final attempt's counts and duration under the run's UTC day and week.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from scheduler.store.records import TestResultRow

PASSING = frozenset({"passed", "xfailed", "xpassed"})
FAILING = frozenset({"failed", "error"})

ROW_COLUMNS = (
    "test_id",
    "tier",
    "runs",
    "passed",
    "failed",
    "flaky",
    "skipped",
    "duration_sum",
    "duration_max",
    "peak_rss_max",
    "first_run_id",
    "last_run_id",
    "first_at",
    "last_at",
)


def day_of(when: datetime) -> str:
    """The UTC day a run's results count on (SQLite keeps datetimes naive, in UTC)."""
    return when.strftime("%Y-%m-%d")


def week_of(day: str) -> str:
    """The Monday (``YYYY-MM-DD``) of the ISO week of ``day``."""
    when = date.fromisoformat(day)
    return (when - timedelta(days=when.weekday())).isoformat()


def next_week(day: str) -> str:
    """The first Monday on or after ``day``: a window from ``day`` reads its weeks from there."""
    when = date.fromisoformat(day)
    return (when + timedelta(days=-when.weekday() % 7)).isoformat()


def rollup_rows(
    run_id: int,
    tier: str,
    stamp: Any,
    results: Sequence[TestResultRow],
    test_ids: Mapping[str, int],
) -> list[dict[str, Any]]:
    """One row per test (its final attempt), in ``test_id`` order (B-tree neighbours), each with
    the :data:`ROW_COLUMNS`; ``stamp`` is the run's finish time as the engine binds it."""
    rows: dict[int, dict[str, Any]] = {}
    for r in results:
        if not r.final:
            continue
        test_id = test_ids[r.nodeid]
        rows[test_id] = {
            "test_id": test_id,
            "tier": tier,
            "runs": 1,
            "passed": int(r.outcome in PASSING),
            "failed": int(r.outcome in FAILING),
            "flaky": int(r.outcome == "flaky"),
            "skipped": int(r.outcome == "skipped"),
            "duration_sum": r.duration_s,
            "duration_max": r.duration_s,
            "peak_rss_max": r.peak_rss_bytes,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "first_at": stamp,
            "last_at": stamp,
        }
    return [rows[test_id] for test_id in sorted(rows)]
