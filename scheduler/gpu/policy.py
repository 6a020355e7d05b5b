"""The availability policy: is each GPU free right now, and if not, why.

One sample only; "free for N consecutive samples" is the pool's business. Reasons are short
phrases meant for people (``schedctl gpus``, the ``gpu-unavailable`` reason of a run).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scheduler.gpu.probe import GpuSnapshot, HostGpuInfo

if TYPE_CHECKING:
    from scheduler.config import GpuPolicy  # annotations only: importable with just pynvml

__all__ = ["GpuVerdict", "LeaseHolder", "evaluate", "is_excluded"]


@dataclass(frozen=True)
class LeaseHolder:
    """The run that holds a GPU lease (from the store's ``gpu_leases`` table)."""

    run_id: int
    tier: str

    def __str__(self) -> str:
        return f"leased to run {self.run_id} ({self.tier})"


@dataclass(frozen=True)
class GpuVerdict:
    """The policy's answer for one GPU; ``reasons`` is empty exactly when ``free``."""

    index: int
    uuid: str
    free: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """``gpu1: leased to run 12 (daily)`` or ``gpu0: free``."""
        return f"gpu{self.index}: {'; '.join(self.reasons) or 'free'}"


def is_excluded(gpu: GpuSnapshot, policy: GpuPolicy) -> bool:
    """Excluded by index (``0``, ``"0"``) or by UUID in ``gpu.exclude``."""
    for item in policy.exclude:
        if isinstance(item, int) or item.isdigit():
            if int(item) == gpu.index:
                return True
        elif item == gpu.uuid:
            return True
    return False


def _reasons(
    gpu: GpuSnapshot,
    policy: GpuPolicy,
    own_pids: Collection[int],
    leases: Mapping[str, LeaseHolder],
) -> list[str]:
    reasons = []
    if is_excluded(gpu, policy):
        reasons.append("excluded by gpu.exclude")
    holder = leases.get(gpu.uuid)
    if holder is not None:
        reasons.append(str(holder))
    if policy.foreign_processes_busy:
        for proc in gpu.processes:
            if proc.pid not in own_pids:
                mem = "unknown" if proc.used_memory_mib is None else f"{proc.used_memory_mib} MiB"
                reasons.append(f"foreign process pid {proc.pid} ({mem})")
    if gpu.memory_used_mib > policy.max_memory_used_mib:
        reasons.append(f"memory used {gpu.memory_used_mib} MiB > {policy.max_memory_used_mib} MiB")
    if gpu.utilization_pct is not None and gpu.utilization_pct > policy.max_utilization_pct:
        reasons.append(f"utilization {gpu.utilization_pct}% > {policy.max_utilization_pct}%")
    return reasons


def evaluate(
    snapshot: HostGpuInfo,
    policy: GpuPolicy,
    own_pids: Collection[int] = frozenset(),
    leases: Mapping[str, LeaseHolder] | None = None,
) -> list[GpuVerdict]:
    """A verdict per GPU, in index order.

    Args:
        own_pids: processes that are not foreign (schedctl's own).
        leases: GPU UUID -> holder; a leased GPU is never free for another run.
    """
    leases = leases or {}
    verdicts = []
    for gpu in snapshot.gpus:
        reasons = _reasons(gpu, policy, own_pids, leases)
        verdicts.append(GpuVerdict(gpu.index, gpu.uuid, not reasons, tuple(reasons)))
    return verdicts
