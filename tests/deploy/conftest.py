"""Fixtures for the deploy tests: every metric name a fully populated daemon exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.config import Config
from scheduler.gpu import FakeProbe, write_fake_gpus
from scheduler.metrics import Metrics
from scheduler.store.engine import Store
from tests.deploy.promql import exported_names


@pytest.fixture
def exported(make_config: Callable[..., Config], tmp_path: Path) -> set[str]:
    """Names in a scrape of Metrics with GPUs, a lease, a torchrun comparison and alerts."""
    config = make_config(
        tiers={
            "hourly": {"schedule": "15 * * * *"},
            "weekly": {"schedule": "0 3 * * 0", "kind": "torchrun", "gpus": 1},
        },
        alerts={"webhooks": [{"name": "lab", "url": "http://127.0.0.1:9/hook"}]},
    )
    store = Store(config.db_path)
    gpus = tmp_path / "gpus.json"
    write_fake_gpus(gpus, [{"index": 0, "uuid": "GPU-0", "memory_total_mib": 1024}])
    metrics = Metrics(CollectorRegistry(), config, store, gpu_probe=FakeProbe(gpus))
    run_id = store.create_run(tier="weekly", trigger="schedule", outcome="running")
    assert run_id is not None
    store.acquire_leases(run_id, "weekly", [(0, "GPU-0")])
    table = [{"world_size": 2, "efficiency": 0.9}]
    store.finish_run(
        run_id, outcome="passed", duration_s=3.0, details={"comparison": {"table": table}}
    )
    return exported_names(generate_latest(metrics.registry).decode())
