"""The NVML backend against an injected fake ``pynvml`` module, and against the real one here."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from scheduler.gpu import GpuProcess, NvmlProbe
from scheduler.gpu.nvml import ERROR_CLASSES, format_cuda_version
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable

MIB = 1024 * 1024


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


HAS_DRIVER = _has_driver()
REAL_ERROR_CLASSES = sorted(name for name in dir(pynvml) if name.startswith("NVMLError_"))


class FakeNvml:
    """Just enough of ``pynvml`` for two GPUs, with the real exception classes."""

    NVMLError = pynvml.NVMLError
    NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail: dict[str, BaseException] = {}
        self.procs: dict[int, list[Any]] = {0: [], 1: [SimpleNamespace(pid=77, usedGpuMemory=None)]}

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.fail:
            raise self.fail[name]

    def nvmlInit(self) -> None:
        self._call("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion_v2")
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        self._call("nvmlDeviceGetUUID")
        return f"GPU-{handle}".encode()

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._call("nvmlDeviceGetName")
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> Any:
        self._call(f"nvmlDeviceGetMemoryInfo_{'v2' if version else 'v1'}")
        used = 500 if version else 1024  # v1 counts driver-reserved memory as used
        return SimpleNamespace(total=81559 * MIB, used=(used + handle) * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._call("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=handle * 50, memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        return 40 + handle

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        self._call("nvmlDeviceGetComputeRunningProcesses")
        return self.procs[handle]

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: int) -> list[Any]:
        self._call("nvmlDeviceGetComputeRunningProcesses_v2")
        return self.procs[handle]


def error(name: str) -> BaseException:
    """An instance of the real ``pynvml.NVMLError_<name>`` class."""
    cls: type[BaseException] = getattr(pynvml, f"NVMLError_{name}")
    return cls()


class TestReadings:
    def test_snapshot_of_two_gpus(self) -> None:
        """Every reading is converted: MiB, percent, bytes->str, CUDA 12040 -> 12.4, None memory."""
        host = NvmlProbe(nvml=FakeNvml()).snapshot()
        assert (host.driver_version, host.cuda_version) == ("550.54.15", "12.4")
        first, second = host.gpus
        assert (first.index, first.uuid, first.name) == (0, "GPU-0", "NVIDIA H100 80GB HBM3")
        assert (first.memory_total_mib, first.memory_used_mib) == (81559, 500)
        assert (second.utilization_pct, second.temperature_c) == (50, 41)
        assert second.processes == (GpuProcess(77, None),)

    def test_init_once_and_static_data_cached(self) -> None:
        """nvmlInit, UUIDs, names and versions are read once across snapshots."""
        nvml = FakeNvml()
        probe = NvmlProbe(nvml=nvml)
        probe.snapshot()
        probe.snapshot()
        assert nvml.calls["nvmlInit"] == 1
        assert nvml.calls["nvmlDeviceGetUUID"] == 2
        assert nvml.calls["nvmlSystemGetDriverVersion"] == 1
        assert nvml.calls["nvmlDeviceGetMemoryInfo_v2"] == 4

    def test_unsupported_readings_are_none(self) -> None:
        """A device without utilisation or temperature sensors reports None, not an error."""
        nvml = FakeNvml()
        nvml.fail["nvmlDeviceGetUtilizationRates"] = error("NotSupported")
        nvml.fail["nvmlDeviceGetTemperature"] = error("NotSupported")
        gpu = NvmlProbe(nvml=nvml).snapshot().gpus[0]
        assert (gpu.utilization_pct, gpu.temperature_c) == (None, None)

    def test_old_driver_fallbacks(self) -> None:
        """Memory v1 and the v2 process list are used when the driver lacks the newer calls."""
        nvml = FakeNvml()
        nvml.fail["nvmlDeviceGetMemoryInfo_v2"] = error("FunctionNotFound")
        nvml.fail["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVMLLibraryMismatchError("old")
        host = NvmlProbe(nvml=nvml).snapshot()
        assert host.gpus[0].memory_used_mib == 1024
        assert host.gpus[1].processes == (GpuProcess(77, None),)
        assert nvml.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 2

    def test_reinitialises_after_a_failure(self) -> None:
        """After an error NVML is shut down and initialised again on the next snapshot."""
        nvml = FakeNvml()
        probe = NvmlProbe(nvml=nvml)
        probe.snapshot()
        nvml.fail["nvmlDeviceGetCount"] = error("GpuIsLost")
        with pytest.raises(GpuLost):
            probe.snapshot()
        del nvml.fail["nvmlDeviceGetCount"]
        probe.snapshot()
        assert (nvml.calls["nvmlInit"], nvml.calls["nvmlShutdown"]) == (2, 1)

    @pytest.mark.parametrize(("raw", "text"), [(12040, "12.4"), (11080, "11.8"), (12100, "12.10")])
    def test_cuda_version_format(self, raw: int, text: str) -> None:
        """NVML's integer CUDA version is written major.minor."""
        assert format_cuda_version(raw) == text


