"""Run rows and their per-test results: insert, update, finish, and the history lookups.

The store persists and queries; it never decides outcomes (that is :mod:`scheduler.kernel.outcome`).
A run row is inserted before anything runs, so a crash always leaves a record.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.store import dialect
from scheduler.store.base import ActiveRunExists, QueryBase, RunAlreadyFinal, aware
from scheduler.store.daily import add_to_daily
from scheduler.store.driver import Statement, fetch
from scheduler.store.nodeids import ids_of
from scheduler.store.records import (
    RunRecord,
    TestResultRow,
    failures_in_a_row,
    result_rows,
    result_values,
    stored_isoformat,
)
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    FINAL_OUTCOMES,
    RESULT_COLUMNS,
    runs,
    test_results,
    test_results_all,
    test_results_staged,
    tests,
)
from scheduler.store.staging import DELETE_MERGED, merge_statement

__all__ = ["STREAK_WINDOW", "ActiveRunExists", "RunAlreadyFinal", "RunQueries", "failure_streak"]

STREAK_WINDOW = 1000
TEST_ID_CACHE = 50_000
"""At most this many ``nodeid -> id`` entries kept per store (a few MiB)."""


class _Rehearsed(Exception):
    """Raised inside :meth:`RunQueries.rehearse_run`'s transaction to roll it back."""


