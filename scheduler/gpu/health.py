"""The pre-flight health check: what makes a GPU unfit for tests although it looks free.

A memory/utilisation check cannot see a GPU that threw an Xid, has pending page retirements or
fell off the bus; tests on it fail like code bugs. :func:`assess` turns one read of the health
counters (:class:`~scheduler.gpu.probe.GpuHealth`) and one snapshot into findings, each with a
documented code:

==========================  ====================================================================
code                        meaning (clears: the drain ends on its own when a re-check is clean)
==========================  ====================================================================
``xid``                     the driver reported a critical Xid (:data:`CRITICAL_XIDS`) since the
                            last check (NVML's event set, else the kernel log's ``NVRM: Xid``)
``ecc-uncorrectable``       the volatile uncorrectable ECC count rose since the last check
``retired-pages-pending``   a page retirement waits for a GPU reset
``row-remap-failure``       a row remapping failed: the memory cannot be repaired in place
``gpu-lost``                the GPU no longer answers (NVML "GPU is lost")
``gpu-missing``             fewer GPUs than ``gpu.expected_count`` (a host finding; clears)
``unexplained-process``     a compute process on a GPU that no lease explains, e.g. the leftover
                            of a killed container (clears)
==========================  ====================================================================

:class:`HealthMonitor` applies findings: drains (stored, so every process sees them), auto
undrains for findings that clear, and one notification per change (alert, metrics).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from scheduler.gpu.probe import GpuHealth, HealthProbe, HostGpuInfo
from scheduler.kernel.events import GpuDrained, GpuUndrained

__all__ = [
    "CRITICAL_XIDS",
    "HOST_KEY",
    "DrainStore",
    "Finding",
    "FindingCode",
    "HealthMonitor",
    "assess",
]

log = structlog.get_logger("schedctl.gpu.health")

HOST_KEY = "host"
"""The drain row of host findings (``gpu-missing``): not one GPU's."""

CRITICAL_XIDS: frozenset[int] = frozenset(
    {48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 136, 140, 143}
)
"""Xids that mean the hardware or driver needs attention (NVIDIA's Xid catalogue: double-bit ECC,
row remapping, NVLink, fallen off the bus, contained/uncontained ECC, GSP errors). Xids a program
causes (13 graphics engine exception, 31 MMU fault, 43 stopped channel, 45 preemptive cleanup)
are not: the next test run gets a fresh context."""


class FindingCode(str, enum.Enum):
    XID = "xid"
    ECC_UNCORRECTABLE = "ecc-uncorrectable"
    RETIRED_PAGES_PENDING = "retired-pages-pending"
    ROW_REMAP_FAILURE = "row-remap-failure"
    GPU_LOST = "gpu-lost"
    GPU_MISSING = "gpu-missing"
    UNEXPLAINED_PROCESS = "unexplained-process"

    @property
    def clears(self) -> bool:
        """Whether a clean re-check ends the drain (else only ``schedctl gpus undrain``)."""
        return self in (FindingCode.GPU_MISSING, FindingCode.UNEXPLAINED_PROCESS)


@dataclass(frozen=True)
class Finding:
    """One reason a GPU (or, for ``gpu-missing``, the host) is unfit for a lease."""

    code: FindingCode
    message: str
    uuid: str = HOST_KEY
    index: int = -1

    def describe(self) -> str:
        where = "host" if self.uuid == HOST_KEY else f"gpu{self.index}"
        return f"{where} {self.code.value}: {self.message}"


