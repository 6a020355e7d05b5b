"""What a run holds while it runs (:class:`Lease`), how waiting for one ends, and the leak check."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from runners.base import GpuDevice
from scheduler.gpu.probe import GpuProbe, GpuProcess, GpuSnapshot
from scheduler.kernel.errors import GpuError, SchedctlError

__all__ = ["GpuWaitCancelled", "GpuWaitTimeout", "Lease", "leaked_processes"]


class GpuWaitTimeout(GpuError):
    """No suitable GPUs became free before the wait ran out (-> outcome gpu-unavailable).

    :ivar reasons: the last known reasons per GPU, e.g. ``{"gpu0": ["foreign process ..."]}``.
    """

    def __init__(self, needed: str, waited_s: float, reasons: Mapping[str, list[str]]) -> None:
        self.needed = needed
        self.waited_s = waited_s
        self.reasons = dict(reasons)
        detail = "; ".join(f"{gpu}: {', '.join(why)}" for gpu, why in self.reasons.items())
        super().__init__(
            f"no {needed} free after waiting {waited_s:.1f}s" + (f" ({detail})" if detail else "")
        )


class GpuWaitCancelled(SchedctlError):
    """The run was cancelled while it waited for GPUs (-> outcome cancelled, not a GPU problem)."""


@dataclass(frozen=True)
class Lease:
    """GPUs leased to one run; empty for a run that needs none.

    :ivar gpus: the snapshot of each leased GPU at the moment it was granted.
    :ivar waited_s: time spent in :meth:`GpuPool.acquire`.
    """

    run_id: int
    tier: str
    devices: tuple[GpuDevice, ...] = ()
    gpus: tuple[GpuSnapshot, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    waited_s: float = 0.0
    pids_at_start: frozenset[int] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.devices)

    @property
    def uuids(self) -> list[str]:
        return [d.uuid for d in self.devices]

    def provenance(self) -> dict[str, Any]:
        """Columns of the run row: ``store.update_run(run_id, **lease.provenance())``."""
        return {
            "gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name} for g in self.gpus],
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
        }

    def cuda_visible_devices(self) -> str:
        """The value for ``CUDA_VISIBLE_DEVICES``: UUIDs, immune to index reordering."""
        return ",".join(self.uuids)


def leaked_processes(
    lease: Lease,
    probe: GpuProbe,
    before_pids: Collection[int] | None = None,
    settle_s: float = 2.0,
    poll_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[GpuProcess]:
    """Processes still on the leased GPUs after the run that were not there when it started.

    The driver may list a process for a moment after it exited, so this polls for up to
    ``settle_s`` until the GPUs are clean. ``before_pids`` defaults to the pids seen at lease time.

    Raises:
        GpuError: the probe failed; the caller records that the check could not be made.
    """
    if not lease.devices:
        return []
    before = lease.pids_at_start if before_pids is None else frozenset(before_pids)
    uuids = set(lease.uuids)
    deadline = clock() + settle_s
    while True:
        snapshot = probe.snapshot()
        leaked = [
            proc
            for gpu in snapshot.gpus
            if gpu.uuid in uuids
            for proc in gpu.processes
            if proc.pid not in before
        ]
        if not leaked or clock() >= deadline:
            return leaked
        sleep(poll_s)
