"""The store: SQLite (WAL) or PostgreSQL through SQLAlchemy Core; the only package that writes SQL.

:class:`Store` owns the connection (SQLite pragmas and WAL, or a psycopg 3 pool), transactions,
the schema version and its migrations, and the ``schedctl_meta`` key/value rows (heartbeat,
cursors). SQLite is the embedded default for one box; a PostgreSQL store is shared by several
daemons (``store: postgresql://user@host/db``). What differs between the two is in
:mod:`.dialect`. Its queries come from one mixin per concern:

- :mod:`.run_queries`: runs and their test results (``create_run`` ... ``max_run_id``)
- :mod:`.lease_queries`: GPU leases
- :mod:`.drain_queries`: drained GPUs (the health check's verdicts)
- :mod:`.image_queries`: test images built by ``kind: build`` runs
- :mod:`.outbox_queries`: the alert outbox and its guarded transitions
- :mod:`.alert_queries`: alert state and the alert recorder's atomic step
- :mod:`.stats_queries`: the aggregates the metrics collectors read
- :mod:`.history_queries`: per-test history (``test_daily``, attempts) and quarantine
- :mod:`.web_queries`: what the web pages and the slowest-tests gauge read (filtered runs)

Plain data lives in :mod:`.records`; tables, indexes and migrations in :mod:`.schema`. The store
persists and queries; it never interprets outcomes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import StoreConnectError, StoreError
from scheduler.store import dialect
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
from scheduler.store.pragmas import configure_connection
from scheduler.store.records import RunRecord, TestResultRow, change_range
from scheduler.store.run_queries import (
    ActiveRunExists,
    RunAlreadyFinal,
    RunQueries,
    failure_streak,
)
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
    postgres_options,
    runs,
    test_results,
    view_ddl,
)
from scheduler.store.stats_queries import (
    LeaseRow,
    StatsQueries,
    StatsReader,
    TallyRow,
    TestTallyRow,
)
from scheduler.store.web_queries import RunFilter, SlowTest, WebQueries

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
    "RunAlreadyFinal",
    "RunFilter",
    "RunRecord",
    "SlowTest",
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
    "is_postgres_url",
    "meta_table",
    "probe_writable",
    "runs",
    "test_results",
    "utcnow",
]

# The connection settings (busy timeout, WAL, page cache, checkpoints) are shared with the
# sqlite3 writer: see :mod:`.pragmas`.
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
    WebQueries,
):
    """The SQLite file under ``state_dir``, or a shared PostgreSQL database; safe to share
    between threads and processes (and, on PostgreSQL, between hosts).

    ``target`` is a file path (or ``sqlite:///PATH``) or a ``postgresql://user@host[:port]/db``
    URL; the password comes separately (``password``), never in the URL. By default
    (``migrate=None``) a SQLite file is created and migrated on open, and a PostgreSQL database
    is only checked: its schema is made and upgraded explicitly by ``schedctl store migrate``
    (:meth:`migrate`). ``migrate=True`` migrates either; ``False`` connects and leaves the schema
    alone.

    Raises:
        StoreConnectError: the database cannot be reached or refuses the login (exit code 2).
        StoreError: the schema is missing, older or newer than this schedctl.
    """

    def __init__(
        self,
        target: Path | str,
        *,
        password: str | None = None,
        migrate: bool | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.is_postgres = isinstance(target, str) and is_postgres_url(target)
        self._writes = threading.RLock()
        self._test_ids: dict[str, int] = {}
        if self.is_postgres:
            assert isinstance(target, str)
            postgres_options()
            url = sa.make_url(target)
            self.location = url.set(password=None).render_as_string(hide_password=True)
            url = url.set(drivername="postgresql+psycopg")
            if password is not None:
                url = url.set(password=password)
            self._password = str(url.password) if url.password else None
            self.path = Path(url.database or "postgresql")
            self.engine: Engine = sa.create_engine(
                url,
                future=True,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=8,
                connect_args={
                    "connect_timeout": max(1, int(connect_timeout_s)),
                    "options": "-c timezone=UTC",
                    "application_name": "schedctl",
                },
            )
            self._check_connect()
            if migrate:
                self.migrate()
            elif migrate is None:
                self.check_schema()
            return
        path = Path(str(target).removeprefix("sqlite:///"))
        self._password = None
        self.path = path
        self.location = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {path.parent}: {exc}") from None
        self.engine = sa.create_engine(f"sqlite:///{path}", future=True)
        event.listen(self.engine, "connect", _on_connect)
        if migrate is None or migrate:
            self.migrate()

    @property
    def url(self) -> str:
        """Where the store is, without its password (SQLite: ``sqlite:///PATH``)."""
        return self.location if self.is_postgres else f"sqlite:///{self.path}"

    def close(self) -> None:
        self.close_version_probe()
        self.engine.dispose()

    def full_store(self) -> Store:
        """This store (the sqlite3 writer opens one on its file for what it does not do)."""
        return self

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _check_connect(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except OperationalError as exc:
            self.engine.dispose()
            raise StoreConnectError(
                f"store {self.location}: cannot connect: {_first_line(self._redact(str(exc.orig)))}"
            ) from None
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreConnectError(
                f"store {self.location}: cannot connect: {exc.__class__.__name__}"
            ) from None

    @contextmanager
    def begin(self, *, immediate: bool = False, write: bool = False) -> Iterator[Connection]:
        """A transaction; SQLAlchemy errors become :class:`StoreError` naming the store.

        ``immediate`` makes a read-then-write (or DDL) block one step across processes: SQLite
        takes the write lock up front (the sqlite3 driver only opens a transaction before DML);
        PostgreSQL takes a transaction-scoped advisory lock (see :func:`.dialect.serialise`).

        ``write`` (SQLite) says the transaction writes: this process's writers then queue on a
        lock of their own, woken the moment it is free, instead of meeting SQLite's busy
        handler, which sleeps 1, 2, 5, 10 ... ms between tries (five tiers firing in the same
        second wrote their rows that way). Other processes still meet the busy handler.
        """
        hold = self._writes if (write or immediate) and not self.is_postgres else nullcontext()
        try:
            with hold, self.engine.begin() as conn:
                if immediate:
                    dialect.serialise(conn)
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            detail = self._redact(f"{exc.__class__.__name__}: {exc}")
            raise StoreError(f"{self.location}: {_first_line(detail)}") from exc

    def _read_version(self, conn: Connection) -> int | None:
        """The stored schema version; ``None`` when the database has no schedctl schema."""
        if not sa.inspect(conn).has_table(meta_table.name):
            return None
        row = conn.execute(
            sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
        ).first()
        return int(row[0]) if row else None

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location}: schema version {version} is newer than this schedctl "
                f"({SCHEMA_VERSION}); upgrade schedctl"
            )

    def check_schema(self) -> int:
        """The schema version, if it is the one this schedctl speaks; else a clear refusal."""
        with self.begin() as conn:
            version = self._read_version(conn)
        if version is None:
            raise StoreError(
                f"{self.location}: no schedctl schema in this database; "
                "run `schedctl store migrate` first"
            )
        self._refuse_newer(version)
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.location}: schema version {version} is older than this schedctl "
                f"({SCHEMA_VERSION}); run `schedctl store migrate`"
            )
        return version

    def migrate(self) -> tuple[int | None, int]:
        """Create or upgrade the schema to :data:`SCHEMA_VERSION`; ``(before, after)``.

        One mechanism on both engines: the steps of :data:`MIGRATIONS` above the stored version
        run in order, then ``create_all`` makes what is still missing, and the version row is
        written, all in one serialised transaction. A PostgreSQL database starts at the version that
        first supported PostgreSQL (:data:`POSTGRES_SINCE`): the steps before it are SQLite's.
        """
        # Two processes opening a fresh file at once would both see no tables and both CREATE.
        with self.begin(immediate=True) as conn:
            before = self._read_version(conn)
            # No version row: create_all alone makes the newest schema, nothing to migrate.
            version = SCHEMA_VERSION if before is None else before
            self._refuse_newer(version)
            if self.is_postgres and version < POSTGRES_SINCE:
                raise StoreError(
                    f"{self.location}: schema version {version} predates PostgreSQL support "
                    f"({POSTGRES_SINCE}); start from an empty database and `schedctl store copy`"
                )
            # An older file takes its steps first (each in the shape of its version), then
            # create_all adds what no step states; a new file is made by create_all alone.
            for target in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(target, ()):
                    conn.exec_driver_sql(statement)
            metadata.create_all(conn)
            if before is None or version != SCHEMA_VERSION:
                conn.exec_driver_sql(view_ddl(conn.dialect.name))
                conn.execute(meta_table.delete().where(meta_table.c.key == "schema_version"))
                conn.execute(
                    meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
        if before is not None and before < SHRINK_BELOW and not self.is_postgres:
            self._shrink()
        return before, SCHEMA_VERSION

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

    def probe(self, timeout_s: float) -> str | None:
        """Write a stamp into the meta table within ``timeout_s``: ``None``, else why not."""
        if not self.is_postgres:
            return probe_writable(self.path, timeout_s)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
                _upsert_meta(conn, "readyz_heartbeat", f"{time.time():.3f}")
        except SQLAlchemyError as exc:
            return f"store {self.location} is not writable: {exc.__class__.__name__}"
        return None

    def analyze(self) -> None:
        """Refresh the planner's statistics (PostgreSQL: ``VACUUM ANALYZE``, which also lets
        index-only scans skip the heap; SQLite: ``ANALYZE``) -- after a bulk load or copy."""
        if self.is_postgres:
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
            return
        with self.begin() as conn:
            conn.exec_driver_sql("ANALYZE")

    def wal_bytes(self) -> int:
        """The size of the SQLite write-ahead log (0: none, or PostgreSQL)."""
        if self.is_postgres:
            return 0
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except OSError:
            return 0

    def checkpoint(self, min_wal_bytes: int = 0) -> tuple[int, int] | None:
        """Copy the WAL's committed pages back into the database file (SQLite: a ``PASSIVE``
        checkpoint, which waits for no reader or writer); ``(WAL frames, frames copied)``.

        Inserts do not checkpoint (see :data:`WAL_AUTOCHECKPOINT_PAGES`): the daemon calls
        this on a timer and a CLI run at its end, so the WAL starts over instead of growing.
        ``None`` on PostgreSQL, and when the WAL is smaller than ``min_wal_bytes``.
        """
        if self.is_postgres or self.wal_bytes() < max(min_wal_bytes, 1):
            return None
        try:
            with self.engine.connect() as conn:
                row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.location}: checkpoint: {_first_line(str(exc))}") from exc
        return int(row[1]), int(row[2])

    # -- meta ------------------------------------------------------------------------------

    def heartbeat(self, now: datetime | None = None) -> None:
        """Write a liveness stamp; raises :class:`StoreError` when the database is not writable."""
        self.set_meta("daemon_heartbeat", (now or utcnow()).isoformat())

    def set_meta(self, key: str, value: str) -> None:
        with self.begin(write=True) as conn:  # heartbeats: beside a fire's writes
            _upsert_meta(conn, key, value)

    def get_meta(self, key: str) -> str | None:
        with self.begin() as conn:
            value = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == key)
            ).scalar()
        return None if value is None else str(value)

    def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every meta row whose key starts with ``prefix`` (e.g. the hosts' heartbeats)."""
        query = sa.select(meta_table.c.key, meta_table.c.value).where(
            meta_table.c.key.startswith(prefix, autoescape=True)
        )
        with self.begin() as conn:
            return {str(k): str(v) for k, v in conn.execute(query)}

    def delete_meta(self, key: str) -> bool:
        with self.begin() as conn:
            return bool(conn.execute(meta_table.delete().where(meta_table.c.key == key)).rowcount)


POSTGRES_SINCE = 6
"""The schema version PostgreSQL support began with: a PostgreSQL database never holds an older
one, so the migration steps up to it may be SQLite-only SQL; every later step must run on both."""


def is_postgres_url(target: str) -> bool:
    return target.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _upsert_meta(conn: Connection, key: str, value: str) -> None:
    statement = dialect.insert(conn, meta_table).values(key=key, value=value)
    conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": value}))


def _first_line(text: str) -> str:
    """The first non-empty line of a driver message (psycopg's span several)."""
    for part in text.splitlines():
        if part.strip():
            return part.strip()
    return text.strip()


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
    configure_connection(cursor)
    cursor.close()
