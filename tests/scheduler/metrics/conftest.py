"""Collectors on an injected registry: a config with three tiers and run rows as the store
keeps them (``store`` is the root fixture: the same file as ``config.db_path``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from scheduler.config import Config
from scheduler.metrics import Metrics
from scheduler.store.engine import Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)

GPUS = [
    {"index": 0, "uuid": "GPU-0", "memory_total_mib": 81559, "memory_used_mib": 0,
     "utilization_pct": 0, "temperature_c": 35},
    {"index": 1, "uuid": "GPU-1", "memory_total_mib": 81559, "memory_used_mib": 40000,
     "utilization_pct": 93, "temperature_c": 71,
     "processes": [{"pid": 4242, "used_memory_mib": 40000}]},
]  # fmt: skip


def finished(store: Store, tier: str, outcome: str, at: datetime, **extra: Any) -> int:
    """Insert a finished run row the way the dispatcher leaves one."""
    run_id = store.create_run(
        tier=tier, trigger=extra.pop("trigger", "manual"), queued_at=at, outcome=outcome,
        finished_at=at, **extra,
    )  # fmt: skip
    assert run_id is not None
    return run_id


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(
        tiers={
            "hourly": {"schedule": "15 * * * *", "markers": "hourly"},
            "daily": {"schedule": "30 2 * * *"},
            "weekly": {"schedule": "0 3 * * 0", "kind": "torchrun", "gpus": "all"},
        },
        alerts={"webhooks": [{"name": "lab", "url": "http://127.0.0.1:9/hook"}]},
    )


PINNED_FREE_BYTES = 10**12
"""The state disk's free bytes as the tests see them: the real value moves with the machine."""


def metrics_for(config: Config, store: Store, probe: Any = None) -> Metrics:
    return Metrics(
        CollectorRegistry(), config, store, gpu_probe=probe, process_metrics=False,
        disk_free=lambda _path: PINNED_FREE_BYTES,
    )  # fmt: skip
