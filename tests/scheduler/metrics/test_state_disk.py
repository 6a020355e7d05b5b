"""The state disk as a metric: free bytes and the state_min_free floor (issue 20, finding 3)."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from scheduler.config import Config
from scheduler.metrics import Metrics
from scheduler.store.engine import Store


def test_state_free_bytes_and_floor_are_exported(make_config: Callable[..., Config]) -> None:
    """Both gauges exist; the free figure is the state filesystem's, the floor the config's."""
    config = make_config(state_min_free="16t")
    store = Store(config.db_path)
    metrics = Metrics(CollectorRegistry(), config, store, process_metrics=False)  # the real disk
    get = metrics.registry.get_sample_value
    assert get("schedctl_state_min_free_bytes") == 16 * 1024**4
    free = get("schedctl_state_free_bytes")
    assert free is not None
    actual = shutil.disk_usage(config.state_dir).free
    assert abs(free - actual) < 64 * 1024**2  # other writers on this disk move it a little
    assert free < 16 * 1024**4  # i.e. below the floor: an alert rule free < floor would fire
