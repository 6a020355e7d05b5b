"""Events of a run's lifecycle and the bus that delivers them to listeners.

The dispatcher and the ledger publish; metrics, alerts, logs and CLI progress subscribe. This
module is part of the kernel: it imports nothing of schedctl at run time, so every listener can
depend on it without import loops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from scheduler.kernel.outcome import Outcome

if TYPE_CHECKING:
    from scheduler.store.engine import RunRecord

log = structlog.get_logger("schedctl.events")


@dataclass(frozen=True)
class RunQueued:
    """A run row was written; ``run_dir`` will receive its log and results."""

    run_id: int
    tier: str
    trigger: str
    run_dir: Path


@dataclass(frozen=True)
class RunStarted:
    """The runner is about to start the process/container (after source and GPUs are ready).

    :ivar gpu_wait_s: seconds spent waiting for GPUs (0 when none were needed).
    :ivar fire_lag_s: for scheduled runs, seconds between the slot time and the fire.
    """

    run_id: int
    tier: str
    trigger: str
    run_dir: Path
    gpu_wait_s: float = 0.0
    fire_lag_s: float | None = None


@dataclass(frozen=True)
class RunFinished:
    """A run reached a final outcome; ``record`` is the stored ``RunRecord``."""

    run_id: int
    tier: str
    trigger: str
    outcome: Outcome
    duration_s: float
    counts: dict[str, int]
    finished_at: datetime
    record: RunRecord


@dataclass(frozen=True)
class SlotMissed:
    """A scheduled slot was not run (daemon down past the tier's misfire grace)."""

    run_id: int
    tier: str
    slot: datetime


@dataclass(frozen=True)
class GpuDrained:
    """The pre-flight check found a GPU unfit; it is not leased until undrained.

    ``uuid`` is ``"host"`` (and ``index`` -1) for a host finding such as missing GPUs.
    """

    index: int
    uuid: str
    code: str
    reason: str


@dataclass(frozen=True)
class GpuUndrained:
    """A drained GPU may be leased again (``schedctl gpus undrain``, or a clean re-check)."""

    index: int
    uuid: str
    by: str


Event = RunQueued | RunStarted | RunFinished | SlotMissed | GpuDrained | GpuUndrained
Listener = Callable[[Event], None]


class EventBus:
    """Delivers each event to every listener, in subscription order; a failing listener is logged
    and never stops the others nor the run."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[Listener] = list(listeners)
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception(
                    "listener_failed", listener=repr(listener), event_type=type(event).__name__
                )
