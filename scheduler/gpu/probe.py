"""What a GPU probe reports: one :class:`HostGpuInfo` per poll, behind :class:`GpuProbe`.

Backends: :class:`scheduler.gpu.nvml.NvmlProbe` (the real driver through ``pynvml``) and
:class:`scheduler.gpu.fake.FakeProbe` (a JSON file, for tests and demos). Every backend raises only
:class:`scheduler.kernel.errors.GpuError` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuProcess:
    """A compute process holding a context on a GPU.

    :ivar used_memory_mib: ``None`` where the driver cannot attribute memory (e.g. some vGPU/WDDM).
    """

    pid: int
    used_memory_mib: int | None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "used_memory_mib": self.used_memory_mib}


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU at one poll; ``None`` marks a reading the device does not support."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int
    utilization_pct: int | None
    temperature_c: int | None
    processes: tuple[GpuProcess, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_total_mib": self.memory_total_mib,
            "memory_used_mib": self.memory_used_mib,
            "utilization_pct": self.utilization_pct,
            "temperature_c": self.temperature_c,
            "processes": [p.to_json() for p in self.processes],
        }


@dataclass(frozen=True)
class HostGpuInfo:
    """Every GPU of the host, ordered by index, plus the driver and CUDA driver versions."""

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[GpuSnapshot, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GpuHealth:
    """One GPU's health counters at one read; ``None`` marks a counter the device lacks.

    :ivar xids: critical Xid codes the driver reported since the previous read (events are
        consumed by the read, so each is seen once).
    :ivar ecc_uncorrectable: volatile (since driver load) uncorrectable ECC error count.
    :ivar lost: the GPU stopped answering (NVML "GPU is lost") during this read.
    """

    index: int
    uuid: str
    xids: tuple[int, ...] = ()
    ecc_uncorrectable: int | None = None
    retired_pages_pending: bool | None = None
    row_remap_failure: bool | None = None
    lost: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "xids": list(self.xids),
            "ecc_uncorrectable": self.ecc_uncorrectable,
            "retired_pages_pending": self.retired_pages_pending,
            "row_remap_failure": self.row_remap_failure,
            "lost": self.lost,
        }


class HealthProbe(Protocol):
    """Reads the health counters of every GPU (NVML, or the fake backend's injected faults).

    Raises:
        NvmlUnavailable: no driver, library, permission or device.
        GpuError: the read failed as a whole (a single lost GPU is reported in its entry).
    """

    def health(self) -> tuple[GpuHealth, ...]:
        """One read per GPU, ordered by index."""
        ...


class GpuProbe(Protocol):
    """Reads the current state of the host's GPUs.

    Raises:
        NvmlUnavailable: no driver, library, permission or device.
        GpuLost: a GPU fell off the bus or the driver stopped answering.
        GpuError: any other (possibly transient) failure to read.
    """

    def snapshot(self) -> HostGpuInfo:
        """One poll of every GPU."""
        ...

    def close(self) -> None:
        """Release driver handles; the probe may be used again afterwards."""
        ...
