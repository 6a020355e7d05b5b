"""Per-GPU gauges from the injected probe, polled at scrape time.

The probe is the same :class:`scheduler.gpu.GpuProbe` the pool uses, wrapped in a
:class:`scheduler.gpu.TimedProbe` by the caller so a hung driver costs a scrape at most its
timeout. A failed poll yields ``schedctl_gpu_probe_up 0`` and no per-GPU samples; registering the
collector never calls the probe (:meth:`GpuCollector.describe` returns empty families).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from scheduler.config import GpuPolicy
from scheduler.gpu import GpuProbe, LeaseHolder, evaluate
from scheduler.kernel.errors import GpuError, StoreError

__all__ = ["GpuCollector"]

log = structlog.get_logger("schedctl.metrics")

_MIB = 1024 * 1024

LeaseSource = Callable[[], Mapping[str, LeaseHolder]]
"""GPU UUID -> the run holding it (``scheduler.gpu.lease_holders`` bound to the store)."""

DrainSource = Callable[[], Iterable[Mapping[str, Any]]]
"""The drained GPUs (``Store.drained_gpus``): ``gpu_uuid``, ``gpu_index``, ``code``, ..."""

VersionSource = Callable[[], int | None]
"""``Store.data_version``: while it holds, the leases and drains read last time still stand."""


class GpuCollector:
    """``schedctl_gpu_*`` gauges: memory, utilisation, temperature, availability.

    Args:
        probe: polled once per scrape.
        policy: decides ``schedctl_gpu_available`` exactly as the pool would.
        leases: the current leases; a leased GPU is never available.
        own_pids: processes that are not foreign on a GPU (default: this process).
        version: the store's data version; leases and drains are read again only when it
            moved (``None``, or a source answering ``None``: at every scrape).
    """

    def __init__(
        self,
        probe: GpuProbe,
        policy: GpuPolicy,
        leases: LeaseSource,
        own_pids: Collection[int] | None = None,
        drains: DrainSource | None = None,
        version: VersionSource | None = None,
    ) -> None:
        self._probe = probe
        self._drains = drains
        self._version = version
        self._read: tuple[int, Mapping[str, LeaseHolder] | None, list[Mapping[str, Any]]] | None
        self._read = None  # (store version, leases, drains) last read
        self._policy = policy
        self._leases = leases
        self._own_pids = frozenset({os.getpid()} if own_pids is None else own_pids)

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        f = _families()
        version = self._version() if self._version is not None else None
        read = self._read if version is not None else None
        if read is None or read[0] != version:
            read = None
            self._read = None
        drained = read[2] if read is not None else self._read_drains()
        self._collect_drains(f["schedctl_gpu_drained"], drained)
        try:
            host = self._probe.snapshot()
        except GpuError as exc:
            log.warning("metrics_gpu_probe_failed", error=str(exc))
            f["schedctl_gpu_probe_up"].add_metric([], 0.0)
            return list(f.values())
        f["schedctl_gpu_probe_up"].add_metric([], 1.0)
        if read is not None:
            leases = read[1]
        else:
            try:
                leases = self._leases()
            except StoreError as exc:
                log.warning("metrics_store_unreadable", error=str(exc))
                leases = None
            if version is not None and leases is not None and drained is not None:
                self._read = (version, leases, drained)
        verdicts = {v.uuid: v for v in evaluate(host, self._policy, self._own_pids, leases)}
        for gpu in host.gpus:
            labels = [str(gpu.index), gpu.uuid]
            f["schedctl_gpu_memory_used_bytes"].add_metric(labels, gpu.memory_used_mib * _MIB)
            f["schedctl_gpu_memory_total_bytes"].add_metric(labels, gpu.memory_total_mib * _MIB)
            if gpu.utilization_pct is not None:
                f["schedctl_gpu_utilization_ratio"].add_metric(labels, gpu.utilization_pct / 100)
            if gpu.temperature_c is not None:
                f["schedctl_gpu_temperature_celsius"].add_metric(labels, float(gpu.temperature_c))
            f["schedctl_gpu_processes"].add_metric(labels, float(len(gpu.processes)))
            # Unknown leases (store unreadable) make "available" unknowable: leave it out.
            if leases is not None:
                free = verdicts[gpu.uuid].free
                f["schedctl_gpu_available"].add_metric(labels, 1.0 if free else 0.0)
        return list(f.values())

    def _read_drains(self) -> list[Mapping[str, Any]] | None:
        """From the store, not the probe: a drained GPU that stopped answering still shows."""
        if self._drains is None:
            return []
        try:
            return list(self._drains())
        except StoreError as exc:
            log.warning("metrics_store_unreadable", error=str(exc))
            return None

    @staticmethod
    def _collect_drains(
        family: GaugeMetricFamily, rows: Iterable[Mapping[str, Any]] | None
    ) -> None:
        for row in rows or ():
            index = int(row["gpu_index"])
            gpu = "host" if index < 0 else str(index)
            family.add_metric([gpu, str(row["gpu_uuid"]), str(row["code"])], 1.0)


def _families() -> dict[str, GaugeMetricFamily]:
    labels = ["gpu", "uuid"]
    specs = [
        ("schedctl_gpu_memory_used_bytes", "GPU memory in use, any process."),
        ("schedctl_gpu_memory_total_bytes", "GPU memory size."),
        ("schedctl_gpu_utilization_ratio", "GPU utilisation over the driver's last sample, 0-1."),
        ("schedctl_gpu_temperature_celsius", "GPU core temperature."),
        ("schedctl_gpu_processes", "Compute processes holding a context on the GPU."),
        (
            "schedctl_gpu_available",
            "1 when the availability policy finds the GPU free and no run holds a lease on it.",
        ),
    ]
    out = {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc in specs}
    out["schedctl_gpu_drained"] = GaugeMetricFamily(
        "schedctl_gpu_drained",
        "1 for a GPU the health check drained; reason is the finding code (schedctl gpus).",
        labels=["gpu", "uuid", "reason"],
    )
    out["schedctl_gpu_probe_up"] = GaugeMetricFamily(
        "schedctl_gpu_probe_up", "1 when the last GPU poll (NVML) succeeded, else 0."
    )
    return out
