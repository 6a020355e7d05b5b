"""Test history: per-test sums over days, one test's attempts, and quarantine rows.

Fast at 1,000,000 results through the schema, not a cache: ``test_daily``/``test_weekly`` are
written with the results (see :mod:`.daily`), and a test's attempts are one range of
``test_results`` (clustered by test, run, attempt), joined to ``runs`` by primary key. Nodeids
become ids once per query (:mod:`.nodeids`). The store only reads and writes; which run outcomes
count and what a flake is are decided in :mod:`scheduler.history`.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.daily import FAILING, PASSING, next_week
from scheduler.store.driver import Statement, fetch
from scheduler.store.nodeids import ids_of, known_ids
from scheduler.store.outbox_queries import OutboxEntry, insert_outbox_entry
from scheduler.store.records import QuarantineRow
from scheduler.store.schema import (
    EVIDENCE_OUTCOMES,
    quarantine,
    runs,
    test_daily,
    test_results,
    test_results_all,
    test_results_staged,
    test_weekly,
    tests,
)

__all__ = ["AttemptRow", "HistoryQueries", "QuarantineRow", "TestSummaryRow", "WindowSums"]

# Test ids (run ids) per statement of the reads by id: one compiled statement, each chunk padded
# with its last id (a repeat in IN changes nothing).
_ID_CHUNK = 100
# More rows than this get their seen times from one pass over the window, not by id.
_SEEN_BY_ID = 2 * _ID_CHUNK


@dataclass(frozen=True)
class TestSummaryRow:
    """One test's sums over a window of days (final attempts of evidence runs)."""

    __test__ = False

    nodeid: str
    runs: int
    passed: int
    failed: int
    flaky: int
    skipped: int
    duration_sum: float
    duration_max: float
    peak_rss_max: int | None
    first_at: datetime | None
    last_at: datetime | None


class WindowSums(NamedTuple):
    """What a listing sorts every test of a window by (a tuple: it then shows a few;
    :meth:`HistoryQueries.test_seen` completes those into :class:`TestSummaryRow`)."""

    nodeid: str
    runs: int
    passed: int
    failed: int
    flaky: int
    duration_sum: float
    peak_rss_max: int | None


class AttemptRow(NamedTuple):
    """One attempt of one test in one run, with the run's commit (a tuple: thousands are read
    per query)."""

    nodeid: str
    run_id: int
    tier: str
    sha: str | None
    finished_at: datetime | None
    attempt: int
    final: bool
    outcome: str
    duration_s: float
    peak_rss_bytes: int | None = None
    cuda_peak_bytes: int | None = None
    owner: str | None = None


def _summary(row: Any) -> TestSummaryRow:
    return TestSummaryRow(
        nodeid=str(row[0]),
        runs=int(row[1] or 0),
        passed=int(row[2] or 0),
        failed=int(row[3] or 0),
        flaky=int(row[4] or 0),
        skipped=int(row[5] or 0),
        duration_sum=float(row[6] or 0.0),
        duration_max=float(row[7] or 0.0),
        peak_rss_max=None if row[8] is None else int(row[8]),
        first_at=_stamp(row[9]),
        last_at=_stamp(row[10]),
    )


def _sums(row: Any) -> WindowSums:
    nodeid, runs_, passed, failed, flaky, duration_sum, peak = row
    return WindowSums(str(nodeid), int(runs_ or 0), int(passed or 0), int(failed or 0),
                      int(flaky or 0), float(duration_sum or 0.0),
                      None if peak is None else int(peak))  # fmt: skip


def _stamp(value: Any) -> datetime | None:
    if isinstance(value, str) and len(value) == 26:  # SQLite's text, naive UTC
        return datetime.fromisoformat(value + "+00:00")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return _stamp(datetime.fromisoformat(value)) if value else None


def _runs_of(
    conn: Connection, from_run_id: int, tier: str | None, evidence_only: bool
) -> dict[int, tuple[str, str | None, Any]]:
    """``{run id: (tier, sha, finished_at as stored)}`` of the runs from ``from_run_id`` on
    (:func:`_stamp` makes a datetime of the last, for the few rows that show it)."""
    query = sa.select(runs.c.id, runs.c.tier, runs.c.sha, runs.c.finished_at, runs.c.outcome)
    query = query.where(runs.c.id >= from_run_id)
    if tier:
        query = query.where(runs.c.tier == tier)
    evidence = set(EVIDENCE_OUTCOMES)
    return {
        int(r[0]): (str(r[1]), r[2], r[3])
        for r in fetch(conn, query)
        if not evidence_only or r[4] in evidence
    }


def _periods(since_day: str, last_week: str) -> tuple[list[str], list[str]]:
    """The window's Mondays (up to ``last_week``) and its days before the first Monday."""
    monday = date.fromisoformat(next_week(since_day))
    first = date.fromisoformat(since_day)
    days = [(first + timedelta(days=k)).isoformat() for k in range((monday - first).days)]
    weeks = []
    while monday.isoformat() <= last_week:
        weeks.append(monday.isoformat())
        monday += timedelta(days=7)
    return weeks, days


