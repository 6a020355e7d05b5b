"""``test_daily`` and ``test_weekly``: per tier, test and UTC day (week), the sums that
``schedctl tests`` reads.

Written by :meth:`~scheduler.store.run_queries.RunQueries.finish_run` in the transaction that
stores the run's results, so the tables always agree with ``test_results``: no cache to go stale.
Only each test's final attempt counts (a rerun that passed makes the test ``flaky``, once).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.driver import Statement, bind_datetime
from scheduler.store.records import TestResultRow
from scheduler.store.rollups import (
    FAILING,
    PASSING,
    ROW_COLUMNS,
    day_of,
    next_week,
    rollup_rows,
    week_of,
)
from scheduler.store.schema import runs, test_daily, test_weekly

__all__ = [
    "FAILING",
    "PASSING",
    "ROW_COLUMNS",
    "add_to_daily",
    "day_of",
    "merge_rollup",
    "next_week",
    "week_of",
]

_TIER_OF_RUN = sa.select(runs.c.tier).where(runs.c.id == sa.bindparam("run_id", type_=sa.Integer))


def add_to_daily(
    conn: Connection,
    run_id: int,
    finished_at: datetime,
    results: Sequence[TestResultRow],
    test_ids: Mapping[str, int],
) -> None:
    tier_name = str(conn.execute(_TIER_OF_RUN, {"run_id": run_id}).scalar_one())
    day = day_of(finished_at)
    ordered = rollup_rows(run_id, tier_name, bind_datetime(conn, finished_at), results, test_ids)
    if not ordered:
        return
    keys = {"day": day, "week": week_of(day)}
    for _, period in _upserts(conn.dialect.name):
        merge_rollup(conn, period, [{**row, period: keys[period]} for row in ordered])


def merge_rollup(conn: Connection, period: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add ``rows`` (each: ``period``, the :data:`ROW_COLUMNS`, timestamps bound with
    :func:`~scheduler.store.driver.bind_datetime`) to ``test_daily`` (``period="day"``) or
    ``test_weekly`` (``"week"``): the sums of a test, period and tier already there grow."""
    upsert = dict((p, u) for u, p in _upserts(conn.dialect.name))[period]
    # Plain values on the driver's executemany: a run adds hundreds of rows per table.
    Statement(conn, upsert, cached=True).many(rows)


@functools.lru_cache(maxsize=4)
def _upserts(dialect_name: str) -> tuple[tuple[sa.Insert, str], ...]:
    """The two upserts as module-lifetime constants per engine (their compiled form is cached)."""
    return (
        (_upsert_of(test_daily, "day", dialect_name), "day"),
        (_upsert_of(test_weekly, "week", dialect_name), "week"),
    )


def _upsert_of(table: sa.Table, period: str, dialect_name: str) -> sa.Insert:
    names = [period, *ROW_COLUMNS]
    insert = dialect.insert_for(dialect_name, table).values(
        {name: sa.bindparam(name) for name in names}
    )
    new = insert.excluded
    old = table.c
    greatest = functools.partial(dialect.greatest_for, dialect_name)
    upsert: sa.Insert = insert.on_conflict_do_update(
        index_elements=[period, "test_id", "tier"],
        set_={
            "runs": old.runs + new.runs,
            "passed": old.passed + new.passed,
            "failed": old.failed + new.failed,
            "flaky": old.flaky + new.flaky,
            "skipped": old.skipped + new.skipped,
            "duration_sum": old.duration_sum + new.duration_sum,
            "duration_max": greatest(old.duration_max, new.duration_max),
            "peak_rss_max": greatest(old.peak_rss_max, new.peak_rss_max),
            "last_run_id": greatest(old.last_run_id, new.last_run_id),
            "last_at": greatest(old.last_at, new.last_at),
        },
    )
    return upsert