UNAVAILABLE = {
    "LibraryNotFound",
    "DriverNotLoaded",
    "NoPermission",
    "NotFound",
    "GpuNotFound",
    "LibRmVersionMismatch",
    "FunctionNotFound",
    "Uninitialized",
    "OperatingSystem",
}
LOST = {
    "GpuIsLost",
    "Unknown",
    "ResetRequired",
    "IrqIssue",
    "CorruptedInforom",
    "InsufficientPower",
}


class TestErrorMapping:
    def test_every_pynvml_error_class_is_mapped(self) -> None:
        """Each NVMLError_* class of the installed pynvml has an explicit translation."""
        assert REAL_ERROR_CLASSES, "pynvml no longer generates NVMLError_* classes"
        unknown = {n.removeprefix("NVMLError_") for n in REAL_ERROR_CLASSES} - ERROR_CLASSES
        assert not unknown

    @pytest.mark.parametrize("name", [n.removeprefix("NVMLError_") for n in REAL_ERROR_CLASSES])
    def test_each_class_translates_at_the_boundary(self, name: str) -> None:
        """Raised from inside NVML, each class becomes the right schedctl error, chained."""
        nvml = FakeNvml()
        nvml.fail["nvmlInit"] = error(name)
        with pytest.raises(GpuError) as info:
            NvmlProbe(nvml=nvml).snapshot()
        expected: type[GpuError] = GpuError
        if name in UNAVAILABLE:
            expected = NvmlUnavailable
        elif name in LOST:
            expected = GpuLost
        assert type(info.value) is expected
        assert isinstance(info.value.__cause__, pynvml.NVMLError)

    def test_reasons_are_human(self) -> None:
        """The message says what is wrong, not just the NVML code."""
        nvml = FakeNvml()
        nvml.fail["nvmlInit"] = error("DriverNotLoaded")
        with pytest.raises(NvmlUnavailable, match="kernel driver is not loaded"):
            NvmlProbe(nvml=nvml).snapshot()
        nvml.fail["nvmlInit"] = error("GpuIsLost")
        with pytest.raises(GpuLost, match="Xid"):
            NvmlProbe(nvml=nvml).snapshot()

    def test_library_mismatch_is_unavailable(self) -> None:
        """pynvml's version-mismatch error (not an NVMLError) is also translated."""
        nvml = FakeNvml()
        nvml.fail["nvmlSystemGetDriverVersion"] = pynvml.NVMLLibraryMismatchError("too old")
        with pytest.raises(NvmlUnavailable, match="too old"):
            NvmlProbe(nvml=nvml).snapshot()


@pytest.mark.skipif(HAS_DRIVER, reason="an NVIDIA driver is installed here")
def test_real_pynvml_without_driver() -> None:
    """The real pynvml on a host without a driver raises NvmlUnavailable with the reason."""
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver on this host"):
        NvmlProbe().snapshot()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_DRIVER, reason="no NVIDIA driver on this host")
def test_real_nvml_on_a_gpu_host() -> None:
    """On a GPU host the real probe reads at least one GPU with a UUID and the versions."""
    host = NvmlProbe().snapshot()
    assert host.gpus and all(g.uuid.startswith(("GPU-", "MIG-")) for g in host.gpus)
    assert host.driver_version and host.cuda_version