def assess(
    health: Sequence[GpuHealth],
    host: HostGpuInfo | None,
    *,
    ecc_baseline: Mapping[str, int],
    explained_pids: Collection[int] = frozenset(),
    leased: Collection[str] = frozenset(),
    expected_count: int | None = None,
    check_processes: bool = True,
) -> tuple[list[Finding], dict[str, int]]:
    """Findings of one check and the new ECC baselines (pure).

    Args:
        ecc_baseline: GPU UUID -> the uncorrectable count at the previous check; a GPU not in
            it starts its baseline now (a count from before the daemon started is no news).
        explained_pids: processes that are schedctl's own.
        leased: UUIDs held by a run: their processes are that run's business.
    """
    findings: list[Finding] = []
    baseline = dict(ecc_baseline)
    for gpu in health:

        def found(code: FindingCode, message: str, gpu: GpuHealth = gpu) -> None:
            findings.append(Finding(code, message, gpu.uuid, gpu.index))

        if gpu.lost:
            found(FindingCode.GPU_LOST, "the GPU no longer answers NVML (fell off the bus?)")
            continue
        critical = [x for x in gpu.xids if x in CRITICAL_XIDS]
        if critical:
            found(FindingCode.XID, "critical Xid " + ", ".join(str(x) for x in critical))
        if gpu.ecc_uncorrectable is not None:
            before = baseline.get(gpu.uuid)
            if before is not None and gpu.ecc_uncorrectable > before:
                found(
                    FindingCode.ECC_UNCORRECTABLE,
                    f"volatile uncorrectable ECC errors rose from {before} to "
                    f"{gpu.ecc_uncorrectable}",
                )
            baseline[gpu.uuid] = gpu.ecc_uncorrectable
        if gpu.retired_pages_pending:
            found(FindingCode.RETIRED_PAGES_PENDING, "retired pages pending: the GPU needs a reset")
        if gpu.row_remap_failure:
            found(FindingCode.ROW_REMAP_FAILURE, "a row remapping failed: the GPU needs service")
    if host is not None:
        if expected_count is not None and len(host.gpus) < expected_count:
            findings.append(
                Finding(
                    FindingCode.GPU_MISSING,
                    f"{len(host.gpus)} GPUs present, gpu.expected_count is {expected_count}",
                )
            )
        if check_processes:
            for snap in host.gpus:
                if snap.uuid in leased:
                    continue
                strangers = [p.pid for p in snap.processes if p.pid not in explained_pids]
                if strangers:
                    findings.append(
                        Finding(
                            FindingCode.UNEXPLAINED_PROCESS,
                            "processes no lease explains: pids "
                            + ", ".join(str(p) for p in strangers),
                            snap.uuid,
                            snap.index,
                        )
                    )
    return findings, baseline


class DrainStore(Protocol):
    """The part of :class:`scheduler.store.Store` that keeps drains (``gpu_drains``)."""

    def drain_gpu(self, uuid: str, index: int, code: str, reason: str, clears: bool) -> bool: ...

    def undrain_gpu(self, gpu: str) -> dict[str, Any] | None: ...

    def drained_gpus(self) -> list[dict[str, Any]]: ...


Notify = Callable[[GpuDrained | GpuUndrained], None]


class HealthMonitor:
    """Runs the check and keeps the drains in step with its findings; thread-safe.

    Args:
        notify: called once per new drain and per automatic undrain (the dispatcher's event
            bus: alerts and logs listen there).
    """

    def __init__(
        self,
        probe: HealthProbe,
        drains: DrainStore,
        *,
        expected_count: int | None = None,
        check_processes: bool = True,
        own_pids: Collection[int] = frozenset(),
        notify: Notify | None = None,
    ) -> None:
        self.probe = probe
        self.drains = drains
        self.expected_count = expected_count
        self.check_processes = check_processes
        self.own_pids = frozenset(own_pids)
        self.notify = notify
        self._lock = threading.Lock()
        self._ecc: dict[str, int] = {}

    def check(self, host: HostGpuInfo | None, leased: Collection[str]) -> list[Finding]:
        """Read health, drain what failed, undrain what cleared; the findings of this check.

        Raises:
            GpuError: the health read failed (the caller decides whether that blocks a lease).
        """
        with self._lock:
            health = self.probe.health()
            findings, self._ecc = assess(
                health, host, ecc_baseline=self._ecc, explained_pids=self.own_pids,
                leased=leased, expected_count=self.expected_count,
                check_processes=self.check_processes,
            )  # fmt: skip
            # Clearing findings come from the snapshot: without one, nothing is known to be clear.
            self._apply(findings, undrain=host is not None)
        return findings

    def drained(self) -> dict[str, dict[str, Any]]:
        """Drain key (GPU UUID or :data:`HOST_KEY`) -> its stored row."""
        return {row["gpu_uuid"]: row for row in self.drains.drained_gpus()}

    def _apply(self, findings: list[Finding], *, undrain: bool) -> None:
        by_key: dict[str, list[Finding]] = {}
        for finding in findings:
            by_key.setdefault(finding.uuid, []).append(finding)
        current = self.drained()
        for key, found in by_key.items():
            first = found[0]
            reason = "; ".join(f.message for f in found)
            clears = all(f.code.clears for f in found)
            if self.drains.drain_gpu(key, first.index, first.code.value, reason, clears):
                log.warning("gpu_drained", gpu=first.index, uuid=key, code=first.code.value,
                            reason=reason)  # fmt: skip
                self._emit(GpuDrained(first.index, key, first.code.value, reason))
        for key, row in current.items():
            cleared = undrain and row["clears"] and key not in by_key
            if cleared and self.drains.undrain_gpu(key) is not None:
                log.info("gpu_undrained", uuid=key, by="re-check")
                self._emit(GpuUndrained(int(row["gpu_index"]), key, "a re-check is clean"))

    def _emit(self, event: GpuDrained | GpuUndrained) -> None:
        if self.notify is not None:
            self.notify(event)
