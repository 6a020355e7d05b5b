"""The real GPU probe: NVML through the ``pynvml`` module of the ``nvidia-ml-py`` package.

``pynvml`` raises one generated ``NVMLError_<Name>`` class per NVML return code. They are translated
into the schedctl exception tree in exactly one place, :func:`translate_nvml_errors`, by class name
(so an injected fake module with the same class names behaves like the real one)::

    NVMLError_LibraryNotFound, _DriverNotLoaded, _NoPermission, ...  -> NvmlUnavailable
    NVMLError_GpuIsLost, _Unknown, _ResetRequired, ...               -> GpuLost
    every other NVMLError_*                                          -> GpuError
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from scheduler.gpu.probe import GpuHealth, GpuProcess, GpuSnapshot, HostGpuInfo
from scheduler.gpu.xidlog import KernelXidLog, XidSource
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable

__all__ = ["ERROR_CLASSES", "NvmlProbe", "format_cuda_version", "translate_nvml_errors"]

_MIB = 1024 * 1024
_T = TypeVar("_T")

_UNAVAILABLE_HINTS = {
    "LibraryNotFound": "libnvidia-ml.so.1 not found: no NVIDIA driver on this host",
    "DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
    "NoPermission": "no permission to query NVML (are /dev/nvidia* accessible?)",
    "NotFound": "no such GPU",
    "GpuNotFound": "no such GPU",
    "LibRmVersionMismatch": "NVML library and kernel driver versions differ (reboot or reload)",
    "FunctionNotFound": "the NVML library is too old for this call",
    "Uninitialized": "NVML is not initialised",
    "OperatingSystem": "the operating system blocked the NVML request",
}
_LOST_HINTS = {
    "GpuIsLost": "a GPU fell off the bus (check dmesg for Xid errors)",
    "Unknown": "NVML returned an unknown error (the driver may be wedged)",
    "ResetRequired": "a GPU needs a reset",
    "IrqIssue": "the driver reports an interrupt problem",
    "CorruptedInforom": "a GPU's infoROM is corrupted",
    "InsufficientPower": "a GPU lacks external power",
}
_OTHER = frozenset(
    {
        "AlreadyInitialized",
        "ArgumentVersionMismatch",
        "Deprecated",
        "FreqNotSupported",
        "InUse",
        "InsufficientResources",
        "InsufficientSize",
        "InvalidArgument",
        "InvalidState",
        "Memory",
        "NoData",
        "NotReady",
        "NotSupported",
        "ResetTypeNotSupported",
        "Timeout",
        "VgpuEccNotSupported",
    }
)
ERROR_CLASSES: frozenset[str] = frozenset(_UNAVAILABLE_HINTS) | frozenset(_LOST_HINTS) | _OTHER
"""Every ``NVMLError_<Name>`` suffix this module knows; a test keeps it complete."""

_UNSUPPORTED = frozenset({"NotSupported", "NoData", "FunctionNotFound", "ArgumentVersionMismatch"})


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__.removeprefix("NVMLError_")


def _translate(exc: BaseException) -> GpuError:
    name = _error_name(exc)
    if name in _UNAVAILABLE_HINTS:
        return NvmlUnavailable(f"NVML unavailable: {_UNAVAILABLE_HINTS[name]} ({exc})")
    if name in _LOST_HINTS:
        return GpuLost(f"GPU lost: {_LOST_HINTS[name]} ({exc})")
    return GpuError(f"NVML error {name}: {exc}")


@contextmanager
def translate_nvml_errors(nvml: Any) -> Iterator[None]:
    """The one boundary where ``pynvml`` exceptions become :class:`GpuError` subclasses."""
    mismatch: type[BaseException] | tuple[()] = getattr(nvml, "NVMLLibraryMismatchError", ())
    try:
        yield
    except nvml.NVMLError as exc:
        raise _translate(exc) from exc
    except mismatch as exc:
        raise NvmlUnavailable(f"NVML unavailable: {exc}") from exc
    except OSError as exc:
        raise NvmlUnavailable(f"NVML unavailable: cannot load the library ({exc})") from exc


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA driver version (12040) as people write it ("12.4")."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class _Device:
    """What does not change while NVML stays initialised."""

    handle: Any
    uuid: str
    name: str


class NvmlProbe:
    """Reads GPUs through NVML; ``nvml`` injects a module for tests (default: ``import pynvml``).

    NVML is initialised on the first snapshot and again after any failure, so a driver that
    appears later (or recovers) is picked up without restarting the daemon.
    """

    def __init__(
        self, nvml: ModuleType | Any | None = None, kernel_log: XidSource | None = None
    ) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._initialised = False
        self._devices: dict[int, _Device] = {}
        self._versions: tuple[str | None, str | None] | None = None
        self._events: Any = None
        self._events_supported = True
        self._kernel_log = kernel_log

    def health(self) -> tuple[GpuHealth, ...]:
        """Health counters of every GPU; Xids from the NVML event set, else the kernel log.

        A GPU that answers ``GpuIsLost`` is reported ``lost`` in its own entry, so the others
        can still be leased.
        """
        nvml = self._module()
        with self._lock, translate_nvml_errors(nvml):
            try:
                if not self._initialised:
                    nvml.nvmlInit()
                    self._initialised = True
                count = int(nvml.nvmlDeviceGetCount())
                devices = {i: self._device(nvml, i) for i in range(count)}
                xids = self._xids(nvml, devices)
                return tuple(
                    _health(nvml, index, device, xids.get(device.uuid, ()))
                    for index, device in devices.items()
                )
            except BaseException:
                self._forget(nvml)
                raise

    def _xids(self, nvml: Any, devices: dict[int, _Device]) -> dict[str, list[int]]:
        """Critical Xids since the last read: drain the event set (registered on first use)."""
        found: dict[str, list[int]] = {}
        if self._events_supported and self._events is None:
            try:
                events = nvml.nvmlEventSetCreate()
                for device in devices.values():
                    nvml.nvmlDeviceRegisterEvents(
                        device.handle, nvml.nvmlEventTypeXidCriticalError, events
                    )
                self._events = events
            except nvml.NVMLError as exc:
                if _error_name(exc) not in _UNSUPPORTED:
                    raise
                self._events_supported = False
        if self._events is not None:
            while True:
                try:
                    data = nvml.nvmlEventSetWait_v2(self._events, 0)
                except nvml.NVMLError as exc:
                    if _error_name(exc) == "Timeout":
                        break
                    raise
                uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
                found.setdefault(uuid, []).append(int(data.eventData))
            return found
        log = self._kernel_log
        if log is None:
            log = self._kernel_log = KernelXidLog()
        by_bus = {_bus_id(nvml, d.handle): d.uuid for d in devices.values()}
        for bus, xid in log.new_xids():
            owner = by_bus.get(bus)
            if owner is not None:
                found.setdefault(owner, []).append(xid)
        return found

    def snapshot(self) -> HostGpuInfo:
        nvml = self._module()
        with self._lock, translate_nvml_errors(nvml):
            try:
                if not self._initialised:
                    nvml.nvmlInit()
                    self._initialised = True
                return self._read(nvml)
            except BaseException:
                self._forget(nvml)
                raise

    def close(self) -> None:
        if self._nvml is None:
            return
        with self._lock, translate_nvml_errors(self._nvml):
            self._forget(self._nvml)

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise NvmlUnavailable(
                    "NVML unavailable: the nvidia-ml-py package (module pynvml) is not installed"
                ) from exc
            self._nvml = pynvml
        return self._nvml

    def _forget(self, nvml: Any) -> None:
        self._devices.clear()
        self._versions = None
        if self._events is not None:
            with suppress(nvml.NVMLError):
                nvml.nvmlEventSetFree(self._events)
            self._events = None
        if self._initialised:
            self._initialised = False
            with suppress(nvml.NVMLError):  # shutting down a wedged library is best effort
                nvml.nvmlShutdown()

    def _read(self, nvml: Any) -> HostGpuInfo:
        if self._versions is None:
            self._versions = (_text(nvml.nvmlSystemGetDriverVersion()), self._cuda_version(nvml))
        count = int(nvml.nvmlDeviceGetCount())
        gpus = tuple(self._read_device(nvml, index) for index in range(count))
        driver, cuda = self._versions
        return HostGpuInfo(driver_version=driver, cuda_version=cuda, gpus=gpus)

    def _cuda_version(self, nvml: Any) -> str | None:
        getter = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        getter = getter or nvml.nvmlSystemGetCudaDriverVersion
        value = _optional(nvml, getter)
        return None if value is None else format_cuda_version(int(value))

    def _device(self, nvml: Any, index: int) -> _Device:
        device = self._devices.get(index)
        if device is None:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            device = _Device(
                handle, _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle))
            )
            self._devices[index] = device
        return device

    def _read_device(self, nvml: Any, index: int) -> GpuSnapshot:
        device = self._device(nvml, index)
        total, used = _memory(nvml, device.handle)
        rates = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, device.handle)
        temperature = _temperature(nvml, device.handle)
        return GpuSnapshot(
            index=index,
            uuid=device.uuid,
            name=device.name,
            memory_total_mib=total,
            memory_used_mib=used,
            utilization_pct=None if rates is None else int(rates.gpu),
            temperature_c=temperature,
            processes=_processes(nvml, device.handle),
        )


def _optional(nvml: Any, fn: Callable[..., _T], *args: Any) -> _T | None:
    """A reading some devices or drivers do not offer (MIG, vGPU, old drivers) is ``None``."""
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        if _error_name(exc) in _UNSUPPORTED:
            return None
        raise


def _temperature(nvml: Any, handle: Any) -> int | None:
    """Core temperature; the versioned call first, since the legacy one goes away in CUDA 14."""
    versioned = getattr(nvml, "nvmlDeviceGetTemperatureV", None)
    value = None
    if versioned is not None:
        value = _optional(nvml, versioned, handle, nvml.NVML_TEMPERATURE_GPU)
    if value is None:
        value = _optional(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    return None if value is None else int(value)


def _memory(nvml: Any, handle: Any) -> tuple[int, int]:
    """Total and used MiB; v2 leaves out driver-reserved memory, which v1 counts as used."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    info = None
    if version is not None:
        info = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle, version)
    if info is None:
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.total) // _MIB, int(info.used) // _MIB


