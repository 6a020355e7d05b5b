"""``test_daily`` and ``test_weekly``: per tier, test and UTC day (week), the sums that
``schedctl tests`` reads.

Written by :meth:`~scheduler.store.run_queries.RunQueries.finish_run` in the transaction that
stores the run's results, so the tables always agree with ``test_results``: no cache to go stale.
Only each test's final attempt counts (a rerun that passed makes the test ``flaky``, once).

A run's rollups are one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table, read from
the rows the transaction has just written (:func:`rollup_from_results`): no value of the ~500
rows per table crosses from Python to the engine and back (the driver's executemany of
per-row upserts took ~40 % of a 500-test finish).
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
from scheduler.store.rollups import (
    FAILING,
    PASSING,
    ROW_COLUMNS,
    day_of,
    next_week,
    week_of,
)
from scheduler.store.schema import runs, test_daily, test_results_staged, test_weekly

__all__ = [
    "FAILING",
    "PASSING",
    "ROW_COLUMNS",
    "add_to_daily",
    "day_of",
    "merge_rollup",
    "next_week",
    "rollup_from_results",
    "week_of",
]


def add_to_daily(conn: Connection, run_id: int, finished_at: datetime) -> None:
    """Add run ``run_id``'s results, already written in this transaction, to the rollups of
    the UTC day and week of ``finished_at``."""
    day = day_of(finished_at)
    keys = {"day": day, "week": week_of(day)}
    stamp = bind_datetime(conn, finished_at)
    for statement, period in rollups_from_results(conn.dialect.name):
        params = {"period_key": keys[period], "run_id": run_id, "stamp": stamp}
        Statement(conn, statement, cached=True).run(**params)


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
    return _on_conflict(insert, table, period, dialect_name)


def _on_conflict(insert: Any, table: sa.Table, period: str, dialect_name: str) -> sa.Insert:
    """``insert`` adding to the sums of a test, period and tier already there."""
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


@functools.lru_cache(maxsize=4)
def rollups_from_results(dialect_name: str) -> tuple[tuple[sa.Insert, str], ...]:
    """:func:`rollup_from_results` of both tables, module-lifetime constants per engine."""
    return (
        (rollup_from_results(test_daily, "day", dialect_name), "day"),
        (rollup_from_results(test_weekly, "week", dialect_name), "week"),
    )


@functools.lru_cache(maxsize=4)
def rollups_skipping(dialect_name: str) -> tuple[tuple[sa.Insert, str], ...]:
    """Both tables' :func:`rollup_from_results` told which final rows a later one superseded
    (``:superseded``, a JSON array of their ``seq``) instead of finding them: the same rows."""
    return (
        (rollup_from_results(test_daily, "day", dialect_name, skipping=True), "day"),
        (rollup_from_results(test_weekly, "week", dialect_name, skipping=True), "week"),
    )


def _counts(condition: Any) -> Any:
    return sa.case((condition, sa.literal_column("1")), else_=sa.literal_column("0"))


def rollup_from_results(
    table: sa.Table, period: str, dialect_name: str, *, skipping: bool = False
) -> sa.Insert:
    """``table``'s upsert of one run's rows (``:run_id``) read from ``test_results_staged``
    (where the finish writes them, :mod:`.staging`): per test,
    its final attempt (the last one reported, should a run report two), under the period
    ``:period_key`` and the run's tier, stamped ``:stamp`` (the finish time as the engine binds
    it). In ``test_id`` order: the rows land on the table's pages one after the other.

    ``skipping`` (SQLite: the sqlite3 writer, which has the run's rows at hand): the final rows
    a later final row of the same test supersedes are given, as the JSON array ``:superseded``
    of their ``seq`` (``[]`` almost always), not looked for row by row (a probe of the run's
    index and a read of the table per result: ~20 % of each upsert at 1M results).
    """
    result = test_results_staged  # the run's rows, written by the finish just before
    last_final: sa.ColumnElement[bool]
    if skipping:
        given = sa.func.json_each(sa.bindparam("superseded", "[]", type_=sa.String))
        last_final = result.c.seq.not_in(sa.select(given.table_valued("value").c.value))
    else:
        later = test_results_staged.alias("later")
        last_final = ~sa.exists().where(
            later.c.test_id == result.c.test_id,
            later.c.run_id == result.c.run_id,
            later.c.final == sa.true(),
            later.c.seq > result.c.seq,
        )
    run_id = sa.bindparam("run_id", None, type_=sa.Integer)
    stamp = sa.bindparam("stamp", None, type_=table.c.last_at.type)  # bound with bind_datetime()
    tier = sa.select(runs.c.tier).where(runs.c.id == run_id).scalar_subquery()
    outcome = result.c.outcome
    select = (
        sa.select(
            sa.bindparam("period_key", None, type_=sa.String),
            result.c.test_id,
            tier,
            sa.literal_column("1"),
            _counts(outcome.in_(sorted(PASSING))),
            _counts(outcome.in_(sorted(FAILING))),
            _counts(outcome == "flaky"),
            _counts(outcome == "skipped"),
            result.c.duration_s,
            result.c.duration_s,
            result.c.peak_rss_bytes,
            result.c.run_id,
            result.c.run_id,
            stamp,
            stamp,
        )
        .where(result.c.run_id == run_id, result.c.final == sa.true(), last_final)
        .order_by(result.c.test_id)
    )
    insert = dialect.insert_for(dialect_name, table).from_select([period, *ROW_COLUMNS], select)
    return _on_conflict(insert, table, period, dialect_name)
