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

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.alerts.payload import Alert
from scheduler.alerts.sinks.base import Sink
from scheduler.kernel.clock import utcnow
from scheduler.store.engine import UNDELIVERED, OutboxEntry, OutboxRow, OutboxState, Store

__all__ = [
    "DEFAULT_LEASE_S",
    "UNDELIVERED",
    "Claim",
    "Outbox",
    "OutboxRow",
    "OutboxState",
    "entries_for",
    "outbox_id",
]

DEFAULT_LEASE_S = 120.0
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Claim:
    """A row this worker owns until its lease runs out; ``attempt`` is the CAS token."""

    row: OutboxRow
    attempt: int


def outbox_id(run_id: int, fingerprint: str, action: str, sink: str) -> str:
    """Readable and globally unique: it is the idempotency key receivers and GitHub markers see,
    and run ids repeat across hosts and state dirs (repeated events are caught by the rules)."""
    return f"r{run_id}.{fingerprint.replace('/', '.')}.{action}.{sink}.{uuid.uuid4().hex[:12]}"


def entries_for(alert: Alert, sinks: Sequence[Sink], run_id: int = 0) -> list[OutboxEntry]:
    """One outbox row per sink that accepts ``alert`` (``run_id`` 0: no run raised it)."""
    return [
        OutboxEntry(
            id=outbox_id(run_id, alert.fingerprint, alert.action, sink.name),
            sink=sink.name,
            fingerprint=alert.fingerprint,
            action=alert.action,
            payload=alert.to_json(),
        )
        for sink in sinks
        if sink.accepts(alert)
    ]


class Outbox:
    """The worker's (and the CLI's) view of ``alerts_outbox``: the state machine and its timing."""

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
        return self.store.outbox_due(self.clock(), limit, sink)

    def claim(self, row: OutboxRow) -> Claim | None:
        """Take the row for one attempt; ``None`` when another worker got there first."""
        now = self.clock()
        if self.store.outbox_claim(row, now, now + self.lease):
            return Claim(row, row.attempts + 1)
        return None

    def complete(self, claim: Claim, external: Mapping[str, Any] | None = None) -> bool:
        """Mark sent and remember the sink's ``external`` state, in one transaction."""
        return self.store.outbox_complete(claim.row, claim.attempt, self.clock(), external)

    def retry(self, claim: Claim, delay_s: float, error: str) -> bool:
        due = self.clock() + timedelta(seconds=delay_s)
        return self.store.outbox_retry(claim.row.id, claim.attempt, due, error[:MAX_ERROR_CHARS])

    def kill(self, claim: Claim, error: str) -> bool:
        return self.store.outbox_kill(claim.row.id, claim.attempt, error[:MAX_ERROR_CHARS])

    def external(self, fingerprint: str, sink: str) -> Mapping[str, Any]:
        """What ``sink`` remembered for ``fingerprint`` (e.g. its GitHub issue number)."""
        return self.store.alert_external(fingerprint, sink)

    def next_due_at(self, sink: str | None = None) -> datetime | None:
        return self.store.outbox_next_due_at(sink)

    # -- views ---------------------------------------------------------------------------------

    def rows(self, states: Sequence[str] | None = None, limit: int = 50) -> list[OutboxRow]:
        return self.store.outbox_rows(states, limit)

    def counts(self) -> dict[str, int]:
        return self.store.outbox_counts()
