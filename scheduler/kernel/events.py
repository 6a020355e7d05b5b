"""Events the dispatcher emits; listeners (metrics, alerts, logs, CLI progress) subscribe.

This module imports nothing from the package except the runner contract's plain data, so every
listener can depend on it without import loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.kernel.outcome import Outcome


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
    record: Any


@dataclass(frozen=True)
class SlotMissed:
    """A scheduled slot was not run (daemon down past the tier's misfire grace)."""

    run_id: int
    tier: str
    slot: datetime


Event = RunQueued | RunStarted | RunFinished | SlotMissed
Listener = Callable[[Event], None]
