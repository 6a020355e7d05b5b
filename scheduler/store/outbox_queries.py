"""The durable alert outbox (``alerts_outbox``): rows and their guarded transitions.

Every transition is one ``UPDATE`` guarded on state and attempt number (compare-and-swap), so
two workers, or a restarted one, can never both own a row. The state machine and its timing
(lease length, backoff) belong to :mod:`scheduler.alerts.outbox`; this module only says how a
transition is written.

Rows of one ``(sink, fingerprint)`` are due in creation order: a row is not due while an older
one for the same pair is still undelivered, so a resolve never overtakes its fire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.schema import alert_state, alerts_outbox

__all__ = ["UNDELIVERED", "OutboxEntry", "OutboxQueries", "OutboxRow", "OutboxState"]


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"


UNDELIVERED = (OutboxState.PENDING.value, OutboxState.SENDING.value)


@dataclass(frozen=True)
class OutboxEntry:
    """A row to insert: one delivery of one alert to one sink."""

    id: str
    sink: str
    fingerprint: str
    action: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class OutboxRow:
    """One delivery of one alert to one sink, as stored."""

    id: str
    sink: str
    fingerprint: str
    action: str
    payload: Mapping[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    sent_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> OutboxRow:
        data = {k: aware(v) for k, v in row.items()}
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sink": self.sink,
            "fingerprint": self.fingerprint,
            "action": self.action,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": self.last_error,
        }


def insert_outbox_entry(conn: Connection, entry: OutboxEntry, now: datetime) -> bool:
    """Insert a pending row on an open connection; False if the id already existed."""
    statement = (
        dialect.insert(conn, alerts_outbox)
        .values(
            id=entry.id,
            sink=entry.sink,
            fingerprint=entry.fingerprint,
            action=entry.action,
            payload=dict(entry.payload),
            state=OutboxState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return bool(conn.execute(statement).rowcount)


class OutboxQueries(QueryBase):
    """``alerts_outbox`` (and the sinks' ``external`` memory in ``alert_state``)."""

    def outbox_enqueue(self, entry: OutboxEntry, now: datetime) -> bool:
        """Insert a pending row due at ``now``; False if the id already existed."""
        with self.begin() as conn:
            return insert_outbox_entry(conn, entry, now)

    def outbox_due(
        self, now: datetime, limit: int = 50, sink: str | None = None
    ) -> list[OutboxRow]:
        """Rows to try at ``now``, oldest first: pending, or ``sending`` with an expired lease,
        and no older undelivered row of the same sink and fingerprint."""
        older = alerts_outbox.alias("older")
        blocked = sa.exists().where(
            older.c.sink == alerts_outbox.c.sink,
            older.c.fingerprint == alerts_outbox.c.fingerprint,
            older.c.state.in_(UNDELIVERED),
            sa.or_(
                older.c.created_at < alerts_outbox.c.created_at,
                sa.and_(
                    older.c.created_at == alerts_outbox.c.created_at,
                    older.c.id < alerts_outbox.c.id,
                ),
            ),
        )
        query = (
            sa.select(alerts_outbox)
            .where(
                alerts_outbox.c.state.in_(UNDELIVERED),
                alerts_outbox.c.next_attempt_at <= now,
                ~blocked,
            )
            .order_by(alerts_outbox.c.created_at, alerts_outbox.c.id)
            .limit(limit)
        )
        if sink is not None:
            query = query.where(alerts_outbox.c.sink == sink)
        with self.begin() as conn:
            return [OutboxRow.from_row(r) for r in conn.execute(query).mappings()]

    def outbox_claim(self, row: OutboxRow, now: datetime, lease_until: datetime) -> bool:
        """``row`` -> ``sending`` with one more attempt, if nobody changed it since it was read
        and it is due at ``now``; ``next_attempt_at`` becomes the lease expiry."""
        with self.begin() as conn:
            # A shared PostgreSQL outbox: lock the row or pass at once when another worker holds
            # it (FOR UPDATE SKIP LOCKED), so claimers never queue behind each other; the
            # guarded UPDATE then decides, as on SQLite (one writer at a time).
            locked = conn.execute(
                dialect.skip_locked(
                    conn, sa.select(alerts_outbox.c.id).where(alerts_outbox.c.id == row.id)
                )
            ).first()
            if locked is None:
                return False
            result = conn.execute(
                alerts_outbox.update()
                .where(
                    alerts_outbox.c.id == row.id,
                    alerts_outbox.c.state == row.state,
                    alerts_outbox.c.attempts == row.attempts,
                    alerts_outbox.c.next_attempt_at <= now,
                )
                .values(
                    state=OutboxState.SENDING.value,
                    attempts=row.attempts + 1,
                    next_attempt_at=lease_until,
                )
            )
        return result.rowcount == 1

    def outbox_complete(
        self,
        row: OutboxRow,
        attempt: int,
        sent_at: datetime,
        external: Mapping[str, Any] | None = None,
    ) -> bool:
        """``sending`` (attempt ``attempt``) -> ``sent``; merges the sink's ``external`` state
        into the fingerprint's ``alert_state`` row under the sink's name, in one transaction."""
        with self.begin() as conn:
            done = _transition(
                conn,
                row.id,
                attempt,
                state=OutboxState.SENT.value,
                sent_at=sent_at,
                last_error=None,
            )
            if done and external is not None:
                dialect.merge_json_key(
                    conn,
                    alert_state,
                    alert_state.c.fingerprint == row.fingerprint,
                    "external",
                    row.sink,
                    external,
                )
        return done

    def outbox_retry(
        self, row_id: str, attempt: int, next_attempt_at: datetime, error: str
    ) -> bool:
        """``sending`` (attempt ``attempt``) -> ``pending``, due again at ``next_attempt_at``."""
        with self.begin() as conn:
            return _transition(
                conn,
                row_id,
                attempt,
                state=OutboxState.PENDING.value,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )

    def outbox_kill(self, row_id: str, attempt: int, error: str) -> bool:
        """``sending`` (attempt ``attempt``) -> ``dead``."""
        with self.begin() as conn:
            return _transition(
                conn, row_id, attempt, state=OutboxState.DEAD.value, last_error=error
            )

    def outbox_next_due_at(self, sink: str | None = None) -> datetime | None:
        """The earliest ``next_attempt_at`` of an undelivered row (of ``sink``), if any."""
        query = sa.select(sa.func.min(alerts_outbox.c.next_attempt_at)).where(
            alerts_outbox.c.state.in_(UNDELIVERED)
        )
        if sink is not None:
            query = query.where(alerts_outbox.c.sink == sink)
        with self.begin() as conn:
            value = conn.execute(query).scalar()
        return aware(value) if value is not None else None

    def outbox_rows(self, states: Sequence[str] | None = None, limit: int = 50) -> list[OutboxRow]:
        """Rows (in ``states``), newest first."""
        query = sa.select(alerts_outbox).order_by(
            alerts_outbox.c.created_at.desc(), alerts_outbox.c.id.desc()
        )
        if states:
            query = query.where(alerts_outbox.c.state.in_(list(states)))
        with self.begin() as conn:
            return [OutboxRow.from_row(r) for r in conn.execute(query.limit(limit)).mappings()]

    def outbox_counts(self) -> dict[str, int]:
        """Rows per state."""
        query = sa.select(alerts_outbox.c.state, sa.func.count()).group_by(alerts_outbox.c.state)
        with self.begin() as conn:
            return {str(state): int(n) for state, n in conn.execute(query)}


def _transition(conn: Connection, row_id: str, attempt: int, **values: Any) -> bool:
    result = conn.execute(
        alerts_outbox.update()
        .where(
            alerts_outbox.c.id == row_id,
            alerts_outbox.c.state == OutboxState.SENDING.value,
            alerts_outbox.c.attempts == attempt,
        )
        .values(**values)
    )
    return result.rowcount == 1
