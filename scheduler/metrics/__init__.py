"""Prometheus metrics for schedctl: collectors on an injected registry, and their HTTP endpoint.

Nothing registers at import time. The daemon builds one registry in ``build_services``::

    metrics = build_metrics(config, store)          # its registry is made at the first scrape
    dispatcher.add_listener(metrics.on_event)       # fire lag, GPU wait
    services.append(MetricsService(metrics, config.daemon.metrics_address))
    alerting.worker.on_result = metrics.alert_sent  # outcome: sent, retry or dead

Tests build ``Metrics(CollectorRegistry(), config, store, gpu_probe=FakeProbe(...),
process_metrics=False)`` and read values with ``registry.get_sample_value(name, labels)``.

Modules: :mod:`.families` (labelled tallies), :mod:`.runs` (run counters from the store's rows),
:mod:`.state` (gauges from the store), :mod:`.slowest` (top 20 slowest tests per tier),
:mod:`.schedule` (next fire, period), :mod:`.gpus`
(probe at scrape time), :mod:`.recorder` (:class:`Metrics`), :mod:`.server` (HTTP service).
"""

from scheduler.metrics.recorder import ALERT_OUTCOMES, Metrics, build_metrics
from scheduler.metrics.server import (
    MetricsServer,
    MetricsService,
    Renderer,
    parse_address,
    readiness,
    store_writable,
)

__all__ = [
    "ALERT_OUTCOMES",
    "Metrics",
    "MetricsServer",
    "MetricsService",
    "Renderer",
    "build_metrics",
    "parse_address",
    "readiness",
    "store_writable",
]