_AGGREGATES: dict[str, Callable[[Any], Any]] = {
    "runs": sa.func.sum,
    "passed": sa.func.sum,
    "failed": sa.func.sum,
    "flaky": sa.func.sum,
    "skipped": sa.func.sum,
    "duration_sum": sa.func.sum,
    "duration_max": sa.func.max,
    "peak_rss_max": sa.func.max,
    "first_at": sa.func.min,
    "last_at": sa.func.max,
}
# What a listing sorts every test by (WindowSums), and what it adds for the tests it shows.
_SORTED_BY = ("runs", "passed", "failed", "flaky", "duration_sum", "peak_rss_max")
_SHOWN_ONLY = ("skipped", "duration_max", "first_at", "last_at")


def _summaries_query(
    test_ids: Sequence[int] | None,
    periods: tuple[Sequence[Any], Sequence[Any]] | None = None,
    *,
    columns: Sequence[str] = tuple(_AGGREGATES),
    chunk: bool = False,
) -> sa.Select[Any]:
    """Per test (of ``test_ids``, of a chunk ``:t0``... with ``chunk``, or all), the sums of
    ``columns`` over its weekly rows from ``:monday`` on and its daily rows from ``:since`` to
    ``:monday``, of ``:tier`` (NULL: every tier); only tests that failed or flaked unless
    ``:all_tests``. ``periods`` (weeks, days) names the window's periods one by one, for key
    lookups of a few tests.

    A listing sorts every test by :data:`_SORTED_BY` alone and reads :data:`_SHOWN_ONLY` for
    the few it shows: each aggregate costs per rollup row, the min/max of text timestamps most.
    """
    tier = sa.bindparam("tier", None, type_=sa.String)
    parts = []
    wanted = ["test_id", *dict.fromkeys([*columns, "failed", "flaky"])]
    for table, period, low, high in (
        (test_weekly, test_weekly.c.week, "monday", None),
        (test_daily, test_daily.c.day, "since", "monday"),
    ):
        part = sa.select(*(table.c[name] for name in wanted)).where(
            period >= sa.bindparam(low, "", type_=sa.String),
            sa.or_(tier.is_(None), table.c.tier == tier),
        )
        if high is not None:
            part = part.where(period < sa.bindparam(high, "", type_=sa.String))
        if test_ids is not None:
            part = part.where(table.c.test_id.in_(list(test_ids)))
        if chunk:
            part = part.where(
                table.c.test_id.in_([sa.bindparam(f"t{k}", 0) for k in range(_ID_CHUNK)])
            )
        if periods is not None:
            part = part.where(period.in_(periods[0] if high is None else periods[1]))
        parts.append(part)
    rows = sa.union_all(*parts).subquery()
    grouped = (
        sa.select(rows.c.test_id, *(_AGGREGATES[name](rows.c[name]) for name in columns))
        .group_by(rows.c.test_id)
        .having(
            sa.or_(
                sa.bindparam("all_tests", True, type_=sa.Boolean),
                sa.func.sum(rows.c.failed) + sa.func.sum(rows.c.flaky) > 0,
            )
        )
        .subquery()
    )
    return sa.select(tests.c.nodeid, *list(grouped.c)[1:]).join(
        tests, tests.c.id == grouped.c.test_id
    )


# The statements below are built on first use, not at import: each holds hundreds of SQLAlchemy
# objects (a chunk's bind parameters, per table), which a daemon that never lists tests need not
# keep (issue 21: its idle RSS).
@functools.cache
def _summaries() -> sa.Select[Any]:
    return _summaries_query(None)


# The days of a window before its first Monday: at most six (the seventh slot stays unused).
_MAX_EDGE_DAYS = 7


@functools.lru_cache(maxsize=16)
def _summaries_by_periods(weeks: int) -> sa.Select[Any]:
    """:func:`_summaries_query` of a chunk of tests (``:t0``...) over ``weeks`` weeks
    (``:w0``...) and :data:`_MAX_EDGE_DAYS` days (``:d0``...) named one by one: one query (and
    one compiled statement) per number of weeks, not one per call."""
    return _summaries_query(
        None,
        (
            [sa.bindparam(f"w{k}", "", type_=sa.String) for k in range(weeks)],
            [sa.bindparam(f"d{k}", "", type_=sa.String) for k in range(_MAX_EDGE_DAYS)],
        ),
        chunk=True,
    )


@functools.cache
def _sums_statement() -> sa.Select[Any]:
    return _summaries_query(None, columns=_SORTED_BY)


# The rest of a listing's shown tests: of a chunk of them, or of every test in one pass.
@functools.cache
def _shown(every: bool) -> sa.Select[Any]:
    return _summaries_query(None, columns=_SHOWN_ONLY, chunk=not every)


_PASSED, _FAILED, _FLAKY = 1, 2, 4
_BAD = _FAILED | _FLAKY
_VERDICT_BITS = {
    **{o: _PASSED for o in PASSING},
    **{o: _FAILED for o in FAILING},
    "flaky": _FLAKY,
}
_OUTCOME_OF_BIT = ((_FLAKY, "flaky"), (_PASSED, "passed"), (_FAILED, "failed"))


