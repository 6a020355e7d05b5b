"""SQLite state (WAL) through SQLAlchemy Core: runs, per-test results, GPU leases, alerts.

The store persists and queries; it never interprets outcomes (that is :mod:`scheduler.run.results`).
A run row is inserted before anything runs, so a crash always leaves a record.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import StoreError, UnknownRunError
from scheduler.kernel.outcome import Outcome
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

__all__ = [
    "ACTIVE_OUTCOMES",
    "FINAL_OUTCOMES",
    "SCHEMA_VERSION",
    "ActiveRunExists",
    "RunRecord",
    "Store",
    "TestResultRow",
    "alert_state",
    "alerts_outbox",
    "change_range",
    "failure_streak",
    "gpu_leases",
    "meta_table",
    "runs",
    "test_results",
    "utcnow",
]


class ActiveRunExists(StoreError):
    """A tier already has a queued or running run (one active run per tier, across processes)."""


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    id: int
    tier: str
    kind: str
    trigger: str
    outcome: Outcome
    queued_at: datetime
    reason: str = ""
    slot: datetime | None = None
    idempotency_key: str | None = None
    exit_code: int | None = None
    ref: str | None = None
    sha: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    runner: str | None = None
    host: str | None = None
    owner_pid: int | None = None
    owner_identity: str | None = None
    image: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    gpus: Sequence[Mapping[str, Any]] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    markers: str | None = None
    argv: Sequence[str] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    pruned_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        names = {f.name for f in fields(cls)}
        data = {k: _aware(v) for k, v in row.items() if k in names}
        data["outcome"] = Outcome(data["outcome"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Outcome):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["run_id"] = self.id
        return out


def change_range(green: RunRecord | None, record: RunRecord) -> tuple[str, str] | None:
    """``(green sha, run sha)`` when the run tested another commit than the last green run."""
    if green is None or not green.sha or not record.sha or green.sha == record.sha:
        return None
    return green.sha, record.sha


@dataclass(frozen=True)
class TestResultRow:
    """One test's result as stored."""

    __test__ = False  # not a pytest test class despite the name

    nodeid: str
    outcome: str
    duration_s: float = 0.0
    markers: str = ""
    message: str | None = None


