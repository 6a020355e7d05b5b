"""``schedctl gpus [--json]`` with the fake backend and with the real, driverless NVML."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from scheduler.cli.gpus import gpus_command
from scheduler.config import Config, config_from_mapping
from scheduler.gpu import write_fake_gpus
from scheduler.store.engine import Store
from tests.scheduler.gpu.gpu_helpers import FOREIGN_PID, busy_gpu, gpu


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A minimal configuration with default GPU policy."""
    return config_from_mapping({"project": {"path": str(tmp_path)}, "tiers": {"hourly": {}}})


def invoke(config: Config, store: Store | None, *args: str, fake: Path | None = None) -> Result:
    """Run the command as the lead's CLI group would, with ``ctx.obj`` carrying config and store."""
    env: dict[str, Any] = {"SCHEDCTL_FAKE_GPUS": str(fake) if fake else None}
    app = SimpleNamespace(config=config, store=store)
    return CliRunner().invoke(gpus_command, list(args), obj=app, env=env)


def _no_driver() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return True
    return False


class TestWithFake:
    def test_json_has_readings_verdicts_and_leases(
        self, config: Config, store: Store, gpu_file: Path
    ) -> None:
        """--json lists each GPU with its verdict, reasons and lease holder, plus versions."""
        write_fake_gpus(
            gpu_file,
            {"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": [busy_gpu(0), gpu(1)]},
        )
        run_id = store.create_run(tier="daily", trigger="manual", outcome="running")
        assert run_id is not None and store.acquire_leases(run_id, "daily", [(1, "GPU-fake-1")])
        result = invoke(config, store, "--json", fake=gpu_file)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert (report["driver_version"], report["cuda_version"], report["reason"]) == (
            "550.54.15",
            "12.4",
            None,
        )
        first, second = report["gpus"]
        assert first["free"] is False and first["lease"] is None
        assert first["reasons"][0] == f"foreign process pid {FOREIGN_PID} (8000 MiB)"
        assert first["processes"] == [{"pid": FOREIGN_PID, "used_memory_mib": 8000}]
        assert second["lease"] == {"run_id": run_id, "tier": "daily"}
        assert second["reasons"] == [f"leased to run {run_id} (daily)"]
        assert {
            "index",
            "uuid",
            "name",
            "memory_total_mib",
            "memory_used_mib",
            "utilization_pct",
            "temperature_c",
        } <= set(second)

    def test_table(self, config: Config, store: Store, gpu_file: Path) -> None:
        """The table shows free and busy GPUs with their reasons."""
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1)])
        result = invoke(config, store, fake=gpu_file)
        assert result.exit_code == 0, result.output
        assert "free" in result.output and "busy" in result.output
        assert f"gpu0 GPU-fake-0: foreign process pid {FOREIGN_PID} (8000 MiB); " in result.output
        assert "gpu1 GPU-fake-1: free" in result.output

    def test_lost_gpu_exits_1_with_reason(self, config: Config, gpu_file: Path) -> None:
        """A lost GPU is reported without a traceback and exits 1."""
        write_fake_gpus(gpu_file, {"lost": "Xid 79 on gpu0"})
        result = invoke(config, None, "--json", fake=gpu_file)
        assert result.exit_code == 1
        assert "Xid 79" in json.loads(result.output)["reason"]


@pytest.mark.skipif(not _no_driver(), reason="an NVIDIA driver is installed here")
class TestWithoutDriver:
    def test_json_says_why(self, config: Config, store: Store) -> None:
        """No driver: exit 0, an empty list and the reason, no traceback."""
        result = invoke(config, store, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["gpus"] == [] and "no NVIDIA driver on this host" in report["reason"]
        assert result.exception is None

    def test_table_says_why(self, config: Config, store: Store) -> None:
        """No driver: a one-line explanation instead of a table."""
        result = invoke(config, store)
        assert result.exit_code == 0
        assert result.output.startswith("no GPUs: NVML unavailable")
