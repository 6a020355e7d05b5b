"""The event listener and direct calls: fire lag, GPU wait, alert results, a real run."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import generate_latest

from runners.fake import FakeBehaviour
from scheduler.config import Config
from scheduler.kernel.events import RunFinished, RunStarted
from scheduler.kernel.outcome import Outcome
from scheduler.metrics import ALERT_OUTCOMES
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import Store
from tests.scheduler.conftest import FakeDispatcher
from tests.scheduler.metrics.conftest import T0, metrics_for


class TestEvents:
    def test_fire_lag_and_gpu_wait_from_run_started(self, config: Config, store: Store) -> None:
        """RunStarted feeds fire lag (scheduled runs) and GPU wait (GPU tiers only)."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        metrics.on_event(RunStarted(1, "hourly", "schedule", Path("/r"), 0.0, 0.3))
        metrics.on_event(RunStarted(2, "hourly", "manual", Path("/r"), 0.0, None))
        metrics.on_event(RunStarted(3, "weekly", "schedule", Path("/r"), 42.0, 0.1))
        assert get("schedctl_fire_lag_seconds_count", {"tier": "hourly"}) == 1
        assert get("schedctl_fire_lag_seconds_bucket", {"tier": "hourly", "le": "0.25"}) == 0
        assert get("schedctl_fire_lag_seconds_bucket", {"tier": "hourly", "le": "0.5"}) == 1
        assert get("schedctl_gpu_wait_seconds_count", {"tier": "hourly"}) is None
        assert get("schedctl_gpu_wait_seconds_sum", {"tier": "weekly"}) == 42.0

    def test_other_events_are_ignored(self, config: Config, store: Store) -> None:
        """RunFinished carries nothing the store does not already give; it changes no metric."""
        metrics = metrics_for(config, store)
        before = generate_latest(metrics.registry)
        event = RunFinished(1, "hourly", "manual", Outcome.PASSED, 1.0, {}, T0, None)
        metrics.on_event(event)
        assert generate_latest(metrics.registry) == before

    def test_alert_sent_counts_by_sink_and_outcome(self, config: Config, store: Store) -> None:
        """alert_sent counts per sink; unknown outcomes are counted as other (bounded labels)."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        assert get("schedctl_alerts_sent_total", {"sink": "lab", "outcome": "sent"}) == 0
        metrics.alert_sent("lab", "sent")
        metrics.alert_sent("lab", "exploded")
        assert get("schedctl_alerts_sent_total", {"sink": "lab", "outcome": "sent"}) == 1
        assert get("schedctl_alerts_sent_total", {"sink": "lab", "outcome": "other"}) == 1
        assert get("schedctl_alerts_sent_total", {"sink": "lab", "outcome": "dead"}) == 0
        assert set(ALERT_OUTCOMES) == {"sent", "retry", "dead"}

    def test_scheduled_run_through_the_dispatcher(
        self, config: Config, store: Store, fake_dispatcher: FakeDispatcher
    ) -> None:
        """A real dispatcher run with the fake runner shows up in counters and the fire lag."""
        metrics = metrics_for(config, store)
        tests = [("t::a", "passed"), ("t::b", "failed")]
        behaviour = FakeBehaviour(exit_code=1, tests=tests)
        dispatcher = fake_dispatcher(config, behaviour, store=store, listeners=[metrics.on_event])
        request = RunRequest("hourly", trigger="schedule", slot=T0, fire_lag_s=1.5)
        record = dispatcher.run(request, threading.Event())
        assert record.outcome is Outcome.FAILED
        get = metrics.registry.get_sample_value
        labels = {"tier": "hourly", "outcome": "failed", "trigger": "schedule"}
        assert get("schedctl_runs_total", labels) == 1
        assert get("schedctl_tests_total", {"tier": "hourly", "outcome": "failed"}) == 1
        assert get("schedctl_fire_lag_seconds_sum", {"tier": "hourly"}) == 1.5
        assert get("schedctl_tier_consecutive_failures", {"tier": "hourly"}) == 1
