"""Builders shared by the GPU tests: fake GPU entries and a fast policy."""

from __future__ import annotations

from typing import Any

from scheduler.config import GpuPolicy

MIB_80G = 81559
FOREIGN_PID = 4242


def gpu(
    index: int, *, used: int = 0, util: int | None = 0, procs: tuple[tuple[int, int], ...] = ()
) -> dict[str, Any]:
    """One fake GPU entry; ``procs`` holds ``(pid, used MiB)`` pairs."""
    return {
        "index": index,
        "uuid": f"GPU-fake-{index}",
        "name": "Fake H100",
        "memory_total_mib": MIB_80G,
        "memory_used_mib": used,
        "utilization_pct": util,
        "temperature_c": 30 + index,
        "processes": [{"pid": pid, "used_memory_mib": mib} for pid, mib in procs],
    }


def busy_gpu(index: int) -> dict[str, Any]:
    """A GPU running someone's training job."""
    return gpu(index, used=8000, util=97, procs=((FOREIGN_PID, 8000),))


def fast_policy(**overrides: Any) -> GpuPolicy:
    """A policy with short sampling so waiting tests take fractions of a second."""
    values: dict[str, Any] = {
        "free_samples": 1,
        "sample_interval": 0.05,
        "poll_timeout": 2,
        "wait": 1,
    }
    values.update(overrides)
    return GpuPolicy(**values)
