"""A run's lifecycle written to a SQLite store on the standard ``sqlite3`` module: no SQLAlchemy.

``schedctl run`` opens a run row, marks it running, records what it checked out and finishes it
with its results; importing SQLAlchemy and building the schema cost it more than all of that
(a third of a second per run). On a SQLite store whose schema is the one this schedctl speaks,
it writes through :class:`SqliteWriter`, which runs the statements of :mod:`.sqlite_writes`
(generated from Core statements by :mod:`.writes`) and binds the values as SQLAlchemy's types
would have (datetimes as SQLite's text, JSON, booleans), and reads through the light reader's
statements (:class:`~.reader.SqliteReader`). It answers and writes exactly as
:class:`~.engine.Store` does for the methods of
:class:`~scheduler.run.protocols.RunStore` (a contract test runs both on the same calls).

Semantics kept from the store: the same connection settings (:mod:`.pragmas`: WAL, busy
timeout), a write transaction per call that takes SQLite's write lock up front, writers of this
process queueing on a lock of their own (``Store.begin(write=True)``), the guarded finish
(:class:`RunAlreadyFinal`), the unique index on active runs (:class:`ActiveRunExists`), the
idempotency key (``create_run`` returns ``None``) and the cache of test ids.

:func:`open_writer` returns ``None`` whenever the full store has to be opened instead: no
database file yet (the store creates it) or a schema version other than the generated one (the
store migrates or refuses it with its own message). Anything beyond a run's lifecycle (GPU
leases, image builds) asks :meth:`SqliteWriter.full_store`, which opens the full store on the
same file.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import StoreError
from scheduler.kernel.outcome import Outcome
from scheduler.store.base import ActiveRunExists, RunAlreadyFinal
from scheduler.store.pragmas import BUSY_TIMEOUT_S, configure_connection
from scheduler.store.reader import SqliteReader, _convert
from scheduler.store.records import RunRecord, TestResultRow
from scheduler.store.rollups import day_of, week_of
from scheduler.store.sqlite_reads import STATEMENTS as READS
from scheduler.store.sqlite_writes import (
    CHUNK,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    STATEMENTS,
    UPDATES,
)

if TYPE_CHECKING:
    from scheduler.store.engine import Store

__all__ = ["SqliteWriter", "bind_datetime", "open_writer"]

TEST_ID_CACHE = 50_000
"""At most this many ``nodeid -> id`` entries kept (as :class:`~.engine.Store` keeps)."""
_full_sql, _RESULT_COLUMNS, _ = STATEMENTS["insert_results"]
"""The result columns in the generated insert's order (into ``test_results_staged``, in
``test_results``' column order): a result row's tuple order."""
_NULLABLE = tuple(
    i
    for i, name in enumerate(_RESULT_COLUMNS)
    if name in {"message", "peak_rss_bytes", "rss_method", "cuda_peak_bytes", "owner"}
)
# test_id, attempt, seq: the clustered key's order (run_id is the same in all of a run's rows)
_by_test = operator.itemgetter(*map(_RESULT_COLUMNS.index, ("test_id", "attempt", "seq")))


def _insert_sql(columns: Sequence[str]) -> str:
    """The plain insert of ``columns`` (the generated statement's text for all of them)."""
    names, marks = ", ".join(columns), ", ".join("?" * len(columns))
    return f"INSERT INTO test_results_staged ({names}) VALUES ({marks})"  # noqa: S608 -- ours


if _full_sql != _insert_sql(_RESULT_COLUMNS):
    # The inserts below are the generated one less some NULL columns: check it is still the
    # plain insert of its columns in their order.
    raise ImportError(f"insert_results is not the plain insert of {_RESULT_COLUMNS}")


@functools.lru_cache(maxsize=64)
def _insert_without(nulls: tuple[int, ...]) -> tuple[str, Callable[[Any], Any]]:
    """The generated insert less the columns at ``nulls`` (NULL, as an omitted nullable column
    with no default is), and the getter of the other values of a row tuple."""
    keep = [i for i in range(len(_RESULT_COLUMNS)) if i not in nulls]
    return _insert_sql([_RESULT_COLUMNS[i] for i in keep]), operator.itemgetter(*keep)


def _insert_results(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (:func:`_result_tuples`), each without the columns it leaves NULL.

    Python's ``sqlite3`` sends every bound ``None`` through its adapter lookup (a tuple, a dict
    miss, two attribute misses; ints, floats and strings skip it): with a passed test's four
    NULLs that cost about as much as SQLite's own insert of the row. Rows are grouped by which
    of them are NULL (a run has a few such groups), each group in key order.
    """
    groups: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(tuple(i for i in _NULLABLE if row[i] is None), []).append(row)
    for nulls, group in groups.items():
        sql, values = _insert_without(nulls)
        conn.executemany(sql, map(values, group))


def _result_tuples(
    run_id: int, results: Sequence[TestResultRow], ids: Mapping[str, int]
) -> list[tuple[Any, ...]]:
    """The ``test_results`` rows of :func:`~.records.result_values` as tuples in the insert's
    parameter order, in key order (each insert lands beside the last): no dict per row."""
    rows = [
        (
            ids[r.nodeid],
            run_id,
            r.attempt,
            seq,
            1 if r.final else 0,  # as SQLAlchemy binds a Boolean (an int skips the adapter)
            r.outcome,
            r.duration_s,
            r.markers,
            r.message,
            r.peak_rss_bytes,
            r.rss_method,
            r.cuda_peak_bytes,
            r.owner,
        )
        for seq, r in enumerate(results)
    ]
    rows.sort(key=_by_test)
    return rows


_TEST, _SEQ, _FINAL = map(_RESULT_COLUMNS.index, ("test_id", "seq", "final"))


def _superseded(rows: Sequence[tuple[Any, ...]]) -> str:
    """The ``seq`` of each final row of ``rows`` (:func:`_result_tuples`) that a later final
    row of the same test supersedes (a run that reports a test twice), as a JSON array: what
    :func:`~.daily.rollup_from_results` finds with its ``NOT EXISTS``, for the ``skipping``
    upserts. ``[]`` for a run that reports each test once."""
    last: dict[int, int] = {}
    superseded: list[int] = []
    for row in rows:
        if row[_FINAL]:
            test, seq = row[_TEST], row[_SEQ]
            before = last.get(test)
            if before is not None:
                superseded.append(min(before, seq))
                seq = max(before, seq)
            last[test] = seq
    return json.dumps(sorted(superseded))


def _has_json_each(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has ``json_each`` (built in since 3.38; an option before): the
    ``_skipping`` rollups need it, the others find the superseded rows themselves."""
    try:
        conn.execute("SELECT count(*) FROM json_each('[]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def open_writer(path: Path) -> SqliteWriter | None:
    """A writer on the SQLite file ``path``; ``None`` when the full store must open it."""
    if not path.is_file():
        return None
    try:
        writer = SqliteWriter(path)
    except StoreError:
        return None
    try:
        version = writer.schema_version()
    except StoreError:
        version = None
    if version != SCHEMA_VERSION:
        writer.close()
        return None
    return writer


def bind_datetime(value: Any) -> Any:
    """``value`` as SQLAlchemy's SQLite ``DateTime`` binds it: its fields as text, naive."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
        )
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d} 00:00:00.000000"
    raise TypeError("SQLite DateTime type only accepts Python datetime and date objects as input.")


def _bind(kind: str, value: Any) -> Any:
    if kind == "datetime":
        return bind_datetime(value)
    if kind == "json":
        return json.dumps(value)  # None too: SQLAlchemy's JSON stores it as 'null'
    if kind == "bool" and value is not None:
        return int(bool(value))
    return value


def _args(statement: tuple[str, tuple[str, ...], dict[str, Any]], **params: Any) -> list[Any]:
    _sql, order, defaults = statement
    values = {**defaults, **params}
    return [values[name] for name in order]


class SqliteWriter(SqliteReader):
    """Writes (and reads) a run's rows in a schedctl SQLite store; see the module docstring.

    Safe to share between threads: one connection, used under one lock. Errors name the file.
    """

    is_postgres = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._lock = threading.RLock()
        self._test_ids: dict[str, int] = {}
        self._full: Store | None = None
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            configure_connection(self._conn.cursor())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.location}: {exc.__class__.__name__}: {exc}") from None
        self._rollup_suffix = "_skipping" if _has_json_each(self._conn) else ""

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        with self._lock:
            if self._full is not None:
                self._full.close()
                self._full = None
            self._conn.close()

    def full_store(self) -> Store:
        """The full store on the same file, opened on first use (SQLAlchemy is imported then)."""
        with self._lock:
            if self._full is None:
                from scheduler.store.engine import Store

                self._full = Store(self.path)
            return self._full

    def _raw(self, name: str, **params: Any) -> list[Any]:
        with self._lock:
            return super()._raw(name, **params)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"{self.location}: {exc.__class__.__name__}: {exc}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: this process's writers queue on the lock, other processes meet
        SQLite's busy handler (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error(exc) from exc

    def _run_sets(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        items = []
        args = []
        for name, value in values.items():
            try:
                item, kind, _default = RUN_COLUMNS[name]
            except KeyError:
                raise StoreError(f"{self.location}: runs has no column {name!r}") from None
            items.append(item)
            args.append(_bind(kind, value))
        return ", ".join(items), args

    def _update(self, conn: sqlite3.Connection, which: str, run_id: int, values: Any) -> int:
        template, order, defaults = UPDATES[which]
        sets, args = self._run_sets(values)
        where = {**defaults, "run_id_": run_id}
        cursor = conn.execute(template.replace("{sets}", sets), [*args, *(where[k] for k in order)])
        return int(cursor.rowcount)

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self, run_dir_for: Callable[[int], str] | None = None, **values: Any
    ) -> int | None:
        """As :meth:`~.run_queries.RunQueries.create_run`."""
        values.setdefault("queued_at", utcnow())
        values.setdefault("outcome", Outcome.QUEUED.value)
        values["outcome"] = Outcome(values["outcome"]).value
        unknown = set(values) - set(RUN_COLUMNS)
        if unknown:
            raise StoreError(f"{self.location}: runs has no column {sorted(unknown)[0]!r}")
        sql, order, _defaults = STATEMENTS["insert_run"]
        args = [
            _bind(RUN_COLUMNS[name][1], values[name]) if name in values else RUN_COLUMNS[name][2]
            for name in order
        ]
        try:
            with self._write() as conn:
                cursor = conn.execute(sql, args)
                run_id = cursor.lastrowid
                assert run_id is not None
                if run_dir_for is not None:
                    self._update(conn, "update_run", run_id, {"run_dir": run_dir_for(run_id)})
                return int(run_id)
        except sqlite3.IntegrityError as exc:
            key = values.get("idempotency_key")
            if key and self.get_run_by_key(key) is not None:
                return None
            if "runs.tier" in str(exc) or "ux_runs_active_tier" in str(exc):
                raise ActiveRunExists(
                    f"tier {values.get('tier')!r} already has a queued or running run"
                ) from None
            raise self._error(exc) from exc
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def get_run_by_key(self, key: str) -> RunRecord | None:
        found = self._execute("run_by_key", key=key)
        if not found:
            return None
        # The same columns as the reader's ``run`` statement (both select every runs column).
        columns = READS["run"][2]
        return RunRecord.from_row(
            {c: _convert(kind, v) for (c, kind), v in zip(columns, found[0], strict=True)}
        )

    def _execute(self, name: str, **params: Any) -> list[Any]:
        statement = STATEMENTS[name]
        with self._lock:
            try:
                return self._conn.execute(statement[0], _args(statement, **params)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def update_run(self, run_id: int, **values: Any) -> None:
        if not values:
            return
        if "outcome" in values:
            values["outcome"] = Outcome(values["outcome"]).value
        try:
            with self._write() as conn:
                self._update(conn, "update_run", run_id, values)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def finish_run(
        self, run_id: int, results: Iterable[TestResultRow] = (), **values: Any
    ) -> RunRecord:
        """As :meth:`~.run_queries.RunQueries.finish_run`: the final outcome, per-test results
        and rollups in one transaction."""
        outcome = Outcome(values["outcome"])
        values["outcome"] = outcome.value
        values.setdefault("finished_at", utcnow())
        results = list(results)
        ids: dict[str, int] = {}
        try:
            with self._write() as conn:
                if self._update(conn, "finish_run", run_id, values) != 1:
                    raise RunAlreadyFinal(f"run {run_id} is already final in {self.location}")
                if results:
                    ids = self._ids_of(conn, [r.nodeid for r in results])
                    for name in ("delete_results", "delete_staged"):
                        delete = STATEMENTS[name]
                        conn.execute(delete[0], _args(delete, run_id=run_id))
                    rows = _result_tuples(run_id, results, ids)
                    _insert_results(conn, rows)
                    if outcome.is_test_evidence:
                        finished = values["finished_at"]
                        self._add_to_daily(conn, run_id, finished, _superseded(rows))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if results:
            if len(self._test_ids) + len(ids) > TEST_ID_CACHE:
                self._test_ids.clear()
            self._test_ids.update(ids)  # committed: these ids are for good
        return self.get_run(run_id)

    def _known_ids(self, conn: sqlite3.Connection, nodeids: Sequence[str]) -> dict[str, int]:
        sql = STATEMENTS["test_ids"][0]
        wanted = sorted(set(nodeids))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            chunk += [chunk[-1]] * (CHUNK - len(chunk))  # a repeat in IN changes nothing
            found.update((str(n), int(i)) for n, i in conn.execute(sql, chunk))
        return found

    def _ids_of(self, conn: sqlite3.Connection, nodeids: Sequence[str]) -> dict[str, int]:
        """As :func:`~.nodeids.ids_of`, in the write transaction: known ids from the cache,
        the rest looked up, new nodeids added in the order given."""
        known = self._test_ids
        found = {n: known[n] for n in nodeids if n in known}
        rest = [n for n in nodeids if n not in found]
        if rest:
            found.update(self._known_ids(conn, rest))
        new = [n for n in dict.fromkeys(nodeids) if n not in found]
        if new:
            conn.executemany(STATEMENTS["insert_tests"][0], [(n,) for n in new])
            found.update(self._known_ids(conn, new))
        return found

    def _add_to_daily(
        self, conn: sqlite3.Connection, run_id: int, finished_at: datetime, superseded: str
    ) -> None:
        """As :func:`~.daily.add_to_daily`: one upsert per table from the rows just written,
        less the ``superseded`` ones (:func:`_superseded`; without ``json_each``, the store's
        upserts, which find them)."""
        day = day_of(finished_at)
        keys = {"day": day, "week": week_of(day)}
        stamp = bind_datetime(finished_at)
        for period in ("day", "week"):
            statement = STATEMENTS[f"rollup_{period}{self._rollup_suffix}"]
            args = _args(
                statement,
                period_key=keys[period],
                run_id=run_id,
                stamp=stamp,
                superseded=superseded,
            )
            conn.execute(statement[0], args)

    def merge_staged(self) -> int:
        """As :meth:`~.run_queries.RunQueries.merge_staged` (:mod:`.staging`): every finished
        run's staged results moved into ``test_results`` in one transaction."""
        try:
            with self._write() as conn:
                merge = STATEMENTS["merge_results"]
                conn.execute(merge[0], _args(merge))
                delete = STATEMENTS["delete_merged"]
                return int(conn.execute(delete[0], _args(delete)).rowcount)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def rehearse_run(self, row: Mapping[str, Any], running: Mapping[str, Any]) -> None:
        """Nothing to rehearse: the statements are compiled already (see :mod:`.writes`)."""

    def release_dead_leases(self) -> int:
        """As :meth:`~.lease_queries.LeaseQueries.release_dead_leases`."""
        statement = STATEMENTS["release_dead_leases"]
        try:
            with self._write() as conn:
                return int(conn.execute(statement[0], _args(statement)).rowcount)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    # -- file ------------------------------------------------------------------------------

    def wal_bytes(self) -> int:
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except OSError:
            return 0

    def checkpoint(self, min_wal_bytes: int = 0) -> tuple[int, int] | None:
        """As :meth:`~.engine.Store.checkpoint` (a ``PASSIVE`` checkpoint past a WAL size)."""
        if self.wal_bytes() < max(min_wal_bytes, 1):
            return None
        with self._lock:
            try:
                row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.location}: checkpoint: {exc}") from exc
        return int(row[1]), int(row[2])