def _aware(value: Any) -> Any:
    """SQLite drops tzinfo; everything schedctl stores is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Store:
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
            metadata.create_all(conn)
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).first()
            # No version row: create_all just made the newest schema, nothing to migrate.
            version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this schedctl "
                    f"({SCHEMA_VERSION}); upgrade schedctl"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(target, ()):
                    conn.exec_driver_sql(statement)
            if row is None or version != SCHEMA_VERSION:
                conn.execute(meta_table.delete().where(meta_table.c.key == "schema_version"))
                conn.execute(
                    meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )

    def schema_version(self) -> int:
        with self.begin() as conn:
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).one()
            return int(row[0])

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, **values: Any) -> int | None:
        """Insert a run row and return its id; ``None`` when the idempotency key already exists."""
        values.setdefault("queued_at", utcnow())
        values.setdefault("outcome", Outcome.QUEUED.value)
        values["outcome"] = Outcome(values["outcome"]).value
        try:
            with self.begin() as conn:
                result = conn.execute(runs.insert().values(**values))
                key = result.inserted_primary_key
                assert key is not None
                return int(key[0])
        except IntegrityError as exc:
            key = values.get("idempotency_key")
            if key and self.get_run_by_key(key) is not None:
                return None
            if "runs.tier" in str(exc.orig):
                raise ActiveRunExists(
                    f"tier {values.get('tier')!r} already has a queued or running run"
                ) from None
            raise

    def update_run(self, run_id: int, **values: Any) -> None:
        if not values:
            return
        if "outcome" in values:
            values["outcome"] = Outcome(values["outcome"]).value
        with self.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def finish_run(
        self, run_id: int, results: Iterable[TestResultRow] = (), **values: Any
    ) -> RunRecord:
        """Write the final outcome and per-test results in one transaction."""
        values["outcome"] = Outcome(values["outcome"]).value
        values.setdefault("finished_at", utcnow())
        rows = [
            {
                "run_id": run_id,
                "nodeid": r.nodeid,
                "outcome": r.outcome,
                "duration_s": r.duration_s,
                "markers": r.markers,
                "message": r.message,
            }
            for r in results
        ]
        with self.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))
            if rows:
                conn.execute(test_results.delete().where(test_results.c.run_id == run_id))
                conn.execute(test_results.insert(), rows)
        return self.get_run(run_id)

    def get_run(self, run_id: int) -> RunRecord:
        with self.begin() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise UnknownRunError(f"no run with id {run_id} in {self.path}")
        return RunRecord.from_row(row)

    def get_run_by_key(self, key: str) -> RunRecord | None:
        with self.begin() as conn:
            row = (
                conn.execute(sa.select(runs).where(runs.c.idempotency_key == key))
                .mappings()
                .first()
            )
        return RunRecord.from_row(row) if row else None

    def list_runs(
        self,
        tier: str | None = None,
        limit: int = 20,
        outcomes: Sequence[str] | None = None,
        before_id: int | None = None,
    ) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if tier:
            query = query.where(runs.c.tier == tier)
        if outcomes:
            query = query.where(runs.c.outcome.in_(list(outcomes)))
        if before_id is not None:
            query = query.where(runs.c.id < before_id)
        with self.begin() as conn:
            return [RunRecord.from_row(r) for r in conn.execute(query).mappings()]

    def active_runs(self, tier: str | None = None) -> list[RunRecord]:
        return self.list_runs(tier=tier, limit=1000, outcomes=ACTIVE_OUTCOMES)

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
            value = conn.execute(
                sa.select(sa.func.max(runs.c.slot)).where(runs.c.tier == tier)
            ).scalar()
        return _aware(value) if value is not None else None

    def consecutive_failures(self, tier: str, up_to_run_id: int | None = None) -> int:
        """Test-failure outcomes since the last pass; infra outcomes neither count nor break it."""
        with self.begin() as conn:
            return failure_streak(conn, tier, up_to_run_id)

    def test_results_for(self, run_id: int) -> list[TestResultRow]:
        with self.begin() as conn:
            rows = conn.execute(
                sa.select(test_results)
                .where(test_results.c.run_id == run_id)
                .order_by(test_results.c.id)
            ).mappings()
            return [
                TestResultRow(
                    r["nodeid"], r["outcome"], r["duration_s"], r["markers"], r["message"]
                )
                for r in rows
            ]

    def tiers_summary(self) -> dict[str, dict[str, Any]]:
        """Per tier: last run, last success, consecutive failures (for metrics and status)."""
        out: dict[str, dict[str, Any]] = {}
        with self.begin() as conn:
            tiers = [r[0] for r in conn.execute(sa.select(runs.c.tier).distinct())]
        for tier in tiers:
            last = self.last_run(tier, outcomes=FINAL_OUTCOMES)
            green = self.last_green(tier)
            out[tier] = {
                "last_run": last,
                "last_success": green,
                "consecutive_failures": self.consecutive_failures(tier),
            }
        return out

    def prunable_runs(
        self, passed_before: datetime, failed_before: datetime, limit: int
    ) -> list[tuple[int, str]]:
        """Finished, not yet pruned runs past their retention (passed vs the rest), oldest first."""
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
        with self.begin() as conn:
            return [(int(r.id), str(r.run_dir)) for r in conn.execute(query)]

    def heartbeat(self, now: datetime | None = None) -> None:
        """Write a liveness stamp; raises :class:`StoreError` when the database is not writable."""
        self.set_meta("daemon_heartbeat", (now or utcnow()).isoformat())

    def set_meta(self, key: str, value: str) -> None:
        from sqlalchemy.dialects.sqlite import insert

        statement = insert(meta_table).values(key=key, value=value)
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

    def runs_after(self, run_id: int, limit: int) -> list[RunRecord]:
        """Runs with an id above ``run_id``, oldest first."""
        query = sa.select(runs).where(runs.c.id > run_id).order_by(runs.c.id).limit(limit)
        with self.begin() as conn:
            return [RunRecord.from_row(r) for r in conn.execute(query).mappings()]

    def max_run_id(self) -> int:
        with self.begin() as conn:
            return int(conn.execute(sa.select(sa.func.max(runs.c.id))).scalar() or 0)

    # -- GPU leases --------------------------------------------------------------------------

    def acquire_leases(self, run_id: int, tier: str, gpus: Sequence[tuple[int, str]]) -> bool:
        """Atomically lease all ``(index, uuid)`` pairs to ``run_id``; ``False`` if any is taken."""
        now = utcnow()
        try:
            with self.begin() as conn:
                conn.execute(
                    gpu_leases.insert(),
                    [
                        {
                            "gpu_uuid": uuid,
                            "gpu_index": index,
                            "run_id": run_id,
                            "tier": tier,
                            "acquired_at": now,
                        }
                        for index, uuid in gpus
                    ],
                )
        except IntegrityError:
            return False
        return True

    def release_leases(self, run_id: int) -> None:
        with self.begin() as conn:
            conn.execute(gpu_leases.delete().where(gpu_leases.c.run_id == run_id))

    def active_leases(self) -> list[dict[str, Any]]:
        with self.begin() as conn:
            return [
                {k: _aware(v) for k, v in r.items()}
                for r in conn.execute(
                    sa.select(gpu_leases).order_by(gpu_leases.c.gpu_index)
                ).mappings()
            ]

    def release_dead_leases(self) -> int:
        """Drop leases whose run is no longer active (crash recovery)."""
        with self.begin() as conn:
            active = sa.select(runs.c.id).where(runs.c.outcome.in_(ACTIVE_OUTCOMES))
            result = conn.execute(gpu_leases.delete().where(gpu_leases.c.run_id.not_in(active)))
            return int(result.rowcount or 0)


BUSY_TIMEOUT_S = 15.0


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    _ensure_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
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


STREAK_WINDOW = 1000


def failure_streak(conn: Connection, tier: str, up_to_run_id: int | None = None) -> int:
    """Test-failure runs of ``tier`` (up to a run) since its last pass, on an open connection.

    Infra outcomes neither count nor break the streak; only the newest ``STREAK_WINDOW`` final
    runs are read.
    """
    query = sa.select(runs.c.outcome).where(runs.c.tier == tier, runs.c.outcome.in_(FINAL_OUTCOMES))
    if up_to_run_id is not None:
        query = query.where(runs.c.id <= up_to_run_id)
    count = 0
    for (value,) in conn.execute(query.order_by(runs.c.id.desc()).limit(STREAK_WINDOW)):
        outcome = Outcome(value)
        if outcome is Outcome.PASSED:
            break
        if outcome.is_test_failure:
            count += 1
    return count
