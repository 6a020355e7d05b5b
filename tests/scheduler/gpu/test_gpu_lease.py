"""Lease provenance for the run row and the leaked-process check after a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scheduler.gpu import FakeProbe, GpuPool, GpuProcess, Lease, leaked_processes, write_fake_gpus
from scheduler.store.engine import Store
from tests.scheduler.gpu.gpu_helpers import busy_gpu, fast_policy, gpu


def lease_gpu1(gpu_file: Path, store: Store, new_run: Callable[..., int]) -> Lease:
    """Lease GPU 1 (GPU 0 busy) to a fresh run, against driver 550 / CUDA 12.4."""
    write_fake_gpus(
        gpu_file,
        {"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": [busy_gpu(0), gpu(1)]},
    )
    return GpuPool(store, FakeProbe(gpu_file), fast_policy()).acquire(new_run(), "hourly", 1, 0, 1)


class TestProvenance:
    def test_provenance_fits_the_run_row(
        self, gpu_file: Path, store: Store, new_run: Callable[..., int]
    ) -> None:
        """provenance() is exactly the run columns: gpus list, driver and CUDA versions."""
        lease = lease_gpu1(gpu_file, store, new_run)
        store.update_run(lease.run_id, **lease.provenance())
        row = store.get_run(lease.run_id)
        assert list(row.gpus) == [{"index": 1, "uuid": "GPU-fake-1", "name": "Fake H100"}]
        assert (row.driver_version, row.cuda_version) == ("550.54.15", "12.4")

    def test_cuda_visible_devices_uses_uuids(
        self, gpu_file: Path, store: Store, new_run: Callable[..., int]
    ) -> None:
        """CUDA_VISIBLE_DEVICES names the leased GPU by UUID."""
        assert lease_gpu1(gpu_file, store, new_run).cuda_visible_devices() == "GPU-fake-1"


class TestLeakedProcesses:
    def test_clean_gpu_reports_nothing(
        self, gpu_file: Path, store: Store, new_run: Callable[..., int]
    ) -> None:
        """No process left on the leased GPU: nothing is reported (GPU 0's job is not ours)."""
        lease = lease_gpu1(gpu_file, store, new_run)
        assert leaked_processes(lease, FakeProbe(gpu_file), settle_s=0) == []

    def test_new_process_on_leased_gpu_is_reported(
        self, gpu_file: Path, store: Store, new_run: Callable[..., int]
    ) -> None:
        """A process that appeared on the leased GPU during the run and stayed is reported."""
        lease = lease_gpu1(gpu_file, store, new_run)
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1, used=2000, procs=((5150, 2000), (60, 10)))])
        leaked = leaked_processes(lease, FakeProbe(gpu_file), before_pids={60}, settle_s=0)
        assert leaked == [GpuProcess(5150, 2000)]

    def test_waits_for_processes_to_settle(
        self, gpu_file: Path, store: Store, new_run: Callable[..., int]
    ) -> None:
        """A process that disappears within settle_s is not a leak."""
        lease = lease_gpu1(gpu_file, store, new_run)
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1, procs=((5150, 2000),))])
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1)])

        assert leaked_processes(lease, FakeProbe(gpu_file), settle_s=5, sleep=sleep) == []
        assert slept == [0.25]

    def test_empty_lease_skips_the_probe(self, tmp_path: Path) -> None:
        """A run without GPUs has nothing to check and never reads NVML."""
        assert leaked_processes(Lease(1, "hourly"), FakeProbe(tmp_path / "absent.json")) == []