def _commit(run_id: int, window: Mapping[int, tuple[Any, ...]]) -> str:
    return window[run_id][1] or f"run:{run_id}"


def _chunks(values: Sequence[int], prefix: str) -> list[dict[str, int]]:
    out = []
    for start in range(0, len(values), _ID_CHUNK):
        chunk = list(values[start : start + _ID_CHUNK])
        chunk += [chunk[-1]] * (_ID_CHUNK - len(chunk))
        out.append({f"{prefix}{k}": value for k, value in enumerate(chunk)})
    return out


def _id_chunks(test_ids: Sequence[int]) -> list[dict[str, int]]:
    return _chunks(test_ids, "t")


def _in_chunk(column: Any) -> Any:
    return column.in_([sa.bindparam(f"t{k}", 0) for k in range(_ID_CHUNK)])


def _per_table(build: Callable[[sa.Table], sa.Select[Any]]) -> sa.Subquery:
    """``build`` of ``test_results`` and of ``test_results_staged``, UNION ALL, as a subquery:
    each branch keeps its own plan (the table's key order for a GROUP BY, a LIMIT's early exit)
    where SQLite would read the view ``test_results_all`` through a co-routine and sort every
    row of it. A run's results are in one of the two tables, never both (:mod:`.staging`)."""
    return sa.union_all(
        sa.select(build(test_results).subquery()), sa.select(build(test_results_staged).subquery())
    ).subquery()


@functools.lru_cache(maxsize=2)
def _newest_attempts_of_one(lean: bool) -> sa.Select[Any]:
    """One test's (``:test_id``) newest ``:newest`` attempts from ``:from_run_id`` on, newest
    first: each table's newest (the end of the test's range, an early exit), then the newest
    of both. ``lean``: outcomes only (see :meth:`HistoryQueries.test_attempts`)."""
    newest: sa.BindParameter[int] = sa.bindparam("newest", 0, literal_execute=False)

    def per(table: sa.Table) -> sa.Select[Any]:
        r = table.c
        extra = () if lean else (r.duration_s, r.peak_rss_bytes, r.cuda_peak_bytes, r.owner)
        return (
            sa.select(r.test_id, r.run_id, r.attempt, r.final, r.outcome, *extra, r.seq)
            .where(
                r.test_id == sa.bindparam("test_id", 0),
                r.run_id >= sa.bindparam("from_run_id", 0),
            )
            .order_by(r.run_id.desc(), r.attempt.desc(), r.seq.desc())
            .limit(newest)
        )

    both = _per_table(per)
    return (
        sa.select(*(c for c in both.c if c.name != "seq"))
        .order_by(both.c.run_id.desc(), both.c.attempt.desc(), both.c.seq.desc())
        .limit(newest)
    )


@functools.cache
def _verdict_runs_of() -> sa.Select[Any]:
    """Per test of a chunk (``:t0``...), its runs from ``:from_run_id`` on (with any result):
    how many, the first, the last, and how many with a ``passed`` result. Most tests ran in
    every run between their first and last, and then these say which runs those are
    (:func:`_dense_runs`) without reading them out one by one. Summed over both tables (a run
    is in one of them): each is grouped in its key order."""

    def per(table: sa.Table) -> sa.Select[Any]:
        r = table.c
        passed_run = sa.case((r.outcome == "passed", r.run_id))
        return (
            sa.select(
                r.test_id.label("test_id"),
                sa.func.count(sa.distinct(r.run_id)).label("runs"),
                sa.func.min(r.run_id).label("first"),
                sa.func.max(r.run_id).label("last"),
                sa.func.count(sa.distinct(passed_run)).label("passes"),
            )
            .where(_in_chunk(r.test_id), r.run_id >= sa.bindparam("from_run_id", 0))
            .group_by(r.test_id)
        )

    both = _per_table(per)
    return sa.select(
        both.c.test_id,
        sa.cast(sa.func.sum(both.c.runs), sa.Integer),
        sa.func.min(both.c.first),
        sa.func.max(both.c.last),
        sa.cast(sa.func.sum(both.c.passes), sa.Integer),
    ).group_by(both.c.test_id)


@functools.cache
def _verdict_packed_passes() -> sa.Select[Any]:
    """Per test of a chunk, the run ids of its ``passed`` results from ``:from_run_id`` on,
    joined into one comma-separated string: for the tests whose passes are not one unbroken
    stretch of the runs. Each table's string, then both joined."""

    def per(table: sa.Table) -> sa.Select[Any]:
        r = table.c
        return (
            sa.select(
                r.test_id.label("test_id"),
                sa.func.aggregate_strings(sa.cast(r.run_id, sa.String), ",").label("runs"),
            )
            .where(
                _in_chunk(r.test_id),
                r.run_id >= sa.bindparam("from_run_id", 0),
                r.outcome == "passed",
            )
            .group_by(r.test_id)
        )

    both = _per_table(per)
    return sa.select(both.c.test_id, sa.func.aggregate_strings(both.c.runs, ",")).group_by(
        both.c.test_id
    )


