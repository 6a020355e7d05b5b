"""Alert state (``alert_state``): one row per fingerprint, and the recorder's atomic step.

The rules that turn a run into new states and outbox rows live in :mod:`scheduler.alerts`; the
store only guarantees that reading the tier's states, applying the rules and writing states and
outbox rows happen in one ``BEGIN IMMEDIATE`` transaction (:meth:`AlertQueries.apply_alert_step`),
so a crash leaves all of them or none, and two processes never apply runs over each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.outbox_queries import OutboxEntry, insert_outbox_entry
from scheduler.store.run_queries import failure_streak
from scheduler.store.schema import alert_state

__all__ = ["AlertDecide", "AlertQueries", "AlertStep", "AlertTrackRow"]


@dataclass(frozen=True)
class AlertTrackRow:
    """One row of ``alert_state`` (the sinks' ``external`` memory aside)."""

    fingerprint: str
    tier: str
    failure_class: str
    state: str
    severity: str
    consecutive: int = 0
    greens: int = 0
    last_run_id: int | None = None
    failing: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertStep:
    """What one run changes: the tracks to write and the outbox rows to insert."""

    tracks: Sequence[AlertTrackRow] = ()
    entries: Sequence[OutboxEntry] = ()


AlertDecide = Callable[[int, Sequence[AlertTrackRow]], AlertStep]
"""``(failure streak up to the run, the tier's tracks) -> step``; pure, runs inside the write
transaction."""


class AlertQueries(QueryBase):
    """``alert_state``."""

    def apply_alert_step(
        self, tier: str, run_id: int, now: datetime, decide: AlertDecide
    ) -> list[str]:
        """Read the tier's failure streak (up to ``run_id``) and tracks, hand them to ``decide``,
        write its tracks and outbox rows, all under ``BEGIN IMMEDIATE``.

        Returns the ids of the outbox rows actually inserted (an id that exists is skipped).
        """
        written: list[str] = []
        with self.begin(immediate=True) as conn:
            streak = failure_streak(conn, tier, run_id)
            step = decide(streak, _load_tracks(conn, tier))
            for track in step.tracks:
                _save_track(conn, track, now)
            for entry in step.entries:
                if insert_outbox_entry(conn, entry, now):
                    written.append(entry.id)
        return written

    def alert_states(self, limit: int = 50) -> list[dict[str, Any]]:
        """Every column of ``alert_state``, most recently changed first, firing before resolved."""
        query = (
            sa.select(alert_state)
            .order_by((alert_state.c.state != "firing"), alert_state.c.updated_at.desc())
            .limit(limit)
        )
        with self.begin() as conn:
            return [{k: aware(v) for k, v in row.items()} for row in conn.execute(query).mappings()]

    def alert_external(self, fingerprint: str, sink: str) -> Mapping[str, Any]:
        """What ``sink`` remembered for ``fingerprint`` (e.g. its GitHub issue number)."""
        with self.begin() as conn:
            value = conn.execute(
                sa.select(alert_state.c.external).where(alert_state.c.fingerprint == fingerprint)
            ).scalar()
        if not isinstance(value, Mapping):
            return {}
        mine = value.get(sink)
        return dict(mine) if isinstance(mine, Mapping) else {}


def _load_tracks(conn: Connection, tier: str) -> list[AlertTrackRow]:
    rows = conn.execute(sa.select(alert_state).where(alert_state.c.tier == tier)).mappings()
    out = []
    for row in rows:
        failing, last = row["failing"], row["last_run_id"]
        out.append(
            AlertTrackRow(
                fingerprint=str(row["fingerprint"]),
                tier=str(row["tier"]),
                failure_class=str(row["failure_class"]),
                state=str(row["state"]),
                severity=str(row["severity"]),
                consecutive=int(row["consecutive"]),
                greens=int(row["greens"]),
                last_run_id=int(last) if last is not None else None,
                failing=tuple(str(f) for f in failing) if isinstance(failing, list) else (),
            )
        )
    return out


def _save_track(conn: Connection, track: AlertTrackRow, now: datetime) -> None:
    values = {
        "tier": track.tier,
        "failure_class": track.failure_class,
        "state": track.state,
        "severity": track.severity,
        "consecutive": track.consecutive,
        "greens": track.greens,
        "last_run_id": track.last_run_id,
        "failing": list(track.failing),
        "updated_at": now,
    }
    statement = dialect.insert(conn, alert_state).values(
        fingerprint=track.fingerprint, external={}, **values
    )
    conn.execute(statement.on_conflict_do_update(index_elements=["fingerprint"], set_=values))
