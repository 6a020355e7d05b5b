"""Alerts for drained GPUs: one ``fire`` per drain, one ``resolve`` when it is undrained.

A drain is no run's outcome, so it skips the per-tier rules: the health check reports each drain
exactly once (the store's insert decides), and this turns it into outbox rows for tier ``gpu``
(route them to an ops sink with ``tiers: [gpu]``). Severity is ``critical`` for findings that
need a person (Xid, ECC, lost GPU) and ``warning`` for those that clear on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from scheduler.alerts.outbox import entries_for
from scheduler.alerts.payload import Alert, RunFacts
from scheduler.alerts.rules import Action, FailureClass, Phase, Severity
from scheduler.alerts.sinks.base import Sink
from scheduler.kernel.events import GpuDrained, GpuUndrained
from scheduler.store.engine import OutboxEntry

__all__ = ["DRAIN_TIER", "drain_alert", "drain_entries"]

DRAIN_TIER = "gpu"
_CLEARING = frozenset({"gpu-missing", "unexplained-process"})


def drain_alert(event: GpuDrained | GpuUndrained, now: datetime) -> Alert:
    """The message for one drain or undrain."""
    where = "host" if event.index < 0 else f"gpu{event.index} {event.uuid}"
    if isinstance(event, GpuDrained):
        action, phase = Action.FIRE, Phase.FIRING
        severity = Severity.WARNING if event.code in _CLEARING else Severity.CRITICAL
        reason = f"{where} drained: {event.code}: {event.reason}"
        outcome = "drained"
    else:
        action, phase, severity = Action.RESOLVE, Phase.RESOLVED, Severity.WARNING
        reason = f"{where} undrained: {event.by}"
        outcome = "undrained"
    return Alert(
        fingerprint=f"{DRAIN_TIER}/{event.uuid}/{FailureClass.GPU_DRAINED.value}",
        tier=DRAIN_TIER,
        failure_class=FailureClass.GPU_DRAINED.value,
        action=action.value,
        state=phase.value,
        severity=severity.value,
        created_at=now.isoformat(),
        run=RunFacts(run_id=0, outcome=outcome, trigger="health-check", reason=reason),
        show_command="schedctl gpus",
    )


def drain_entries(
    event: GpuDrained | GpuUndrained, sinks: Sequence[Sink], clock: Callable[[], datetime]
) -> list[OutboxEntry]:
    """Outbox rows for the sinks that accept the drain alert."""
    return entries_for(drain_alert(event, clock()), sinks)