# Per test of a chunk, its results from ``:from_run_id`` on that are not a plain pass (failures,
# reruns, skips, xfails): the few rows a verdict reads one by one. ``<>`` costs a comparison per
# result where ``IN (...)`` cost a lookup.
@functools.cache
def _verdict_others() -> sa.Select[Any]:
    return sa.select(
        test_results_all.c.test_id, test_results_all.c.run_id, test_results_all.c.outcome
    ).where(
        _in_chunk(test_results_all.c.test_id),
        test_results_all.c.run_id >= sa.bindparam("from_run_id", 0),
        test_results_all.c.outcome != "passed",
    )


# Every run from ``:from_run_id`` on, oldest first, whatever its tier and outcome: the runs a
# result can belong to (``test_results.run_id`` is a foreign key).
_RUNS_FROM = (
    sa.select(runs.c.id, runs.c.tier, runs.c.sha, runs.c.outcome)
    .where(runs.c.id >= sa.bindparam("from_run_id", 0))
    .order_by(runs.c.id)
)
_WINDOW_RUNS = sa.select(runs.c.id, runs.c.tier, runs.c.sha).where(
    runs.c.id >= sa.bindparam("from_run_id", 0),
    runs.c.outcome.in_(EVIDENCE_OUTCOMES),
    sa.or_(
        sa.bindparam("tier", None, type_=sa.String).is_(None),
        runs.c.tier == sa.bindparam("tier", None, type_=sa.String),
    ),
)


def _dense_runs(every: Sequence[int], count: int, first: int, last: int) -> tuple[int, int] | None:
    """``(start, stop)``: the slice of ``every`` (each run id from the window's first on,
    sorted) that holds exactly the ``count`` distinct runs from ``first`` to ``last`` a test
    has results in, when it has results in each run between them; else ``None``. Exact: those
    runs are all in that slice, so when they are as many as it holds, they are all of it."""
    start = bisect.bisect_left(every, first)
    stop = bisect.bisect_right(every, last)
    return (start, stop) if stop - start == count else None


# One test's newest final, not skipped results from ``:from_run_id`` on: the end of its range.
_NEWEST_DURATIONS = (
    sa.select(test_results_all.c.run_id, test_results_all.c.duration_s)
    .where(
        test_results_all.c.test_id == sa.bindparam("test_id", 0),
        test_results_all.c.run_id >= sa.bindparam("from_run_id", 0),
        test_results_all.c.final.is_(True),
        test_results_all.c.outcome != "skipped",
    )
    .order_by(test_results_all.c.run_id.desc())
    .limit(sa.bindparam("limit", 0, literal_execute=False))
)


def _window_runs(
    conn: Connection, from_run_id: int, tier: str | None
) -> dict[int, tuple[str, str | None]]:
    """``{run id: (tier, sha)}`` of the window's runs: from ``from_run_id`` on, test evidence,
    of ``tier`` (None: every tier)."""
    rows = Statement(conn, _WINDOW_RUNS, cached=True).rows(
        from_run_id=from_run_id, tier=tier or None
    )
    return {int(i): (str(t), s) for i, t, s in rows}


def _durations_lateral(test_ids: Sequence[int], from_run_id: int, limit: int) -> sa.Select[Any]:
    """PostgreSQL: per test of ``test_ids``, its newest ``limit`` final, not skipped results
    from ``from_run_id`` on (run id, duration), newest first within each test."""
    r = test_results_all.c
    wanted = sa.select(tests.c.id).where(tests.c.id.in_(list(test_ids))).subquery()
    newest = (
        sa.select(r.run_id, r.duration_s)
        .where(
            r.test_id == wanted.c.id,
            r.run_id >= from_run_id,
            r.final.is_(True),
            r.outcome != "skipped",
        )
        .order_by(r.run_id.desc())
        .limit(limit)
        .lateral()
    )
    return (
        sa.select(wanted.c.id, newest.c.run_id, newest.c.duration_s)
        .select_from(wanted.join(newest, sa.true()))
        .order_by(wanted.c.id, newest.c.run_id.desc())
    )


@functools.lru_cache(maxsize=8)
def _percentiles_lateral(fractions: int) -> sa.Select[Any]:
    """PostgreSQL: per test of a chunk (``:t0``...), ``percentile_disc`` of each of
    ``fractions`` fractions (``:f0``...) over the durations of its newest ``:limit`` final, not
    skipped results from ``:from_run_id`` on that are in evidence runs of ``:tier`` (NULL:
    every tier) -- a row per test, not one per result: decoding and handing over 100 rows per
    shown test cost more than the scan. Built and compiled once per number of fractions."""
    r = test_results_all.c
    wanted = sa.select(tests.c.id).where(_in_chunk(tests.c.id)).subquery()
    newest = (
        sa.select(r.run_id, r.duration_s)
        .where(
            r.test_id == wanted.c.id,
            r.run_id >= sa.bindparam("from_run_id", 0),
            r.final.is_(True),
            r.outcome != "skipped",
        )
        .order_by(r.run_id.desc())
        .limit(sa.bindparam("limit", 0, literal_execute=False))
        .lateral()
    )
    tier = sa.bindparam("tier", None, type_=sa.String)
    return (
        sa.select(
            wanted.c.id,
            *(
                sa.func.percentile_disc(sa.bindparam(f"f{k}", 0.0, type_=sa.Float)).within_group(
                    newest.c.duration_s
                )
                for k in range(fractions)
            ),
        )
        .select_from(wanted.join(newest, sa.true()).join(runs, runs.c.id == newest.c.run_id))
        .where(runs.c.outcome.in_(EVIDENCE_OUTCOMES), sa.or_(tier.is_(None), runs.c.tier == tier))
        .group_by(wanted.c.id)
    )


