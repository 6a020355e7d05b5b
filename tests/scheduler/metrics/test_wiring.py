"""How the daemon's services wire the metrics endpoint and the alert counter."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher, build_services
from scheduler.metrics import MetricsService
from scheduler.store.engine import Store


class TestWiring:
    def test_build_services_serves_metrics_and_counts_alert_deliveries(
        self, make_config: Callable[..., Config]
    ) -> None:
        """The daemon's services include the metrics endpoint; alert results feed its counter."""
        config = make_config(
            daemon={"metrics_address": "127.0.0.1:0"},
            alerts={"webhooks": [{"name": "lab", "url": "http://127.0.0.1:9/hook"}]},
        )
        store = Store(config.db_path)
        services = build_services(config, store, build_dispatcher(config, store))
        service = next(s for s in services if isinstance(s, MetricsService))
        worker = next(s for s in services if hasattr(s, "on_result"))
        worker.on_result("lab", "sent")
        labels = {"sink": "lab", "outcome": "sent"}
        assert service.metrics.registry.get_sample_value("schedctl_alerts_sent_total", labels) == 1

    def test_metrics_address_null_serves_nothing(self, make_config: Callable[..., Config]) -> None:
        """daemon.metrics_address: null leaves the endpoint out."""
        config = make_config(daemon={"metrics_address": None, "web_address": None})
        store = Store(config.db_path)
        services = build_services(config, store, build_dispatcher(config, store))
        assert not any(isinstance(s, MetricsService) for s in services)