def _processes(nvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
    mismatch: type[BaseException] | tuple[()] = getattr(nvml, "NVMLLibraryMismatchError", ())
    try:
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except mismatch:
        # The driver predates the v3 struct that pynvml asks for by default.
        procs = nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle)
    return tuple(
        GpuProcess(
            pid=int(p.pid),
            used_memory_mib=None if p.usedGpuMemory is None else int(p.usedGpuMemory) // _MIB,
        )
        for p in procs
    )


def _bus_id(nvml: Any, handle: Any) -> str:
    """``0000:3b:00`` as the kernel log writes it, from NVML's ``00000000:3B:00.0``."""
    bus = _text(nvml.nvmlDeviceGetPciInfo(handle).busId).lower()
    domain, _, rest = bus.partition(":")
    return f"{domain[-4:]}:{rest.rsplit('.', 1)[0]}"


def _health(nvml: Any, index: int, device: _Device, xids: Sequence[int]) -> GpuHealth:
    handle = device.handle
    try:
        ecc = _optional(
            nvml, nvml.nvmlDeviceGetTotalEccErrors, handle,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC,
        )  # fmt: skip
        pending = _optional(nvml, nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        remap = _optional(nvml, nvml.nvmlDeviceGetRemappedRows, handle)
    except nvml.NVMLError as exc:
        if _error_name(exc) in _LOST_HINTS:
            return GpuHealth(index, device.uuid, tuple(xids), lost=True)
        raise
    return GpuHealth(
        index=index,
        uuid=device.uuid,
        xids=tuple(xids),
        ecc_uncorrectable=None if ecc is None else int(ecc),
        retired_pages_pending=None if pending is None else int(pending) == 1,
        row_remap_failure=None if remap is None else bool(remap[3]),
    )
