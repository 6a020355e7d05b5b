"""The aggregate reads :mod:`scheduler.metrics` makes at scrape time.

Two shapes: the run tally follows ``runs`` by id (:meth:`StatsQueries.tally_baseline`,
:meth:`StatsQueries.tally_rows`), and the gauges read one consistent snapshot per scrape through
a :class:`StatsReader` (:meth:`StatsQueries.stats_reader`), so the collector can decide which
deeper queries a scrape needs without writing SQL itself.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.outbox_queries import OutboxState
from scheduler.store.run_queries import failure_streak
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    alerts_outbox,
    gpu_leases,
    quarantine,
    runs,
    test_results_all,
)

__all__ = ["LeaseRow", "StatsQueries", "StatsReader", "TallyRow", "TestTallyRow"]


@dataclass(frozen=True)
class TallyRow:
    """The columns of a run the run counters need."""

    id: int
    tier: str
    trigger: str
    outcome: str
    duration_s: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TestTallyRow:
    """One attempt of one test, as the test counters need it (no node id: labels stay bounded)."""

    __test__ = False

    run_id: int
    attempt: int
    final: bool
    duration_s: float


@dataclass(frozen=True)
class LeaseRow:
    gpu_index: int
    gpu_uuid: str
    tier: str


_TALLY = sa.select(
    runs.c.id, runs.c.tier, runs.c.trigger, runs.c.outcome, runs.c.duration_s, runs.c.counts
).order_by(runs.c.id)

_ACTIVE_COUNTS = (
    sa.select(runs.c.tier, runs.c.outcome, sa.func.count())
    # constants written into the statement: a bound IN list is expanded at every execution
    .where(sa.or_(*(runs.c.outcome == sa.literal_column(f"'{o}'") for o in ACTIVE_OUTCOMES)))
    .group_by(runs.c.tier, runs.c.outcome)
)
_OUTBOX_PENDING = sa.select(sa.func.count(), sa.func.min(alerts_outbox.c.created_at)).where(
    alerts_outbox.c.state == OutboxState.PENDING.value
)


@functools.lru_cache(maxsize=8)
def _recent(limit: int) -> sa.Select[Any]:
    # Built once per window size: SQLAlchemy then reuses the compiled form for every scrape.
    return (
        sa.select(runs.c.outcome, runs.c.finished_at)
        .where(runs.c.tier == sa.bindparam("tier"))
        .order_by(runs.c.id.desc())
        .limit(limit)
    )


_NOW = sa.bindparam("now", type_=quarantine.c.expires_at.type)
_EXPIRED = sa.and_(quarantine.c.expires_at.is_not(None), quarantine.c.expires_at <= _NOW)
_QUARANTINE_COUNTS = sa.select(
    sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((_EXPIRED, 1), else_=0)), 0)
).select_from(quarantine)
_NEXT_EXPIRY = sa.select(sa.func.min(quarantine.c.expires_at)).where(quarantine.c.expires_at > _NOW)

_UNION_TERMS = 100
"""Tiers per compound statement (SQLite allows 500 terms in one)."""


@functools.lru_cache(maxsize=8)
def _recent_of(count: int, limit: int) -> sa.CompoundSelect[Any]:
    # Each term is one index search (ix_runs_tier_id), as :func:`_recent` is; one statement
    # instead of one per tier saves the per-execute overhead at every changed scrape.
    terms = []
    for i in range(count):
        sub = (
            sa.select(runs.c.id, runs.c.tier, runs.c.outcome, runs.c.finished_at)
            .where(runs.c.tier == sa.bindparam(f"tier{i}"))
            .order_by(runs.c.id.desc())
            .limit(limit)
            .subquery()
        )
        terms.append(sa.select(sub))
    return sa.union_all(*terms)


@functools.lru_cache(maxsize=8)
def _newest_ids(count: int) -> sa.CompoundSelect[Any]:
    # max(id) per tier: one descent of ix_runs_tier_id per term, no table row read.
    terms = [
        sa.select(runs.c.tier, sa.func.max(runs.c.id)).where(
            runs.c.tier == sa.bindparam(f"tier{i}")
        )
        for i in range(count)
    ]
    return sa.union_all(*terms)


def _tally_row(row: Any) -> TallyRow:
    return TallyRow(
        id=int(row.id),
        tier=str(row.tier),
        trigger=str(row.trigger),
        outcome=str(row.outcome),
        duration_s=row.duration_s,
        counts=row.counts or {},
    )


class StatsReader:
    """Reads on one open transaction (one scrape's consistent view of the store)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def active_counts(self) -> dict[tuple[str, str], int]:
        """``{(tier, outcome): n}`` for queued and running runs."""
        return {
            (str(tier), str(outcome)): int(count)
            for tier, outcome, count in self._conn.execute(_ACTIVE_COUNTS)
        }

    def recent(self, tier: str, limit: int) -> tuple[tuple[str, datetime | None], ...]:
        """``(outcome, finished_at)`` of the tier's newest ``limit`` runs, newest first."""
        rows = self._conn.execute(_recent(limit), {"tier": tier})
        return tuple((str(row[0]), aware(row[1])) for row in rows)

    def recent_of(
        self, tiers: Sequence[str], limit: int
    ) -> dict[str, tuple[tuple[str, datetime | None], ...]]:
        """:meth:`recent` of every tier in ``tiers``, in as few statements as SQLite allows."""
        rows: dict[str, list[tuple[int, str, datetime | None]]] = {t: [] for t in tiers}
        names = list(rows)
        for start in range(0, len(names), _UNION_TERMS):
            chunk = names[start : start + _UNION_TERMS]
            params = {f"tier{i}": name for i, name in enumerate(chunk)}
            for run_id, tier, outcome, finished_at in self._conn.execute(
                _recent_of(len(chunk), limit), params
            ):
                rows[str(tier)].append((int(run_id), str(outcome), aware(finished_at)))
        return {
            tier: tuple((o, at) for _, o, at in sorted(found, key=lambda r: -r[0]))
            for tier, found in rows.items()
        }

    def newest_ids(self, tiers: Sequence[str]) -> dict[str, int]:
        """The id of each tier's newest run; tiers without runs are left out."""
        found: dict[str, int] = {}
        names = list(dict.fromkeys(tiers))
        for start in range(0, len(names), _UNION_TERMS):
            chunk = names[start : start + _UNION_TERMS]
            params = {f"tier{i}": name for i, name in enumerate(chunk)}
            for tier, top in self._conn.execute(_newest_ids(len(chunk)), params):
                if tier is not None and top is not None:
                    found[str(tier)] = int(top)
        return found

    def last_finished_at(self, tier: str, outcomes: Sequence[str]) -> datetime | None:
        """Finish time of the tier's newest run whose outcome is one of ``outcomes``."""
        value = self._last(tier, outcomes, runs.c.finished_at)
        return aware(value) if value is not None else None

    def last_details(self, tier: str, outcomes: Sequence[str]) -> Any:
        """``details`` of the tier's newest run whose outcome is one of ``outcomes``."""
        return self._last(tier, outcomes, runs.c.details)

    def failure_streak(self, tier: str) -> int:
        """As :meth:`~scheduler.store.Store.consecutive_failures`, in this transaction."""
        return failure_streak(self._conn, tier)

    def leases(self) -> list[LeaseRow]:
        """Every GPU lease, by GPU index."""
        query = sa.select(gpu_leases).order_by(gpu_leases.c.gpu_index)
        return [
            LeaseRow(int(r.gpu_index), str(r.gpu_uuid), str(r.tier))
            for r in self._conn.execute(query)
        ]

    def outbox_pending(self) -> tuple[int, datetime | None]:
        """Pending outbox rows and the creation time of the oldest one."""
        count, oldest = self._conn.execute(_OUTBOX_PENDING).one()
        return int(count or 0), aware(oldest) if oldest is not None else None

    def last_counts(self, tier: str, outcomes: Sequence[str]) -> Mapping[str, int]:
        """``counts`` of the tier's newest run whose outcome is one of ``outcomes``; ``{}``."""
        counts = self._last(tier, outcomes, runs.c.counts)
        return counts if isinstance(counts, Mapping) else {}

    def quarantine_counts(self, now: datetime) -> tuple[int, int]:
        """``(active, expired)`` quarantines at ``now``."""
        total, gone = self._conn.execute(_QUARANTINE_COUNTS, {"now": now}).one()
        return int(total or 0) - int(gone or 0), int(gone or 0)

    def next_quarantine_expiry(self, now: datetime) -> datetime | None:
        """The earliest expiry after ``now`` (when :meth:`quarantine_counts` next changes)."""
        value = self._conn.execute(_NEXT_EXPIRY, {"now": now}).scalar()
        return aware(value) if value is not None else None

    def _last(self, tier: str, outcomes: Sequence[str], column: Any) -> Any:
        return self._conn.execute(
            sa.select(column)
            .where(runs.c.tier == tier, runs.c.outcome.in_(list(outcomes)))
            .order_by(runs.c.id.desc())
            .limit(1)
        ).scalar()


class _VersionProbe:
    """``PRAGMA data_version`` on a connection of its own that never writes.

    SQLite changes the number a connection reads whenever *another* connection -- of this
    process or any other -- commits to the file; this connection commits nothing, so every
    commit anywhere shows. Costs one pragma (microseconds), no table read.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def read(self) -> int | None:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(
                        f"file:{self._path}?mode=ro", uri=True, check_same_thread=False
                    )
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                self._close()
                return None  # unknown: the caller reads the tables again

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StatsQueries(QueryBase):
    """Aggregates for the metrics collectors."""

    _version_probe: _VersionProbe | None = None

    def data_version(self) -> int | None:
        """A number that changes whenever anyone commits to the store; ``None`` when unknown
        (PostgreSQL, an unreadable file), and then every read must be made again.

        Scrape-time collectors compare it with the one they last read at, and reuse what
        they built then while it holds: nothing in the store changed, so their reads would
        return the same rows (reads that also depend on the clock must say so themselves).
        """
        if getattr(self, "is_postgres", False):
            return None
        probe = self._version_probe
        if probe is None:
            probe = self._version_probe = _VersionProbe(str(self.path))
        return probe.read()

    def close_version_probe(self) -> None:
        if self._version_probe is not None:
            self._version_probe.close()

    def tally_baseline(self) -> tuple[int, set[int]]:
        """The newest run id and the ids of the runs still queued or running, read together."""
        with self.begin() as conn:
            top = conn.execute(sa.select(sa.func.max(runs.c.id))).scalar()
            active = conn.execute(
                sa.select(runs.c.id).where(runs.c.outcome.in_(ACTIVE_OUTCOMES))
            ).scalars()
            return int(top or 0), {int(i) for i in active}

    def tally_rows(self, after_id: int, pending: Collection[int] = ()) -> list[TallyRow]:
        """The rows of ``pending`` ids, then every row above ``after_id``, each by id."""
        with self.begin() as conn:
            # Two rowid lookups: SQLite answers "id > x OR id IN (...)" with a full table scan.
            rows = [_tally_row(r) for r in conn.execute(_TALLY.where(runs.c.id > after_id))]
            if pending:
                older = conn.execute(_TALLY.where(runs.c.id.in_(sorted(pending))))
                rows[:0] = [_tally_row(r) for r in older]
        return rows

    def test_tally_rows(self, run_ids: Collection[int]) -> list[TestTallyRow]:
        """Every attempt of every test of these runs, by run id."""
        if not run_ids:
            return []
        query = (
            sa.select(
                test_results_all.c.run_id,
                test_results_all.c.attempt,
                test_results_all.c.final,
                test_results_all.c.duration_s,
            )
            .where(test_results_all.c.run_id.in_(sorted(run_ids)))
            .order_by(test_results_all.c.run_id, test_results_all.c.seq)
        )
        with self.begin() as conn:
            return [
                TestTallyRow(int(r[0]), int(r[1] or 0), bool(r[2]), float(r[3] or 0.0))
                for r in conn.execute(query)
            ]

    @contextmanager
    def stats_reader(self) -> Iterator[StatsReader]:
        """A :class:`StatsReader` on one transaction, for the length of the ``with`` block."""
        with self.begin() as conn:
            dialect.snapshot(conn)
            yield StatsReader(conn)