def _newest_durations(
    conn: Connection, ids: Mapping[str, int], tier: str | None, from_run_id: int, limit: int
) -> dict[str, list[float]]:
    """SQLite: :meth:`HistoryQueries.recent_durations` of ``ids`` (``{nodeid: test id}``), a
    statement per test: each reads the end of its range of ``test_results``."""
    window = _window_runs(conn, from_run_id, tier)
    statement = Statement(conn, _NEWEST_DURATIONS, cached=True)
    out = {}
    for nodeid, test_id in ids.items():
        rows = statement.rows(test_id=test_id, from_run_id=from_run_id, limit=limit)
        out[nodeid] = [float(d or 0.0) for run_id, d in rows if run_id in window]
    return out


def _nearest_rank(values: Sequence[float], fraction: float) -> float | None:
    """The value at rank ``ceil(fraction * n)`` (at least 1) of ``values`` sorted: what
    PostgreSQL's ``percentile_disc`` computes."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _quarantine(row: Any) -> QuarantineRow:
    return QuarantineRow(
        nodeid=row["nodeid"],
        reason=row["reason"],
        created_at=aware(row["created_at"]),
        owner=row["owner"],
        expires_at=aware(row["expires_at"]),
        expiry_alerted_at=aware(row["expiry_alerted_at"]),
    )


class HistoryQueries(QueryBase):
    """``test_daily``, one test's attempts, ``quarantine``."""

    def test_summaries(
        self,
        since_day: str,
        tier: str | None = None,
        nodeids: Sequence[str] | None = None,
        *,
        with_failures: bool = False,
    ) -> list[TestSummaryRow]:
        """Per test, the sums of its rollups from ``since_day`` (``YYYY-MM-DD``) on: whole ISO
        weeks from ``test_weekly``, the days before the window's first Monday from
        ``test_daily``."""
        params = {
            "since": since_day,
            "monday": next_week(since_day),
            "tier": tier or None,
            "all_tests": not with_failures,
        }
        with self.begin() as conn:
            if nodeids is None:
                return [
                    _summary(r) for r in Statement(conn, _summaries(), cached=True).rows(**params)
                ]
            ids = known_ids(conn, nodeids)
            last = conn.execute(sa.select(sa.func.max(test_weekly.c.week))).scalar()
            if not ids or last is None:
                return []
            # A few tests: a key lookup per test and period (the ranges would read every
            # test's rows of the window), in a statement built and compiled once per number
            # of weeks; unused slots hold '' (no period).
            weeks, days = _periods(since_day, str(last))
            weeks = weeks or [""]
            days = (days + [""] * _MAX_EDGE_DAYS)[:_MAX_EDGE_DAYS]
            params |= {f"w{k}": week for k, week in enumerate(weeks)}
            params |= {f"d{k}": day for k, day in enumerate(days)}
            statement = Statement(conn, _summaries_by_periods(len(weeks)), cached=True)
            return [
                _summary(row)
                for chunk in _id_chunks(sorted(ids.values()))
                for row in statement.rows(**chunk, **params)
            ]

    def test_sums(
        self, since_day: str, tier: str | None = None, *, with_failures: bool = False
    ) -> list[WindowSums]:
        """:meth:`test_summaries` of every test without first and last seen times."""
        params = {
            "since": since_day,
            "monday": next_week(since_day),
            "tier": tier or None,
            "all_tests": not with_failures,
        }
        with self.begin() as conn:
            rows = Statement(conn, _sums_statement(), cached=True).rows(**params)
        if rows and not isinstance(rows[0][1], int):  # a driver's Decimal sums
            return [_sums(r) for r in rows]
        return list(map(WindowSums._make, rows))

    def test_seen(
        self, since_day: str, tier: str | None, rows: Sequence[WindowSums]
    ) -> list[TestSummaryRow]:
        """``rows`` (from :meth:`test_sums`, same window and tier) as :class:`TestSummaryRow`:
        their skips, longest duration and first and last seen times, read for just these
        tests (for most of the tests, in one pass over the window)."""
        params = {
            "since": since_day,
            "monday": next_week(since_day),
            "tier": tier or None,
            "all_tests": True,
        }
        rest: dict[str, tuple[Any, ...]] = {}
        with self.begin() as conn:
            if len(rows) > _SEEN_BY_ID:
                for nodeid, *found in Statement(conn, _shown(True), cached=True).rows(**params):
                    rest[nodeid] = tuple(found)
            else:
                ids = known_ids(conn, [r.nodeid for r in rows])
                statement = Statement(conn, _shown(False), cached=True)
                for chunk in _id_chunks(sorted(ids.values())):
                    for nodeid, *found in statement.rows(**chunk, **params):
                        rest[nodeid] = tuple(found)
        out = []
        for row in rows:
            skipped, duration_max, first, last = rest.get(row.nodeid, (0, 0.0, None, None))
            out.append(
                TestSummaryRow(
                    nodeid=row.nodeid,
                    runs=row.runs,
                    passed=row.passed,
                    failed=row.failed,
                    flaky=row.flaky,
                    skipped=int(skipped or 0),
                    duration_sum=row.duration_sum,
                    duration_max=float(duration_max or 0.0),
                    peak_rss_max=row.peak_rss_max,
                    first_at=_stamp(first),
                    last_at=_stamp(last),
                )
            )
        return out

    def first_run_id_since(self, since: datetime) -> int:
        """The id of the oldest run queued at or after ``since`` (ids grow with time)."""
        with self.begin() as conn:
            found = conn.execute(
                sa.select(runs.c.id).where(runs.c.queued_at >= since).order_by(runs.c.id).limit(1)
            ).scalar()
            if found is not None:
                return int(found)
            top = conn.execute(sa.select(sa.func.max(runs.c.id))).scalar()
            return int(top or 0) + 1

    def test_attempts(
        self,
        nodeids: Sequence[str],
        *,
        tier: str | None = None,
        from_run_id: int = 0,
        newest: int | None = None,
        evidence_only: bool = True,
        lean: bool = False,
    ) -> list[AttemptRow]:
        """Attempts of ``nodeids`` in runs from ``from_run_id`` on (grouped by test, not sorted;
        oldest first with ``newest``).

        ``newest`` keeps only the newest that many attempts (one test: ``schedctl test``);
        ``evidence_only`` drops runs whose outcome says nothing about their tests. The runs of
        the window are read first and joined here: SQLite would otherwise walk every result of
        every run instead of the few tests' ranges of ``test_results``. ``lean`` reads only what
        a verdict needs (outcomes); duration, memory and owner are then left empty.
        """
        if not nodeids:
            return []

        def select(table: sa.Table) -> sa.Select[Any]:
            r = table.c
            extra = () if lean else (r.duration_s, r.peak_rss_bytes, r.cuda_peak_bytes, r.owner)
            return sa.select(r.test_id, r.run_id, r.attempt, r.final, r.outcome, *extra).where(
                r.test_id.in_(list(ids.values())), r.run_id >= from_run_id
            )

        with self.begin() as conn:
            ids = known_ids(conn, nodeids)
            if not ids:
                return []
            query = select(test_results_all)
            if newest is not None and len(ids) == 1:
                # One test (`schedctl test`): a statement compiled once per process.
                (test_id,) = ids.values()
                found = Statement(conn, _newest_attempts_of_one(lean), cached=True).rows(
                    test_id=test_id, from_run_id=from_run_id, newest=newest
                )
            elif newest is not None:
                # Each table's newest rows (the end of the test's range: an early exit), then
                # the newest of both; through the view SQLite would sort the whole range.
                def newest_of(table: sa.Table) -> sa.Select[Any]:
                    r = table.c
                    order = (r.run_id.desc(), r.attempt.desc(), r.seq.desc())
                    return select(table).add_columns(r.seq).order_by(*order).limit(newest)

                both = _per_table(newest_of)
                order = (both.c.run_id.desc(), both.c.attempt.desc(), both.c.seq.desc())
                columns = [c for c in both.c if c.name != "seq"]
                query = sa.select(*columns).order_by(*order).limit(newest)
                found = fetch(conn, query)
            else:
                # Rows come in the table's order, by test then run (callers sort what they
                # need): an ORDER BY here makes SQLite sort every row through a temporary B-tree.
                found = fetch(conn, query)
            if newest is not None:
                found.reverse()
            first = min((row[1] for row in found), default=from_run_id)
            window = _runs_of(conn, first, tier, evidence_only)
        nodeid_of = {i: n for n, i in ids.items()}
        out: list[AttemptRow] = []
        for row in found:
            run = window.get(row[1])
            if run is not None:
                more = (row[5] or 0.0, row[6], row[7], row[8]) if not lean else (0.0,)
                out.append(
                    AttemptRow(nodeid_of[row[0]], row[1], run[0], run[1], _stamp(run[2]),
                               row[2] or 0, bool(row[3]), row[4], *more)
                )  # fmt: skip
        return out

    def verdict_runs(
        self, nodeids: Sequence[str], *, tier: str | None, from_run_id: int
    ) -> tuple[list[AttemptRow], dict[str, int]]:
        """What a flaky verdict needs of ``nodeids`` in evidence runs from ``from_run_id`` on:
        per test, its number of runs with a pass or fail, and only the runs that can change the
        verdict, as one synthetic attempt per outcome seen in the run (``passed``, ``failed``,
        ``flaky``): its first run, the runs where it failed, the run after each of those (it
        ends a failing stretch) and every run at a commit where it failed. A stable test costs
        one row, not one per run: building a row per attempt cost more than reading them.

        Passes are most of a history and are not read one by one. Each test's results other
        than a pass come as rows (:func:`_verdict_others`: failures, reruns, skips; few); of
        the rest the database gives per test its number of runs, first and last run, and runs
        with a pass (:func:`_verdict_runs_of`). When the test has results in every run between
        its first and last (:func:`_dense_runs`) and its runs with a pass are exactly those
        without another result, or all of them, that says which runs it passed in; otherwise
        their run ids come as one string (:func:`_verdict_packed_passes`).
        """
        if not nodeids:
            return [], {}
        spans: dict[int, tuple[int, int, int, int]] = {}
        others: dict[int, list[tuple[int, str]]] = {}
        listed: dict[int, set[int]] = {}
        with self.begin() as conn:
            ids = known_ids(conn, nodeids)
            if not ids:
                return [], {}
            chunks = _id_chunks(sorted(ids.values()))
            statement = Statement(conn, _verdict_runs_of(), cached=True)
            for params in chunks:
                for test_id, *span in statement.rows(**params, from_run_id=from_run_id):
                    spans[int(test_id)] = (int(span[0]), int(span[1]), int(span[2]),
                                           int(span[3]))  # fmt: skip
            statement = Statement(conn, _verdict_others(), cached=True)
            for params in chunks:
                for test_id, run_id, outcome in statement.rows(**params, from_run_id=from_run_id):
                    others.setdefault(int(test_id), []).append((int(run_id), str(outcome)))
            every_run = Statement(conn, _RUNS_FROM, cached=True).rows(from_run_id=from_run_id)
            every = [int(row[0]) for row in every_run]
            passed_in: dict[int, tuple[int, int, set[int]]] = {}
            for test_id, (count, first, last, with_pass) in spans.items():
                dense = _dense_runs(every, count, first, last)
                also = {run_id for run_id, _ in others.get(test_id, ())}
                both = with_pass + len(also) - count  # runs with a pass and another result
                if dense is not None and both in (0, len(also)):
                    passed_in[test_id] = (first, last, also if both == 0 else set())
            sparse = sorted(spans.keys() - passed_in.keys())
            if sparse:
                statement = Statement(conn, _verdict_packed_passes(), cached=True)
                for params in _id_chunks(sparse):
                    for test_id, joined in statement.rows(**params, from_run_id=from_run_id):
                        listed[int(test_id)] = {int(v) for v in str(joined).split(",")}
        evidence = set(EVIDENCE_OUTCOMES)
        window = {
            int(i): (str(t), s)
            for i, t, s, outcome in every_run
            if outcome in evidence and (not tier or t == tier)
        }
        in_window = [run_id for run_id in every if run_id in window]
        nodeid_of = {i: n for n, i in ids.items()}
        # The window's runs by commit, once: a test's runs at its failing commits are then
        # looked up, not found by walking each of its runs.
        runs_at: dict[str, list[int]] = {}
        for run_id in in_window:
            runs_at.setdefault(_commit(run_id, window), []).append(run_id)
        rows: list[AttemptRow] = []
        totals: dict[str, int] = {}
        for test_id in sorted(spans):
            if test_id in passed_in:
                first, last, without = passed_in[test_id]
                lo = bisect.bisect_left(in_window, first)
                passed = set(in_window[lo : bisect.bisect_right(in_window, last)]) - without
            else:
                passed = {run_id for run_id in listed.get(test_id, ()) if run_id in window}
            bits_of: dict[int, int] = {}
            for run_id, outcome in others.get(test_id, ()):
                bit = _VERDICT_BITS.get(outcome)
                if bit is not None and run_id in window:
                    bits_of[run_id] = bits_of.get(run_id, 0) | bit
            in_runs = passed | bits_of.keys()
            if not in_runs:
                continue
            ordered = sorted(in_runs)
            nodeid = nodeid_of[test_id]
            totals[nodeid] = len(ordered)
            failing = sorted(run_id for run_id, bits in bits_of.items() if bits & _BAD)
            keep = {ordered[0], *failing}
            for run_id in failing:
                after = bisect.bisect_right(ordered, run_id)
                if after < len(ordered):
                    keep.add(ordered[after])  # it ends a failing stretch, or goes on with it
            for commit in {_commit(run_id, window) for run_id in failing}:
                keep.update(run_id for run_id in runs_at[commit] if run_id in in_runs)
            for run_id in sorted(keep):
                bits = bits_of.get(run_id, 0) | (_PASSED if run_id in passed else 0)
                run_tier, sha = window[run_id]
                rows += [
                    AttemptRow(nodeid, run_id, run_tier, sha, None, 0, True, outcome, 0.0)
                    for bit, outcome in _OUTCOME_OF_BIT
                    if bits & bit and not (bit != _FLAKY and bits & _FLAKY)
                ]
        return rows, totals

    def recent_durations(
        self, nodeids: Sequence[str], *, tier: str | None, from_run_id: int, limit: int
    ) -> dict[str, list[float]]:
        """Per test, the durations of its newest ``limit`` final results from ``from_run_id`` on
        (runs whose outcome is test evidence, skips left out), in one transaction: each test's
        newest rows are the end of its range of ``test_results``."""
        out: dict[str, list[float]] = {n: [] for n in nodeids}
        with self.begin() as conn:
            ids = known_ids(conn, nodeids)
            if dialect.is_postgres(conn) and ids:
                window = _window_runs(conn, from_run_id, tier)
                # One statement (a LATERAL join: each test's newest rows of
                # ix_test_results_history) instead of a round trip per test.
                rows = fetch(conn, _durations_lateral(list(ids.values()), from_run_id, limit))
                nodeid_of = {i: n for n, i in ids.items()}
                for test_id, run_id, duration in rows:
                    if run_id in window:
                        out[nodeid_of[test_id]].append(float(duration or 0.0))
                return out
            out.update(_newest_durations(conn, ids, tier, from_run_id, limit))
        return out

    def recent_percentiles(
        self,
        nodeids: Sequence[str],
        *,
        tier: str | None,
        from_run_id: int,
        limit: int,
        fractions: Sequence[float],
    ) -> dict[str, tuple[float | None, ...]]:
        """Per test, the nearest-rank percentile (``percentile_disc``: the value at rank
        ``ceil(fraction * n)``) of each of ``fractions`` over the durations
        :meth:`recent_durations` gives; ``None`` each for a test without any. PostgreSQL
        computes them in one statement (a row per test to decode, not one per result);
        SQLite's rows are in this process already."""
        out: dict[str, tuple[float | None, ...]] = {n: (None,) * len(fractions) for n in nodeids}
        with self.begin() as conn:
            ids = known_ids(conn, nodeids)
            if not ids:
                return out
            if dialect.is_postgres(conn):
                statement = Statement(conn, _percentiles_lateral(len(fractions)), cached=True)
                nodeid_of = {i: n for n, i in ids.items()}
                params = {f"f{k}": float(f) for k, f in enumerate(fractions)}
                for chunk in _id_chunks(sorted(ids.values())):
                    rows = statement.rows(
                        **chunk, **params, from_run_id=from_run_id, limit=limit, tier=tier or None
                    )
                    for test_id, *found in rows:
                        out[nodeid_of[test_id]] = tuple(
                            None if v is None else float(v) for v in found
                        )
                return out
            durations = _newest_durations(conn, ids, tier, from_run_id, limit)
        for nodeid, found in durations.items():
            out[nodeid] = tuple(_nearest_rank(found, f) for f in fractions)
        return out

    # -- quarantine ----------------------------------------------------------------------------

    def quarantine_add(self, row: QuarantineRow) -> None:
        """Add or replace the quarantine of ``row.nodeid`` (a replaced one may alert again); a
        test never run yet gets its id here."""
        values = {
            "reason": row.reason,
            "owner": row.owner,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "expiry_alerted_at": None,
        }
        with self.begin(immediate=True) as conn:
            test_id = ids_of(conn, [row.nodeid])[row.nodeid]
            statement = dialect.insert(conn, quarantine).values(test_id=test_id, **values)
            conn.execute(statement.on_conflict_do_update(index_elements=["test_id"], set_=values))

    def quarantine_remove(self, nodeid: str) -> bool:
        with self.begin() as conn:
            ids = known_ids(conn, [nodeid])
            if not ids:
                return False
            deleted = conn.execute(quarantine.delete().where(quarantine.c.test_id == ids[nodeid]))
            return bool(deleted.rowcount)

    def quarantine_list(self) -> list[QuarantineRow]:
        with self.begin() as conn:
            rows = conn.execute(_QUARANTINE_LIST).mappings()
            return [_quarantine(r) for r in rows]

    def quarantined(self, nodeids: Sequence[str], now: datetime) -> list[QuarantineRow]:
        """The unexpired quarantines among ``nodeids``."""
        if not nodeids:
            return []
        with self.begin() as conn:
            ids = known_ids(conn, nodeids)
            query = _QUARANTINE.where(
                quarantine.c.test_id.in_(list(ids.values())),
                sa.or_(quarantine.c.expires_at.is_(None), quarantine.c.expires_at > now),
            )
            return [_quarantine(r) for r in conn.execute(query).mappings()] if ids else []

    def claim_expired_quarantines(
        self, now: datetime, entries_for: Callable[[QuarantineRow], Sequence[OutboxEntry]]
    ) -> list[QuarantineRow]:
        """Mark each expired, not yet alerted quarantine as alerted and enqueue its alerts, in one
        ``BEGIN IMMEDIATE`` transaction: two processes never alert the same expiry twice."""
        claimed: list[QuarantineRow] = []
        with self.begin(immediate=True) as conn:
            rows = conn.execute(
                _QUARANTINE.where(
                    quarantine.c.expires_at.is_not(None),
                    quarantine.c.expires_at <= now,
                    quarantine.c.expiry_alerted_at.is_(None),
                )
            ).mappings()
            for found in list(rows):
                row = _quarantine(found)
                conn.execute(
                    quarantine.update()
                    .where(quarantine.c.test_id == found["test_id"])
                    .values(expiry_alerted_at=now)
                )
                for entry in entries_for(row):
                    insert_outbox_entry(conn, entry, now)
                claimed.append(row)
        return claimed


# A quarantine row with its test's nodeid.
_QUARANTINE = sa.select(tests.c.nodeid, quarantine).join(tests, tests.c.id == quarantine.c.test_id)
_QUARANTINE_LIST = _QUARANTINE.order_by(tests.c.nodeid)  # built once: every run reads it
