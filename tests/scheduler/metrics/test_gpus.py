"""Per-GPU gauges from the probe at scrape time, and what a failing probe yields."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from scheduler.config import Config
from scheduler.gpu import FakeProbe, HostGpuInfo, write_fake_gpus
from scheduler.kernel.errors import GpuError
from scheduler.metrics import build_metrics
from scheduler.store.engine import Store
from tests.scheduler.metrics.conftest import GPUS, metrics_for


class CountingProbe:
    """A probe that counts snapshots and can be told to fail."""

    def __init__(self, inner: FakeProbe) -> None:
        self.inner = inner
        self.calls = 0
        self.fail = False

    def snapshot(self) -> HostGpuInfo:
        self.calls += 1
        if self.fail:
            raise GpuError("NVML call timed out after 3s (driver hung?)")
        return self.inner.snapshot()

    def close(self) -> None:
        pass


class TestGpus:
    @pytest.fixture
    def probe(self, tmp_path: Path) -> CountingProbe:
        write_fake_gpus(tmp_path / "gpus.json", GPUS)
        return CountingProbe(FakeProbe(tmp_path / "gpus.json"))

    def test_per_gpu_values_and_availability(
        self, config: Config, store: Store, probe: CountingProbe
    ) -> None:
        """Memory, utilisation, temperature per GPU; a GPU with a foreign process is busy."""
        get = metrics_for(config, store, probe).registry.get_sample_value
        gpu0, gpu1 = {"gpu": "0", "uuid": "GPU-0"}, {"gpu": "1", "uuid": "GPU-1"}
        assert get("schedctl_gpu_memory_total_bytes", gpu0) == 81559 * 2**20
        assert get("schedctl_gpu_memory_used_bytes", gpu1) == 40000 * 2**20
        assert get("schedctl_gpu_utilization_ratio", gpu1) == 0.93
        assert get("schedctl_gpu_temperature_celsius", gpu1) == 71
        assert get("schedctl_gpu_available", gpu0) == 1
        assert get("schedctl_gpu_available", gpu1) == 0
        assert get("schedctl_gpu_processes", gpu1) == 1
        assert get("schedctl_gpu_probe_up") == 1

    def test_leased_gpu_is_not_available(
        self, config: Config, store: Store, probe: CountingProbe
    ) -> None:
        """A GPU leased in the store is unavailable even when the driver reports it idle."""
        get = metrics_for(config, store, probe).registry.get_sample_value
        run_id = store.create_run(tier="weekly", trigger="schedule", outcome="running")
        assert run_id is not None
        store.acquire_leases(run_id, "weekly", [(0, "GPU-0")])
        assert get("schedctl_gpu_available", {"gpu": "0", "uuid": "GPU-0"}) == 0

    def test_leases_and_drains_are_read_again_once_the_store_changed(
        self, config: Config, store: Store, probe: CountingProbe
    ) -> None:
        """Scrapes of an unchanged store reuse the leases and drains read before (the probe is
        still polled every time); a lease and a drain written since show at the next scrape."""
        get = metrics_for(config, store, probe).registry.get_sample_value
        gpu0 = {"gpu": "0", "uuid": "GPU-0"}
        assert get("schedctl_gpu_available", gpu0) == 1
        assert get("schedctl_gpu_available", gpu0) == 1
        assert probe.calls == 2
        run_id = store.create_run(tier="weekly", trigger="schedule", outcome="running")
        assert run_id is not None
        store.acquire_leases(run_id, "weekly", [(0, "GPU-0")])
        assert get("schedctl_gpu_available", gpu0) == 0
        assert store.drain_gpu("GPU-1", 1, "xid-79", "fell off the bus", clears=False)
        drained = {"gpu": "1", "uuid": "GPU-1", "reason": "xid-79"}
        assert get("schedctl_gpu_drained", drained) == 1

    def test_registration_never_polls_and_failure_yields_no_gpu_samples(
        self, config: Config, store: Store, probe: CountingProbe
    ) -> None:
        """Registering does not call NVML; a failing poll gives probe_up 0 and no GPU samples."""
        metrics = metrics_for(config, store, probe)
        assert probe.calls == 0
        probe.fail = True
        text = generate_latest(metrics.registry).decode()
        assert probe.calls == 1
        assert "schedctl_gpu_probe_up 0.0" in text
        assert "schedctl_gpu_memory_used_bytes{" not in text
        assert "schedctl_runs_total{" in text

    def test_build_metrics_uses_the_fake_gpu_file_from_the_environment(
        self, config: Config, store: Store, tmp_path: Path
    ) -> None:
        """build_metrics picks the probe backend like the pool (SCHEDCTL_FAKE_GPUS)."""
        write_fake_gpus(tmp_path / "gpus.json", GPUS)
        metrics = build_metrics(config, store, {"SCHEDCTL_FAKE_GPUS": str(tmp_path / "gpus.json")})
        try:
            get = metrics.registry.get_sample_value
            assert get("schedctl_gpu_available", {"gpu": "0", "uuid": "GPU-0"}) == 1
            assert get("process_start_time_seconds") is not None
        finally:
            metrics.close()
