"""``Metrics``: every schedctl collector on one injected registry, plus the event listener.

Where each value comes from:

- the store, at scrape time (:mod:`.state`, :mod:`.runs`): anything that must survive a restart
  or that another process (``schedctl run``) can change;
- the dispatcher's events (:meth:`Metrics.on_event`): fire lag and GPU wait, known only to the
  process that ran the slot;
- direct calls: :meth:`Metrics.alert_sent` from the alert delivery worker;
- the GPU probe and the live scheduler, at scrape time (:mod:`.gpus`, :mod:`.schedule`).
"""

from __future__ import annotations

import os
import platform
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from scheduler import __version__
from scheduler.config import AlertmanagerSink, Config, GitHubSink, SlackSink, WebhookSink
from scheduler.gpu.fake import ENV_VAR as FAKE_GPUS_ENV
from scheduler.kernel.events import Event, RunStarted
from scheduler.metrics.families import CounterTally, HistogramTally
from scheduler.metrics.runs import RunTally
from scheduler.metrics.schedule import NextFireSource, ScheduleCollector
from scheduler.metrics.slowest import SlowestTestsCollector
from scheduler.metrics.state import StoreStateCollector, TierSpec
from scheduler.store.engine import Store

if TYPE_CHECKING:  # the GPU parts are imported only when GPUs matter here (see build_metrics)
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily, Metric

    from scheduler.gpu import GpuProbe
    from scheduler.metrics.gpus import GpuCollector

__all__ = ["ALERT_OUTCOMES", "Metrics", "build_metrics"]

log = structlog.get_logger("schedctl.metrics")

FIRE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
GPU_WAIT_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
ALERT_OUTCOMES = ("sent", "retry", "dead")
"""As the alert worker reports them: ``sent`` delivered, ``retry`` a try failed and will be
retried, ``dead`` given up; anything else is counted as ``other``."""
GPU_PROBE_TIMEOUT_S = 3.0
"""A scrape waits at most this long for NVML (Prometheus' default scrape timeout is 10 s)."""


DiskFree = Callable[[Path], int]
"""Free bytes on the filesystem holding a path (injectable: tests pin it)."""


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


