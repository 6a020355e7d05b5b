"""What ``schedctl alerts`` shows: alert states, deliveries and sinks, as plain JSON-able data."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from scheduler.alerts.build import SinkSet
from scheduler.alerts.outbox import Outbox, OutboxState
from scheduler.store.engine import Store


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def alert_states(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Fingerprints, most recently changed first; firing ones before resolved ones."""
    return [{k: _iso(v) for k, v in row.items()} for row in store.alert_states(limit)]


def overview(store: Store, sinks: SinkSet, limit: int = 20) -> dict[str, Any]:
    outbox = Outbox(store)
    undelivered = [OutboxState.PENDING.value, OutboxState.SENDING.value]
    return {
        "sinks": [
            {"name": s.name, "kind": s.kind, "target": s.target, "enabled": True}
            for s in sinks.sinks
        ]
        + [
            {"name": name, "enabled": False, "reason": reason}
            for name, reason in sinks.disabled.items()
        ],
        "alerts": alert_states(store, limit),
        "deliveries": {
            "counts": outbox.counts(),
            "pending": [r.to_json() for r in outbox.rows(undelivered, limit)],
            "dead": [r.to_json() for r in outbox.rows([OutboxState.DEAD.value], limit)],
            "recent": [r.to_json() for r in outbox.rows(None, limit)],
        },
    }
