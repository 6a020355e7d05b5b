"""The JSON-file probe, backend selection from the environment, and the timed wrapper."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scheduler.gpu import (
    FakeProbe,
    GpuProcess,
    HostGpuInfo,
    NvmlProbe,
    TimedProbe,
    build_probe,
    probe_from_env,
    write_fake_gpus,
)
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable
from tests.scheduler.gpu.gpu_helpers import FOREIGN_PID, busy_gpu, gpu


class TestFakeProbe:
    def test_reads_every_field(self, gpu_file: Path) -> None:
        """Each key of a GPU entry lands in the snapshot, processes included."""
        write_fake_gpus(gpu_file, [gpu(1), busy_gpu(0)])
        host = FakeProbe(gpu_file).snapshot()
        assert [g.index for g in host.gpus] == [0, 1]
        busy = host.gpus[0]
        assert (busy.uuid, busy.name, busy.memory_total_mib) == ("GPU-fake-0", "Fake H100", 81559)
        assert (busy.memory_used_mib, busy.utilization_pct, busy.temperature_c) == (8000, 97, 30)
        assert busy.processes == (GpuProcess(FOREIGN_PID, 8000),)
        assert (host.driver_version, host.cuda_version) == ("fake", "fake")

    def test_rereads_file_on_every_snapshot(self, gpu_file: Path, probe: FakeProbe) -> None:
        """A rewritten file shows up in the next snapshot."""
        assert probe.snapshot().gpus[0].processes == ()
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1)])
        assert probe.snapshot().gpus[0].processes == (GpuProcess(FOREIGN_PID, 8000),)

    def test_object_form_sets_versions(self, gpu_file: Path) -> None:
        """The object form carries driver and CUDA versions."""
        write_fake_gpus(
            gpu_file, {"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": [gpu(0)]}
        )
        host = FakeProbe(gpu_file).snapshot()
        assert (host.driver_version, host.cuda_version, len(host.gpus)) == ("550.54.15", "12.4", 1)

    def test_simulated_failures(self, gpu_file: Path) -> None:
        """``unavailable`` and ``lost`` keys raise the matching errors with their text."""
        write_fake_gpus(gpu_file, {"unavailable": "no driver in this demo"})
        with pytest.raises(NvmlUnavailable, match="no driver in this demo"):
            FakeProbe(gpu_file).snapshot()
        write_fake_gpus(gpu_file, {"lost": "Xid 79", "gpus": [gpu(0)]})
        with pytest.raises(GpuLost, match="Xid 79"):
            FakeProbe(gpu_file).snapshot()

    def test_missing_file_is_unavailable(self, tmp_path: Path) -> None:
        """A fake file that does not exist means no GPUs, with the path in the reason."""
        with pytest.raises(NvmlUnavailable, match=r"nope\.json does not exist"):
            FakeProbe(tmp_path / "nope.json").snapshot()

    @pytest.mark.parametrize(
        "text",
        [
            "{not json",
            '"a string"',
            '[{"index": 0}]',
            '[{"index": "x", "uuid": "u", "memory_total_mib": 1}]',
        ],
    )
    def test_malformed_file_is_a_transient_gpu_error(self, gpu_file: Path, text: str) -> None:
        """Bad JSON or bad entries raise a plain GpuError naming the file."""
        gpu_file.write_text(text)
        with pytest.raises(GpuError, match=r"gpus\.json") as info:
            FakeProbe(gpu_file).snapshot()
        assert type(info.value) is GpuError


class TestProbeFromEnv:
    def test_fake_when_variable_set(self, gpu_file: Path) -> None:
        """SCHEDCTL_FAKE_GPUS selects the fake backend on that file."""
        probe = probe_from_env({"SCHEDCTL_FAKE_GPUS": str(gpu_file)})
        assert isinstance(probe, FakeProbe)
        assert probe.path == gpu_file

    def test_nvml_otherwise(self) -> None:
        """Without the variable the real NVML backend is used."""
        assert isinstance(probe_from_env({}), NvmlProbe)

    def test_build_probe_wraps_with_timeout(self, gpu_file: Path) -> None:
        """build_probe bounds the chosen backend by the poll timeout."""
        probe = build_probe(3.0, {"SCHEDCTL_FAKE_GPUS": str(gpu_file)})
        assert probe.timeout_s == 3.0
        assert isinstance(probe.inner, FakeProbe)
        assert len(probe.snapshot().gpus) == 2


class _HangingProbe:
    """A probe whose snapshot blocks until released, like a wedged driver."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.closed = False

    def snapshot(self) -> HostGpuInfo:
        self.calls += 1
        self.release.wait(10)
        return HostGpuInfo("1", "12.4", ())

    def close(self) -> None:
        self.closed = True


class TestTimedProbe:
    def test_times_out_on_a_hung_call(self) -> None:
        """A snapshot that hangs raises GpuError after the timeout instead of blocking."""
        inner = _HangingProbe()
        started = time.monotonic()
        with pytest.raises(GpuError, match=r"timed out after 0\.2s"):
            TimedProbe(inner, 0.2).snapshot()
        assert time.monotonic() - started < 2
        inner.release.set()

    def test_does_not_pile_up_calls_behind_a_hung_one(self) -> None:
        """Later snapshots wait on the hung call rather than starting new ones, then recover."""
        inner = _HangingProbe()
        timed = TimedProbe(inner, 0.1)
        for _ in range(3):
            with pytest.raises(GpuError):
                timed.snapshot()
        assert inner.calls == 1
        timed.close()
        assert not inner.closed, "closing must not touch a probe stuck in a call"
        inner.release.set()
        assert timed.snapshot().driver_version == "1"

    def test_passes_results_and_errors_through(self, gpu_file: Path) -> None:
        """A prompt probe's result and its own errors come back unchanged."""
        assert len(TimedProbe(FakeProbe(gpu_file), 2).snapshot().gpus) == 2
        write_fake_gpus(gpu_file, {"unavailable": "gone"})
        with pytest.raises(NvmlUnavailable, match="gone"):
            TimedProbe(FakeProbe(gpu_file), 2).snapshot()
