"""Slot planning, pure: which cron slots of a tier run now, and which are recorded as missed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from scheduler.daemon.cron import slots_between

MAX_GAP_ROWS = 500
"""At most this many missed rows for one gap (a tier down for a year does not write 8760 rows)."""


@dataclass(frozen=True)
class SlotPlan:
    """What one fire does: slots to run now (oldest first) and slots to record as missed."""

    run: list[datetime] = field(default_factory=list)
    missed: list[datetime] = field(default_factory=list)


def plan_slots(
    trigger: Any,
    slot: datetime,
    now: datetime,
    *,
    last: datetime | None,
    started_at: datetime | None,
    misfire_grace_s: float,
    max_catchup: int,
) -> SlotPlan:
    """Decide which slots up to ``slot`` run and which are missed.

    A slot that came due while this daemon ran is simply run; older unrecorded slots (a lost fire)
    are missed. After downtime (``slot`` before ``started_at``), the backlog slots still within
    the misfire grace are candidates, of which the newest ``max_catchup`` run and the rest are
    recorded as missed, so a long outage never floods the host.
    """
    if last is not None and last >= slot:
        return SlotPlan()
    backlog: list[datetime] = []
    if last is not None:
        between = [s.astimezone(timezone.utc) for s in slots_between(trigger, last, slot)]
        backlog = [s for s in between if s < slot][-MAX_GAP_ROWS:]
    if started_at is None or slot >= started_at:
        return SlotPlan(run=[slot], missed=backlog)
    due = [*backlog, slot]
    grace = timedelta(seconds=misfire_grace_s)
    candidates = [s for s in due if now - s <= grace]
    keep = candidates[-max_catchup:] if max_catchup else []
    return SlotPlan(run=keep, missed=[s for s in due if s not in keep])
