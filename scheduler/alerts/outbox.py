"""The durable outbox (``alerts_outbox``): an alert is a row before it is a request.

Row states and the only transitions, each one a guarded ``UPDATE`` (compare-and-swap on state
and attempt number), so two workers or a restarted one can never both own a row::

    pending --claim--> sending --complete--> sent
       ^                  |  \\--kill------> dead      (permanent error or attempts exhausted)
       \\----retry--------/
    sending --(lease expired: the owner died)--> claimable again

While a row is ``sending``, ``next_attempt_at`` is its lease expiry. A worker that crashes after
the sink accepted the request but before ``complete`` leaves the row to be sent again when the
lease runs out: delivery is at-least-once in that window only. Sinks narrow it with the row id as
an idempotency key (webhook header, GitHub markers; Alertmanager posts are idempotent).

Rows of one ``(sink, fingerprint)`` go out in creation order: a row is not due while an older
one for the same pair is still pending, so a resolve never overtakes its fire.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from scheduler.kernel.clock import utcnow
from scheduler.store.engine import Store, alert_state, alerts_outbox

DEFAULT_LEASE_S = 120.0
MAX_ERROR_CHARS = 1000


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"


UNDELIVERED = (OutboxState.PENDING.value, OutboxState.SENDING.value)


@dataclass(frozen=True)
class OutboxRow:
    """One delivery of one alert to one sink."""

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
        data = {k: _aware(v) for k, v in row.items()}
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


@dataclass(frozen=True)
class Claim:
    """A row this worker owns until ``lease_until``; ``attempt`` is the CAS token."""

    row: OutboxRow
    attempt: int


def _aware(value: Any) -> Any:
    """SQLite drops tzinfo; everything stored is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def outbox_id(run_id: int, fingerprint: str, action: str, sink: str) -> str:
    """Readable and globally unique: it is the idempotency key receivers and GitHub markers see,
    and run ids repeat across hosts and state dirs (repeated events are caught by the rules)."""
    return f"r{run_id}.{fingerprint.replace('/', '.')}.{action}.{sink}.{uuid.uuid4().hex[:12]}"


def enqueue(
    conn: Connection,
    *,
    row_id: str,
    sink: str,
    fingerprint: str,
    action: str,
    payload: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Insert a pending row inside the caller's transaction; False if it already existed."""
    statement = (
        sqlite_insert(alerts_outbox)
        .values(
            id=row_id,
            sink=sink,
            fingerprint=fingerprint,
            action=action,
            payload=dict(payload),
            state=OutboxState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return bool(conn.execute(statement).rowcount)


class Outbox:
    """The worker's (and the CLI's) view of ``alerts_outbox``."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease = timedelta(seconds=lease_s)

    # -- worker --------------------------------------------------------------------------------

    def due(self, limit: int = 50, sink: str | None = None) -> list[OutboxRow]:
        """Rows to try now, oldest first: pending, or ``sending`` with an expired lease."""
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
                alerts_outbox.c.next_attempt_at <= self.clock(),
                ~blocked,
            )
            .order_by(alerts_outbox.c.created_at, alerts_outbox.c.id)
            .limit(limit)
        )
        if sink is not None:
            query = query.where(alerts_outbox.c.sink == sink)
        with self.store.begin() as conn:
            return [OutboxRow.from_row(r) for r in conn.execute(query).mappings()]

    def claim(self, row: OutboxRow) -> Claim | None:
        """Take the row for one attempt; ``None`` when another worker got there first."""
        attempt = row.attempts + 1
        with self.store.begin() as conn:
            result = conn.execute(
                alerts_outbox.update()
                .where(
                    alerts_outbox.c.id == row.id,
                    alerts_outbox.c.state == row.state,
                    alerts_outbox.c.attempts == row.attempts,
                    alerts_outbox.c.next_attempt_at <= self.clock(),
                )
                .values(
                    state=OutboxState.SENDING.value,
                    attempts=attempt,
                    next_attempt_at=self.clock() + self.lease,
                )
            )
        return Claim(row, attempt) if result.rowcount == 1 else None

    def complete(self, claim: Claim, external: Mapping[str, Any] | None = None) -> bool:
        """Mark sent and remember the sink's ``external`` state, in one transaction."""
        with self.store.begin() as conn:
            done = self._transition(
                conn,
                claim,
                state=OutboxState.SENT.value,
                sent_at=self.clock(),
                last_error=None,
            )
            if done and external is not None:
                conn.execute(
                    alert_state.update()
                    .where(alert_state.c.fingerprint == claim.row.fingerprint)
                    .values(
                        external=sa.func.json_set(
                            sa.func.coalesce(alert_state.c.external, "{}"),
                            f'$."{claim.row.sink}"',
                            sa.func.json(json.dumps(dict(external), default=str)),
                        )
                    )
                )
        return done

    def retry(self, claim: Claim, delay_s: float, error: str) -> bool:
        with self.store.begin() as conn:
            return self._transition(
                conn,
                claim,
                state=OutboxState.PENDING.value,
                next_attempt_at=self.clock() + timedelta(seconds=delay_s),
                last_error=error[:MAX_ERROR_CHARS],
            )

    def kill(self, claim: Claim, error: str) -> bool:
        with self.store.begin() as conn:
            return self._transition(
                conn, claim, state=OutboxState.DEAD.value, last_error=error[:MAX_ERROR_CHARS]
            )

    def _transition(self, conn: Connection, claim: Claim, **values: Any) -> bool:
        result = conn.execute(
            alerts_outbox.update()
            .where(
                alerts_outbox.c.id == claim.row.id,
                alerts_outbox.c.state == OutboxState.SENDING.value,
                alerts_outbox.c.attempts == claim.attempt,
            )
            .values(**values)
        )
        return result.rowcount == 1

    def external(self, fingerprint: str, sink: str) -> Mapping[str, Any]:
        """What ``sink`` remembered for ``fingerprint`` (e.g. its GitHub issue number)."""
        with self.store.begin() as conn:
            value = conn.execute(
                sa.select(alert_state.c.external).where(alert_state.c.fingerprint == fingerprint)
            ).scalar()
        if not isinstance(value, Mapping):
            return {}
        mine = value.get(sink)
        return dict(mine) if isinstance(mine, Mapping) else {}

    def next_due_at(self, sink: str | None = None) -> datetime | None:
        query = sa.select(sa.func.min(alerts_outbox.c.next_attempt_at)).where(
            alerts_outbox.c.state.in_(UNDELIVERED)
        )
        if sink is not None:
            query = query.where(alerts_outbox.c.sink == sink)
        with self.store.begin() as conn:
            value = conn.execute(query).scalar()
        return _aware(value) if value is not None else None

    # -- views ---------------------------------------------------------------------------------

    def rows(self, states: Sequence[str] | None = None, limit: int = 50) -> list[OutboxRow]:
        query = sa.select(alerts_outbox).order_by(
            alerts_outbox.c.created_at.desc(), alerts_outbox.c.id.desc()
        )
        if states:
            query = query.where(alerts_outbox.c.state.in_(list(states)))
        with self.store.begin() as conn:
            return [OutboxRow.from_row(r) for r in conn.execute(query.limit(limit)).mappings()]

    def counts(self) -> dict[str, int]:
        query = sa.select(alerts_outbox.c.state, sa.func.count()).group_by(alerts_outbox.c.state)
        with self.store.begin() as conn:
            return {str(state): int(n) for state, n in conn.execute(query)}