class _LiveCollector:
    """Values that exist only in this process: event-fed histograms, alert counts, build info."""

    def __init__(self, config: Config, version: str, disk_free: DiskFree) -> None:
        self._disk_free = disk_free
        self._version = version
        self._build_info: GaugeMetricFamily | None = None
        self._state_dir = config.state_dir
        self._state_min_free = config.state_min_free
        self.fire_lag = HistogramTally(
            "schedctl_fire_lag_seconds",
            "Delay between a cron slot and the scheduler firing it (daemon-fired runs only).",
            ("tier",),
            FIRE_LAG_BUCKETS,
        )
        self.gpu_wait = HistogramTally(
            "schedctl_gpu_wait_seconds",
            "Time runs of GPU tiers waited for their GPU lease before starting.",
            ("tier",),
            GPU_WAIT_BUCKETS,
        )
        self.alerts_sent = CounterTally(
            "schedctl_alerts_sent_total",
            "Alert delivery attempts by sink and result (sent, retry, dead).",
            ("sink", "outcome"),
        )
        self.alerts_sent.declare(
            (sink, outcome) for sink in _sink_names(config) for outcome in ALERT_OUTCOMES
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        return [
            self.fire_lag.family(),
            self.gpu_wait.family(),
            self.alerts_sent.family(),
            self._build_info_family(),
            *self._state_disk(),
        ]

    def _build_info_family(self) -> GaugeMetricFamily:
        if self._build_info is None:  # made once, at the first scrape: the same object after
            from prometheus_client.core import GaugeMetricFamily

            family = GaugeMetricFamily(
                "schedctl_build_info",
                "Always 1; the labels carry the schedctl and Python versions.",
                labels=["version", "python"],
            )
            family.add_metric([self._version, platform.python_version()], 1.0)
            self._build_info = family
        return self._build_info

    def _state_disk(self) -> list[Metric]:
        """Free bytes on the state filesystem and the ``state_min_free`` floor below which runs
        are refused, so an alert rule can fire before the refusals start."""
        from prometheus_client.core import GaugeMetricFamily

        floor = GaugeMetricFamily(
            "schedctl_state_min_free_bytes",
            "state_min_free: below this much free state disk, runs are refused (infra-error).",
        )
        floor.add_metric([], float(self._state_min_free))
        free = GaugeMetricFamily(
            "schedctl_state_free_bytes", "Free bytes on the filesystem holding state_dir."
        )
        try:
            free.add_metric([], float(self._disk_free(self._state_dir)))
        except OSError as exc:
            log.warning("metrics_state_disk_unreadable", error=str(exc))
        return [floor, free]


class Metrics:
    """The daemon's metrics; nothing is registered anywhere but ``registry``.

    Args:
        registry: where every collector registers (a fresh one per test); ``None`` makes a
            fresh one at the first use of :attr:`registry` -- the daemon's (``build_metrics``),
            so that a daemon nobody scrapes never imports prometheus_client.
        config: tiers (label sets, schedules, which tiers use GPUs) and alert sinks.
        store: the state store the gauges and run counters are read from.
        gpu_probe: polled at scrape time; ``None`` exports no GPU metrics.
        process_metrics: also register prometheus_client's ``process_*`` collector.
        disk_free: free bytes of the state filesystem, read at each scrape.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        config: Config,
        store: Store,
        *,
        gpu_probe: GpuProbe | None = None,
        process_metrics: bool = True,
        version: str | None = None,
        disk_free: DiskFree = disk_free,
    ) -> None:
        self._registry = registry
        self._registry_lock = threading.Lock()
        self._process_metrics = process_metrics
        self.store = store
        self._probe = gpu_probe
        self._gpu_tiers = frozenset(name for name, t in config.tiers.items() if t.gpus)
        self.runs = RunTally(store, list(config.tiers))
        self.state = StoreStateCollector(
            store, [TierSpec(name, tier.kind) for name, tier in config.tiers.items()]
        )
        self.schedule = ScheduleCollector(config)
        self.slowest = SlowestTestsCollector(store, list(config.tiers))
        self.live = _LiveCollector(config, version or __version__, disk_free)
        self.gpus: GpuCollector | None = None
        if gpu_probe is not None:
            from scheduler.gpu import lease_holders
            from scheduler.metrics.gpus import GpuCollector

            self.gpus = GpuCollector(
                gpu_probe,
                config.gpu,
                lambda: lease_holders(store),
                drains=store.drained_gpus,
                version=store.data_version,
            )
        if registry is not None:
            self._register(registry)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry every collector is on (made and filled at the first use if need be)."""
        with self._registry_lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry()
                self._register(registry)
                self._registry = registry
            return self._registry

    def collect(self) -> Iterable[Metric]:
        """Every family, as :meth:`CollectorRegistry.collect` yields them (the HTTP renderer)."""
        return self.registry.collect()

    def _register(self, registry: CollectorRegistry) -> None:
        collectors = (self.runs, self.state, self.slowest, self.schedule, self.live, self.gpus)
        for collector in collectors:
            if collector is not None:
                registry.register(collector)
        if self._process_metrics:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=registry)

    def on_event(self, event: Event) -> None:
        """Dispatcher listener: ``dispatcher.add_listener(metrics.on_event)``."""
        if not isinstance(event, RunStarted):
            return
        if event.fire_lag_s is not None:
            self.live.fire_lag.observe((event.tier,), max(0.0, event.fire_lag_s))
        if event.tier in self._gpu_tiers:
            self.live.gpu_wait.observe((event.tier,), max(0.0, event.gpu_wait_s))

    def alert_sent(self, sink: str, outcome: str) -> None:
        """Count one delivery attempt; the alert worker's ``on_result`` hook.

        ``outcome`` is one of :data:`ALERT_OUTCOMES`; others are counted as ``other`` so the
        label stays bounded.
        """
        if outcome not in ALERT_OUTCOMES:
            log.warning("metrics_unknown_alert_outcome", sink=sink, outcome=outcome)
            outcome = "other"
        self.live.alerts_sent.inc((sink, outcome))

    def attach_scheduler(self, next_fire: NextFireSource | None) -> None:
        """Take next fire times from the running scheduler (``daemon.next_fire_times``)."""
        self.schedule.attach(next_fire)

    def close(self) -> None:
        """Release the GPU probe's driver handles."""
        if self._probe is not None:
            self._probe.close()


def build_metrics(
    config: Config, store: Store, environ: Mapping[str, str] | None = None
) -> Metrics:
    """The daemon's :class:`Metrics` on a fresh registry, with a GPU probe when GPUs matter.

    A probe is built when a tier asks for GPUs or ``SCHEDCTL_FAKE_GPUS`` names a fake GPU file;
    it is the pool's backend choice, bounded by :data:`GPU_PROBE_TIMEOUT_S` per scrape.
    """
    environ = os.environ if environ is None else environ
    wants_gpus = any(t.gpus for t in config.tiers.values()) or bool(environ.get(FAKE_GPUS_ENV))
    probe: GpuProbe | None = None
    if wants_gpus:
        from scheduler.gpu import build_probe

        probe = build_probe(min(config.gpu.poll_timeout, GPU_PROBE_TIMEOUT_S), environ)
    return Metrics(None, config, store, gpu_probe=probe)


def _sink_names(config: Config) -> list[str]:
    alerts = config.alerts
    sinks: list[WebhookSink | SlackSink | GitHubSink | AlertmanagerSink] = [
        *alerts.webhooks,
        *alerts.slack,
        *alerts.github,
        *alerts.alertmanager,
    ]
    return sorted({sink.name for sink in sinks})