class RunQueries(QueryBase):
    """``runs`` and ``test_results``."""

    _test_ids: dict[str, int]

    def create_run(
        self, run_dir_for: Callable[[int], str] | None = None, **values: Any
    ) -> int | None:
        """Insert a run row and return its id; ``None`` when the idempotency key already exists.

        ``run_dir_for`` names the run's directory from its new id, written in the same
        transaction (a fire pays one commit for both, not two).
        """
        values.setdefault("queued_at", utcnow())
        values.setdefault("outcome", Outcome.QUEUED.value)
        values["outcome"] = Outcome(values["outcome"]).value
        try:
            with self.begin(write=True) as conn:
                result = conn.execute(_INSERT_RUN, values)
                key = result.inserted_primary_key
                assert key is not None
                run_id = int(key[0])
                if run_dir_for is not None:
                    conn.execute(_UPDATE_RUN, {"run_id_": run_id, "run_dir": run_dir_for(run_id)})
                return run_id
        except IntegrityError as exc:
            key = values.get("idempotency_key")
            if key and self.get_run_by_key(key) is not None:
                return None
            if dialect.unique_violation_of(exc, "ux_runs_active_tier", "runs.tier"):
                raise ActiveRunExists(
                    f"tier {values.get('tier')!r} already has a queued or running run"
                ) from None
            raise

    def update_run(self, run_id: int, **values: Any) -> None:
        if not values:
            return
        if "outcome" in values:
            values["outcome"] = Outcome(values["outcome"]).value
        with self.begin(write=True) as conn:
            conn.execute(_UPDATE_RUN, {**values, "run_id_": run_id})

    def finish_run(
        self, run_id: int, results: Iterable[TestResultRow] = (), **values: Any
    ) -> RunRecord:
        """Write the final outcome and per-test results in one transaction."""
        outcome = Outcome(values["outcome"])
        values["outcome"] = outcome.value
        values.setdefault("finished_at", utcnow())
        results = list(results)
        with self.begin(write=True) as conn:
            # Guarded on the row still being active: two processes finishing one run (its
            # owner and a survivor host) write it once; the second gets RunAlreadyFinal.
            done = conn.execute(_FINISH_RUN, {**values, "run_id_": run_id})
            if done.rowcount != 1:
                raise RunAlreadyFinal(f"run {run_id} is already final in {self.location}")
            if results:
                # After the UPDATE: the transaction holds the write lock while it adds nodeids.
                ids = ids_of(conn, [r.nodeid for r in results], self._test_ids)
                conn.execute(_DELETE_RESULTS, {"run_id": run_id})
                conn.execute(_DELETE_STAGED, {"run_id": run_id})
                # In key order (``seq`` keeps the reported one): each insert lands beside the last.
                rows = sorted(result_values(run_id, results, ids), key=_by_test)
                _insert_results(conn, rows)
                if outcome.is_test_evidence:
                    add_to_daily(conn, run_id, values["finished_at"])
        if results:
            self._remember_test_ids(ids)  # committed: these ids are for good
        return self.get_run(run_id)

    def merge_staged(self) -> int:
        """Move every finished run's staged results into ``test_results`` (:mod:`.staging`):
        one transaction, idempotent; the number of rows it took out of staging."""
        with self.begin(write=True) as conn:
            conn.execute(merge_statement(conn.dialect.name))
            return int(conn.execute(DELETE_MERGED).rowcount or 0)

    def _remember_test_ids(self, ids: Mapping[str, int]) -> None:
        """Keep the ids of a run's tests for the next runs' inserts (the same tests, mostly):
        their lookup cost a 500-test insert ~2 ms. Bounded; a test's id never changes."""
        if len(self._test_ids) + len(ids) > TEST_ID_CACHE:
            self._test_ids.clear()
        self._test_ids.update(ids)

    def rehearse_run(self, row: Mapping[str, Any], running: Mapping[str, Any]) -> None:
        """Open a run as ``create_run(run_dir_for=...)`` does and start it as
        ``update_run(**running)`` does, then roll it all back.

        SQLAlchemy compiles a statement once per set of columns it writes, a few ms each: a
        daemon rehearses at start-up so that its first fire does not pay them. SQLite only: a
        rolled-back insert leaves no trace there, while a PostgreSQL sequence would skip an id.
        """
        try:
            with self.begin(write=True) as conn:
                if dialect.is_postgres(conn):
                    return
                values = {**row, "queued_at": utcnow(), "outcome": Outcome.QUEUED.value}
                key = conn.execute(_INSERT_RUN, values).inserted_primary_key
                assert key is not None
                conn.execute(_UPDATE_RUN, {"run_id_": int(key[0]), "run_dir": ""})
                started = {**running, "outcome": Outcome(running["outcome"]).value}
                conn.execute(_UPDATE_RUN, {**started, "run_id_": int(key[0])})
                raise _Rehearsed
        except (_Rehearsed, IntegrityError):
            pass  # rolled back; a tier with an active run now has its insert compiled all the same

    def get_run(self, run_id: int) -> RunRecord:
        with self.begin() as conn:
            row = conn.execute(_GET_RUN, {"run_id": run_id}).mappings().first()
        if row is None:
            raise UnknownRunError(f"no run with id {run_id} in {self.location}")
        return RunRecord.from_row(row)

    def get_run_by_key(self, key: str) -> RunRecord | None:
        with self.begin() as conn:
            row = conn.execute(_RUN_BY_KEY, {"key": key}).mappings().first()
        return RunRecord.from_row(row) if row else None

    def list_runs(
        self,
        tier: str | None = None,
        limit: int = 20,
        outcomes: Sequence[str] | None = None,
        before_id: int | None = None,
    ) -> list[RunRecord]:
        query = _newest_runs(sa.select(runs), tier, limit, outcomes, before_id)
        with self.begin() as conn:
            return [RunRecord.from_row(r) for r in conn.execute(query).mappings()]

    def runs_json(
        self,
        tier: str | None = None,
        limit: int = 20,
        outcomes: Sequence[str] | None = None,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """What ``[r.to_json() for r in list_runs(...)]`` gives, read straight into dicts:
        ``schedctl runs --json`` lists up to 10,000 runs, and a frozen 33-field record per row
        (each datetime and JSON column through SQLAlchemy's processors) cost more than the query.
        """
        columns = sa.select(*(runs.c[name] for name in _RECORD_COLUMNS))
        query = _newest_runs(columns, tier, limit, outcomes, before_id)
        with self.begin() as conn:
            found = fetch(conn, query)
        out = []
        for row in found:
            record = dict(zip(_RECORD_COLUMNS, row, strict=True))
            for name in _JSON_COLUMNS:
                value = record[name]
                if value == "{}":  # most runs: no source, details or counts yet
                    record[name] = {}
                elif value == "[]":
                    record[name] = []
                elif isinstance(value, str | bytes):
                    record[name] = json.loads(value)
            for name in _DATETIME_COLUMNS:
                value = record[name]
                if value is not None:
                    record[name] = stored_isoformat(value)
            record["run_id"] = record["id"]
            out.append(record)
        return out

    def active_runs(self, tier: str | None = None) -> list[RunRecord]:
        """Queued and running runs (of ``tier``), newest first; read on every fire."""
        with self.begin() as conn:
            if tier is None:
                found = conn.execute(_ACTIVE_RUNS).mappings()
            else:
                found = conn.execute(_ACTIVE_RUNS_OF_TIER, {"tier": tier}).mappings()
            return [RunRecord.from_row(r) for r in found]

    def last_run(self, tier: str, outcomes: Sequence[str] | None = None) -> RunRecord | None:
        found = self.list_runs(tier=tier, limit=1, outcomes=outcomes)
        return found[0] if found else None

    def last_green(self, tier: str, before_id: int | None = None) -> RunRecord | None:
        found = self.list_runs(
            tier=tier, limit=1, outcomes=[Outcome.PASSED.value], before_id=before_id
        )
        return found[0] if found else None

    def last_slot(self, tier: str) -> datetime | None:
        with self.begin() as conn:
            value = conn.execute(_LAST_SLOT, {"tier": tier}).scalar()
        return aware(value) if value is not None else None

    def fire_reads(self, tier: str) -> tuple[datetime | None, list[RunRecord]]:
        """What a cron fire reads before it records its run, in one transaction: the tier's
        :meth:`last_slot` and every :meth:`active_runs` (the overlap and staleness checks)."""
        with self.begin() as conn:
            value = conn.execute(_LAST_SLOT, {"tier": tier}).scalar()
            actives = [RunRecord.from_row(r) for r in conn.execute(_ACTIVE_RUNS).mappings()]
        return (aware(value) if value is not None else None), actives

    def consecutive_failures(self, tier: str, up_to_run_id: int | None = None) -> int:
        """Test-failure outcomes since the last pass; infra outcomes neither count nor break it."""
        with self.begin() as conn:
            return failure_streak(conn, tier, up_to_run_id)

    def test_results_for(self, run_id: int, attempts: bool = False) -> list[TestResultRow]:
        """The run's per-test results in the order they were reported: each test's final
        attempt, or (``attempts``) every one."""
        with self.begin() as conn:
            found = Statement(conn, _RUN_RESULTS, cached=True).rows(run_id=run_id)
        return result_rows(found, attempts)

    def prunable_runs(
        self, passed_before: datetime, failed_before: datetime, limit: int, host: str | None = None
    ) -> list[tuple[int, str]]:
        """Finished, not yet pruned runs past their retention (passed vs the rest), oldest first;
        only ``host``'s runs when given (a shared store: each daemon prunes its own run dirs)."""
        others = [o for o in FINAL_OUTCOMES if o != Outcome.PASSED.value]
        old_passed = sa.and_(
            runs.c.outcome == Outcome.PASSED.value, runs.c.finished_at < passed_before
        )
        old_other = sa.and_(runs.c.outcome.in_(others), runs.c.finished_at < failed_before)
        query = (
            sa.select(runs.c.id, runs.c.run_dir)
            .where(
                runs.c.pruned_at.is_(None),
                runs.c.run_dir.is_not(None),
                sa.or_(old_passed, old_other),
            )
            .order_by(runs.c.id)
            .limit(limit)
        )
        if host is not None:
            query = query.where(runs.c.host == host)
        with self.begin() as conn:
            return [(int(r.id), str(r.run_dir)) for r in conn.execute(query)]

    def runs_after(self, run_id: int, limit: int) -> list[RunRecord]:
        """Runs with an id above ``run_id``, oldest first."""
        query = sa.select(runs).where(runs.c.id > run_id).order_by(runs.c.id).limit(limit)
        with self.begin() as conn:
            return [RunRecord.from_row(r) for r in conn.execute(query).mappings()]

    def run_hosts(self, run_ids: Sequence[int]) -> dict[int, str | None]:
        """``{run id: host}`` of ``run_ids`` (a shared store: which box ran each)."""
        if not run_ids:
            return {}
        query = sa.select(runs.c.id, runs.c.host).where(runs.c.id.in_(sorted(set(run_ids))))
        with self.begin() as conn:
            return {int(r.id): r.host for r in conn.execute(query)}

    def max_run_id(self) -> int:
        with self.begin() as conn:
            return int(conn.execute(sa.select(sa.func.max(runs.c.id))).scalar() or 0)


# The statements a fire runs, built once: constructing a statement per call (and its cache key)
# cost SQLAlchemy more than SQLite took to run it. ``_UPDATE_RUN`` sets the columns named in its
# parameters (``run_id_`` selects the row).
_INSERT_RUN = runs.insert()
_UPDATE_RUN = runs.update().where(runs.c.id == sa.bindparam("run_id_", type_=sa.Integer))
_FINISH_RUN = _UPDATE_RUN.where(runs.c.outcome.in_(ACTIVE_OUTCOMES))
_DELETE_RESULTS = test_results.delete().where(
    test_results.c.run_id == sa.bindparam("run_id", type_=sa.Integer)
)
_DELETE_STAGED = test_results_staged.delete().where(
    test_results_staged.c.run_id == sa.bindparam("run_id", type_=sa.Integer)
)
_by_test = operator.itemgetter("test_id", "attempt", "seq")
_GET_RUN = sa.select(runs).where(runs.c.id == sa.bindparam("run_id", type_=sa.Integer))
_RUN_BY_KEY = sa.select(runs).where(runs.c.idempotency_key == sa.bindparam("key", type_=sa.String))
_LAST_SLOT = sa.select(sa.func.max(runs.c.slot)).where(
    runs.c.tier == sa.bindparam("tier", type_=sa.String)
)
_ACTIVE_RUNS = (
    sa.select(runs)
    .where(runs.c.outcome.in_(ACTIVE_OUTCOMES))
    .order_by(runs.c.id.desc())
    .limit(1000)
)
_ACTIVE_RUNS_OF_TIER = _ACTIVE_RUNS.where(runs.c.tier == sa.bindparam("tier", type_=sa.String))

_RECORD_COLUMNS = tuple(f.name for f in fields(RunRecord) if f.name in runs.c)
_JSON_COLUMNS = tuple(n for n in _RECORD_COLUMNS if isinstance(runs.c[n].type, sa.JSON))
_DATETIME_COLUMNS = tuple(n for n in _RECORD_COLUMNS if isinstance(runs.c[n].type, sa.DateTime))


_RUN_RESULTS = (
    sa.select(
        test_results_all.c.seq,
        tests.c.nodeid,
        test_results_all.c.outcome,
        test_results_all.c.duration_s,
        test_results_all.c.markers,
        test_results_all.c.message,
        test_results_all.c.attempt,
        test_results_all.c.final,
        test_results_all.c.peak_rss_bytes,
        test_results_all.c.rss_method,
        test_results_all.c.cuda_peak_bytes,
        test_results_all.c.owner,
    )
    .join(tests, tests.c.id == test_results_all.c.test_id)
    .where(test_results_all.c.run_id == sa.bindparam("run_id", 0))
)
# A finish writes into the run-ordered staging table (see :mod:`.staging`), in
# ``test_results``' column order (the sqlite3 writer's row tuples are in it).
_INSERT_RESULTS = test_results_staged.insert().values(
    {name: sa.bindparam(name) for name in RESULT_COLUMNS}
)
_NULLABLE_RESULT_COLUMNS = tuple(c.name for c in test_results.columns if c.nullable)


@functools.lru_cache(maxsize=64)
def _insert_results_without(nulls: tuple[str, ...]) -> sa.Insert:
    """:data:`_INSERT_RESULTS` less the nullable columns ``nulls`` (left NULL: no defaults)."""
    if not nulls:
        return _INSERT_RESULTS
    return test_results_staged.insert().values(
        {name: sa.bindparam(name) for name in RESULT_COLUMNS if name not in nulls}
    )


def _insert_results(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (in key order), each without the nullable columns it leaves NULL.

    SQLite's driver sends every bound ``None`` through its adapter lookup, about as costly as
    SQLite's own insert of the row (see :mod:`.writer`): rows are grouped by which of their
    columns are NULL (a run has a few such groups), each group keeping the key order.
    """
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        nulls = tuple(name for name in _NULLABLE_RESULT_COLUMNS if row[name] is None)
        groups.setdefault(nulls, []).append(row)
    for nulls, group in groups.items():
        Statement(conn, _insert_results_without(nulls), cached=True).many(group)


def failure_streak(conn: Connection, tier: str, up_to_run_id: int | None = None) -> int:
    """Test-failure runs of ``tier`` (up to a run) since its last pass, on an open connection.

    Infra outcomes neither count nor break the streak; only the newest ``STREAK_WINDOW`` final
    runs are read.
    """
    query = sa.select(runs.c.outcome).where(runs.c.tier == tier, runs.c.outcome.in_(FINAL_OUTCOMES))
    if up_to_run_id is not None:
        query = query.where(runs.c.id <= up_to_run_id)
    found = conn.execute(query.order_by(runs.c.id.desc()).limit(STREAK_WINDOW))
    return failures_in_a_row(value for (value,) in found)


def _newest_runs(
    query: sa.Select[Any],
    tier: str | None,
    limit: int,
    outcomes: Sequence[str] | None,
    before_id: int | None,
) -> sa.Select[Any]:
    """``query`` over ``runs``, newest first, filtered as ``schedctl runs`` filters."""
    query = query.order_by(runs.c.id.desc()).limit(limit)
    if tier:
        query = query.where(runs.c.tier == tier)
    if outcomes:
        query = query.where(runs.c.outcome.in_(list(outcomes)))
    if before_id is not None:
        query = query.where(runs.c.id < before_id)
    return query
