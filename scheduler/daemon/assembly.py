"""Assemble a dispatcher from config: runners, git source, GPU pool, listeners."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from runners.registry import RunnerFactory, instance_of
from scheduler.kernel.errors import InfraError
from scheduler.kernel.events import Listener
from scheduler.run.dispatch import Dispatcher
from scheduler.run.protocols import GpuPoolLike, RunStore, SourceLike

# Alerting (requests), metrics (prometheus_client), the image catalog and APScheduler are
# imported where they are used: `schedctl run` needs none of them.
if TYPE_CHECKING:
    from runners.docker_prewarm import DockerPrewarm
    from runners.prewarm import Prewarm
    from scheduler.config import Config
    from scheduler.daemon.scheduler import Service
    from scheduler.images.catalog import ImageRemover
    from scheduler.store.engine import Store


def build_source(config: Config) -> SourceLike:
    from scheduler.source import Source

    return Source(config.project, config.state_dir)


def _needs_gpus(config: Config) -> bool:
    return any(tier.gpus for tier in config.tiers.values())


def build_gpu_pool(config: Config, store: Store) -> GpuPoolLike | None:
    """The GPU pool, only when a tier needs GPUs (NVML is never loaded otherwise)."""
    if not _needs_gpus(config):
        return None
    from scheduler.gpu import build_pool

    return build_pool(config, store)


def build_dispatcher(
    config: Config,
    store: RunStore,
    *,
    runners: RunnerFactory | None = None,
    listeners: Iterable[Listener] = (),
    prewarm: Prewarm | DockerPrewarm | None = None,
) -> Dispatcher:
    """``prewarm``: a launcher or container ``schedctl run`` started early (see
    :mod:`runners.prewarm`, :mod:`runners.docker_prewarm`)."""
    # runners.prewarm is the local runner's (imported already); the docker prewarm's module is
    # imported only by a process that made one.
    from runners.prewarm import Prewarm

    local: Prewarm | None = None
    docker: DockerPrewarm | None = None
    if isinstance(prewarm, Prewarm):
        local = prewarm
    elif prewarm is not None:
        docker = prewarm
    factory = runners or RunnerFactory(
        instance=instance_of(config.state_dir),
        docker_user=f"{config.docker.uid}:{config.docker.gid}",
        local_user=config.local.run_as(),
        local_prewarm=local,
        docker_prewarm=docker,
    )
    dispatcher = Dispatcher(
        config,
        store,
        factory,
        source=build_source(config),
        # GPU leases and image builds are beyond a run's lifecycle: the full store does them
        # (``schedctl run`` on the sqlite3 writer opens it only when the config needs them).
        gpu_pool=build_gpu_pool(config, store.full_store()) if _needs_gpus(config) else None,
        listeners=listeners,
        host=config.host_name,
    )
    if config.images:
        from scheduler.images.catalog import ImageCatalog

        dispatcher.add_listener(
            ImageCatalog(config, store.full_store(), lambda: image_remover(factory))
        )
    return dispatcher


def image_remover(runners: RunnerFactory) -> ImageRemover | None:
    """The docker runner's image builder (it removes old images), if the engine is there."""
    from scheduler.run.kinds.build import BuildsImages

    try:
        runner = runners.get("docker")
    except (InfraError, ImportError):
        return None
    return runner.image_builder() if isinstance(runner, BuildsImages) else None  # type: ignore[return-value]


def host_watch(config: Config, store: Store, dispatcher: Dispatcher) -> Service:
    """This daemon's heartbeat in a shared store, and the sweep for dead daemons' runs."""
    from scheduler.daemon.hosts import HostWatch

    return HostWatch(
        store,
        dispatcher.ledger,
        host=dispatcher.host,
        identity=dispatcher.identity,
        pid=os.getpid(),
        interval_s=config.store.heartbeat,
        timeout_s=config.store.host_timeout,
    )


def build_services(config: Config, store: Store, dispatcher: Dispatcher) -> list[Service]:
    """The daemon's long-lived parts, each from its own module; listeners attach here too."""
    from scheduler.api import ApiService
    from scheduler.daemon.retention import Pruner, RetentionService
    from scheduler.metrics import MetricsService, build_metrics

    services: list[Service] = [
        ApiService(config),
        RetentionService(Pruner(config, store, dispatcher.source)),
    ]
    if config.store.is_postgres:
        services.append(host_watch(config, store, dispatcher))
    metrics = build_metrics(config, store)
    dispatcher.add_listener(metrics.on_event)
    if config.daemon.metrics_address is not None:
        services.append(MetricsService(metrics, config.daemon.metrics_address))
    if config.daemon.web_address is not None:
        from scheduler.web import WebService

        services.append(WebService(config, store))
    if not alert_sinks_configured(config):
        return services  # requests and the sinks stay unimported: a leaner idle daemon
    from scheduler.alerts import build_alerting
    from scheduler.alerts.catchup import CatchUp

    alerting = build_alerting(
        config, store, changes=getattr(dispatcher.source, "changes_between", None)
    )
    if alerting is not None:
        dispatcher.add_listener(alerting.recorder)
        if alerting.expiry is not None:
            dispatcher.add_listener(alerting.expiry)
        if alerting.review is not None:
            dispatcher.add_listener(alerting.review)
        alerting.worker.on_result = metrics.alert_sent
        services.append(alerting.worker)
        services.append(CatchUp(alerting.recorder))
    return services


def alert_sinks_configured(config: Config) -> bool:
    """Whether any alert sink is configured (``build_alerting`` builds nothing otherwise)."""
    alerts = config.alerts
    return bool(alerts.webhooks or alerts.slack or alerts.github or alerts.alertmanager)
