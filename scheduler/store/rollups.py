"""What a run adds to ``test_daily`` and ``test_weekly``, in plain values: no SQL.

:mod:`.daily` (SQLAlchemy, both engines) and :mod:`.writer` (``sqlite3``) add per test its final
attempt's counts and duration under the run's UTC day and week; the periods are computed here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

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
