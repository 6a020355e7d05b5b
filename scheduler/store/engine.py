"""The store: SQLite (WAL) through SQLAlchemy Core; the only package that writes SQL.

:class:`Store` owns the connection (pragmas, WAL, transactions), the schema version and its
migrations, and the ``schedctl_meta`` key/value rows (heartbeat, cursors). Its queries come from
one mixin per concern:

- :mod:`.run_queries`: runs and their test results (``create_run`` ... ``max_run_id``)
- :mod:`.lease_queries`: GPU leases
- :mod:`.drain_queries`: drained GPUs (the health check's verdicts)
- :mod:`.image_queries`: test images built by ``kind: build`` runs
- :mod:`.outbox_queries`: the alert outbox and its guarded transitions
- :mod:`.alert_queries`: alert state and the alert recorder's atomic step
- :mod:`.stats_queries`: the aggregates the metrics collectors read
- :mod:`.history_queries`: per-test history (``test_daily``, attempts) and quarantine

Plain data lives in :mod:`.records`; tables, indexes and migrations in :mod:`.schema`. The store
persists and queries; it never interprets outcomes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import StoreError
from scheduler.store.alert_queries import AlertQueries, AlertStep, AlertTrackRow
from scheduler.store.drain_queries import DrainQueries
from scheduler.store.history_queries import (
    AttemptRow,
    HistoryQueries,
    QuarantineRow,
    TestSummaryRow,
)
from scheduler.store.image_queries import ImageBuild, ImageQueries
from scheduler.store.lease_queries import LeaseQueries
from scheduler.store.outbox_queries import (
    UNDELIVERED,
    OutboxEntry,
    OutboxQueries,
    OutboxRow,
    OutboxState,
)
from scheduler.store.records import RunRecord, TestResultRow, change_range
from scheduler.store.run_queries import ActiveRunExists, RunQueries, failure_streak
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    FINAL_OUTCOMES,
    MIGRATIONS,
    SCHEMA_VERSION,
    alert_state,
    alerts_outbox,
    gpu_leases,
    meta_table,
    metadata,
    runs,
    test_results,
)
from scheduler.store.stats_queries import (
    LeaseRow,
    StatsQueries,
    StatsReader,
    TallyRow,
    TestTallyRow,
)

__all__ = [
    "ACTIVE_OUTCOMES",
    "FINAL_OUTCOMES",
    "SCHEMA_VERSION",
    "UNDELIVERED",
    "ActiveRunExists",
    "AlertStep",
    "AlertTrackRow",
    "AttemptRow",
    "ImageBuild",
    "LeaseRow",
    "OutboxEntry",
    "OutboxRow",
    "OutboxState",
    "QuarantineRow",
    "RunRecord",
    "StatsReader",
    "Store",
    "TallyRow",
    "TestResultRow",
    "TestSummaryRow",
    "TestTallyRow",
    "alert_state",
    "alerts_outbox",
    "change_range",
    "failure_streak",
    "gpu_leases",
    "meta_table",
    "probe_writable",
    "runs",
    "test_results",
    "utcnow",
]

BUSY_TIMEOUT_S = 15.0
MMAP_BYTES = 1 << 30
CACHE_KIB = 64 * 1024
# Checkpoint the WAL into the file every this many pages (SQLite's default: 1,000). A run's
# results touch a page per test (each test's history is one range), ~500 pages for a 500-test
# run: at the default every other insert paid a checkpoint (write-back and fsync); at 10,000
# (a WAL of up to ~40 MiB) one in ~15 does, and a page rewritten by many runs is written back
# once.
WAL_AUTOCHECKPOINT_PAGES = 10_000
# Migrating from below this version rebuilds the history tables: VACUUM afterwards.
SHRINK_BELOW = 6


class Store(
    RunQueries,
    LeaseQueries,
    DrainQueries,
    ImageQueries,
    OutboxQueries,
    AlertQueries,
    StatsQueries,
    HistoryQueries,
):
    """The SQLite file under ``state_dir``; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {path.parent}: {exc}") from None
        self.engine: Engine = sa.create_engine(f"sqlite:///{path}", future=True)
        event.listen(self.engine, "connect", _on_connect)
        self.migrate()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    @contextmanager
    def begin(self, *, immediate: bool = False) -> Iterator[Connection]:
        """A transaction; SQLAlchemy errors become :class:`StoreError` naming the file.

        ``immediate`` takes the write lock up front. The sqlite3 driver only opens a transaction
        before DML, so a read-then-write (or DDL) block needs it to be atomic across processes.
        """
        try:
            with self.engine.begin() as conn:
                if immediate:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.path}: {exc.__class__.__name__}: {exc}") from exc

    def migrate(self) -> None:
        # Two processes opening a fresh file at once would both see no tables and both CREATE.
        with self.begin(immediate=True) as conn:
            version = _stored_version(conn)
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this schedctl "
                    f"({SCHEMA_VERSION}); upgrade schedctl"
                )
            # An older file takes its steps first (each in the shape of its version), then
            # create_all adds what no step states; a new file is made by create_all alone.
            for target in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(target, ()):
                    conn.exec_driver_sql(statement)
            metadata.create_all(conn)
            if version != SCHEMA_VERSION:
                conn.execute(meta_table.delete().where(meta_table.c.key == "schema_version"))
                conn.execute(
                    meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
        if version is not None and version < SHRINK_BELOW:
            self._shrink()

    def _shrink(self) -> None:
        """Give the pages a rebuilding step freed back to the file system (VACUUM runs outside
        a transaction). Best effort: while another process holds the file, it stays larger."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM")
        except SQLAlchemyError:
            pass

    def schema_version(self) -> int:
        with self.begin() as conn:
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).one()
            return int(row[0])

    # -- meta ------------------------------------------------------------------------------

    def heartbeat(self, now: datetime | None = None) -> None:
        """Write a liveness stamp; raises :class:`StoreError` when the database is not writable."""
        self.set_meta("daemon_heartbeat", (now or utcnow()).isoformat())

    def set_meta(self, key: str, value: str) -> None:
        statement = sqlite_insert(meta_table).values(key=key, value=value)
        with self.begin() as conn:
            conn.execute(
                statement.on_conflict_do_update(index_elements=["key"], set_={"value": value})
            )

    def get_meta(self, key: str) -> str | None:
        with self.begin() as conn:
            value = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == key)
            ).scalar()
        return None if value is None else str(value)


def _stored_version(conn: Connection) -> int | None:
    """The file's schema version; ``None`` for a new file (no meta table, or no version row)."""
    if not sa.inspect(conn).has_table(meta_table.name):
        return None
    row = conn.execute(
        sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).first()
    return int(row[0]) if row else None


def probe_writable(path: Path, timeout_s: float, key: str = "readyz_heartbeat") -> str | None:
    """Write a stamp into the meta table of the store at ``path``; ``None`` on success, else why.

    A plain sqlite3 connection with a short lock timeout, so a store held by a long write makes
    the probe fail fast instead of waiting out the store's own busy timeout
    (:data:`BUSY_TIMEOUT_S`).
    """
    try:
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        return f"store {path} cannot be opened: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f"INSERT OR REPLACE INTO {meta_table.name} (key, value) VALUES (?, ?)",  # noqa: S608
            (key, f"{time.time():.3f}"),
        )
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        return f"store {path} is not writable: {exc}"
    finally:
        conn.close()
    return None


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    _ensure_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # History queries read tens of thousands of index entries per call: map the file (reads
    # without a syscall and a copy per page) and keep a 64 MiB page cache per connection.
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def _ensure_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent), retrying while another process holds the lock.

    SQLite answers ``SQLITE_BUSY`` to a journal-mode change without calling the busy handler,
    so two processes opening a fresh file at once need this loop, not ``busy_timeout``.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
