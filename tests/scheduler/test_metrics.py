"""Collectors on an injected registry: run counters and gauges from the store, events, GPUs."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from runners.fake import FakeBehaviour, FakeRunner, always
from runners.registry import RunnerFactory
from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher, build_services
from scheduler.gpu import FakeProbe, HostGpuInfo, write_fake_gpus
from scheduler.kernel.errors import GpuError
from scheduler.kernel.events import RunFinished, RunStarted
from scheduler.kernel.outcome import Outcome
from scheduler.metrics import ALERT_OUTCOMES, Metrics, MetricsService, build_metrics
from scheduler.metrics.families import CounterTally, HistogramTally
from scheduler.metrics.state import RECENT_WINDOW, scaling_efficiency
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store.engine import Store, alerts_outbox

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


@pytest.fixture
def store(config: Config) -> Store:
    return Store(config.db_path)


def metrics_for(config: Config, store: Store, probe: Any = None) -> Metrics:
    return Metrics(CollectorRegistry(), config, store, gpu_probe=probe, process_metrics=False)


class TestTallies:
    def test_histogram_buckets_are_cumulative_with_sum(self) -> None:
        """Observations land in the first bucket whose bound is >= the value; +Inf counts all."""
        hist = HistogramTally("x_seconds", "doc", ("tier",), [1, 10])
        for value in (0.5, 1.0, 5, 50):
            hist.observe(("a",), value)
        registry = CollectorRegistry()
        registry.register(type("C", (), {"collect": lambda self: [hist.family()]})())
        get = registry.get_sample_value
        assert get("x_seconds_bucket", {"tier": "a", "le": "1.0"}) == 2
        assert get("x_seconds_bucket", {"tier": "a", "le": "10.0"}) == 3
        assert get("x_seconds_bucket", {"tier": "a", "le": "+Inf"}) == 4
        assert get("x_seconds_count", {"tier": "a"}) == 4
        assert get("x_seconds_sum", {"tier": "a"}) == 56.5

    def test_counter_rejects_bad_names_labels_and_decrements(self) -> None:
        """Counters end in _total, take exactly their label names and never go down."""
        with pytest.raises(ValueError, match="_total"):
            CounterTally("runs", "doc", ())
        counter = CounterTally("runs_total", "doc", ("tier",))
        with pytest.raises(ValueError, match="expected labels"):
            counter.inc(("a", "b"))
        with pytest.raises(ValueError, match="only go up"):
            counter.inc(("a",), -1)


class TestRunCounters:
    def test_failing_and_passing_run_counted_by_outcome_with_timestamps(
        self, config: Config, store: Store
    ) -> None:
        """A failed and a passed run show up as counts, test counts, timestamps and the streak."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        finished(store, "hourly", "failed", T0, counts={"passed": 3, "failed": 1}, duration_s=20.0)
        later = T0 + timedelta(minutes=5)
        finished(store, "hourly", "passed", later, counts={"passed": 4}, duration_s=4.0)
        labels = {"tier": "hourly", "trigger": "manual"}
        assert get("schedctl_runs_total", {**labels, "outcome": "failed"}) == 1
        assert get("schedctl_runs_total", {**labels, "outcome": "passed"}) == 1
        assert get("schedctl_tests_total", {"tier": "hourly", "outcome": "passed"}) == 7
        assert get("schedctl_tests_total", {"tier": "hourly", "outcome": "failed"}) == 1
        assert get("schedctl_run_duration_seconds_count", {"tier": "hourly"}) == 2
        assert get("schedctl_run_duration_seconds_sum", {"tier": "hourly"}) == 24.0
        assert get("schedctl_run_duration_seconds_bucket", {"tier": "hourly", "le": "5.0"}) == 1
        last = {"tier": "hourly"}
        assert get("schedctl_tier_last_run_timestamp_seconds", last) == later.timestamp()
        assert get("schedctl_tier_last_success_timestamp_seconds", last) == later.timestamp()
        assert get("schedctl_tier_consecutive_failures", last) == 0
        assert get("schedctl_tier_last_outcome", {**last, "outcome": "passed"}) == 1

    def test_counters_start_at_zero_for_every_tier_and_skip_older_rows(
        self, config: Config, store: Store
    ) -> None:
        """Rows final before start-up are not counted; every tier's label sets exist as 0."""
        finished(store, "daily", "failed", T0)
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        labels = {"tier": "daily", "outcome": "failed", "trigger": "manual"}
        assert get("schedctl_runs_total", labels) == 0
        assert get("schedctl_runs_total", {**labels, "trigger": "schedule", "tier": "weekly"}) == 0
        assert get("schedctl_missed_slots_total", {"tier": "hourly"}) == 0
        assert get("schedctl_tier_consecutive_failures", {"tier": "daily"}) == 1

    def test_run_active_at_start_is_counted_when_it_finishes(
        self, config: Config, store: Store
    ) -> None:
        """A run still running when the tally starts is counted once it reaches its outcome."""
        run_id = store.create_run(tier="daily", trigger="schedule", outcome="running")
        assert run_id is not None
        finished(store, "daily", "passed", T0, trigger="schedule")
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        labels = {"tier": "daily", "trigger": "schedule"}
        assert get("schedctl_runs_in_progress", {"tier": "daily"}) == 1
        store.finish_run(run_id, outcome="interrupted")
        assert get("schedctl_runs_total", {**labels, "outcome": "interrupted"}) == 1
        # A second scrape does not count it again.
        assert get("schedctl_runs_total", {**labels, "outcome": "interrupted"}) == 1
        assert get("schedctl_runs_total", {**labels, "outcome": "passed"}) == 0
        assert get("schedctl_runs_in_progress", {"tier": "daily"}) == 0

    def test_missed_and_skipped_slots_count_but_have_no_duration_or_verdict(
        self, config: Config, store: Store
    ) -> None:
        """Missed slots feed missed_slots_total; neither they nor skips are verdicts/durations."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        finished(store, "hourly", "missed", T0, trigger="schedule", duration_s=0.0)
        finished(store, "hourly", "skipped-overlap", T0, trigger="schedule", duration_s=0.0)
        assert get("schedctl_missed_slots_total", {"tier": "hourly"}) == 1
        assert get("schedctl_run_duration_seconds_count", {"tier": "hourly"}) is None
        assert get("schedctl_tier_last_run_timestamp_seconds", {"tier": "hourly"}) is None
        outcome = {"tier": "hourly", "outcome": "skipped-overlap"}
        assert get("schedctl_tier_last_outcome", outcome) == 1

    def test_restart_resets_counters_but_not_store_state(
        self, config: Config, store: Store
    ) -> None:
        """A new Metrics on the same store (a restarted daemon) keeps last success and streak."""
        first = metrics_for(config, store)
        finished(store, "hourly", "passed", T0)
        finished(store, "daily", "failed", T0)
        finished(store, "daily", "timeout", T0 + timedelta(hours=1))
        assert (
            first.registry.get_sample_value(
                "schedctl_runs_total", {"tier": "daily", "outcome": "failed", "trigger": "manual"}
            )
            == 1
        )
        again = metrics_for(config, Store(config.db_path)).registry.get_sample_value
        assert (
            again(
                "schedctl_runs_total", {"tier": "daily", "outcome": "failed", "trigger": "manual"}
            )
            == 0
        )
        assert again("schedctl_tier_last_success_timestamp_seconds", {"tier": "hourly"}) == (
            T0.timestamp()
        )
        assert again("schedctl_tier_consecutive_failures", {"tier": "daily"}) == 2


class TestStoreGauges:
    def test_leases_queue_and_outbox(self, config: Config, store: Store) -> None:
        """GPU leases, queued runs and the oldest pending alert come from their tables."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        run_id = store.create_run(tier="weekly", trigger="schedule", outcome="running")
        assert run_id is not None
        store.acquire_leases(run_id, "weekly", [(0, "GPU-0"), (1, "GPU-1")])
        store.create_run(tier="daily", trigger="schedule")  # queued
        with store.begin() as conn:
            for i, state in enumerate(["pending", "pending", "sent"]):
                conn.execute(
                    alerts_outbox.insert().values(
                        id=f"a{i}", sink="lab", fingerprint="f", action="open", payload={},
                        state=state, attempts=0, next_attempt_at=T0,
                        created_at=T0 + timedelta(minutes=i),
                    )
                )  # fmt: skip
        assert get("schedctl_gpu_leased", {"gpu": "1", "uuid": "GPU-1", "tier": "weekly"}) == 1
        assert get("schedctl_queue_depth") == 1
        assert get("schedctl_runs_in_progress", {"tier": "weekly"}) == 1
        assert get("schedctl_alert_outbox_pending") == 2
        assert get("schedctl_alert_outbox_oldest_pending_timestamp_seconds") == T0.timestamp()
        assert get("schedctl_store_up") == 1

    def test_scaling_efficiency_from_the_last_torchrun_verdict(
        self, config: Config, store: Store
    ) -> None:
        """Per-N efficiency comes from details.comparison.table of the tier's last verdict."""
        metrics = metrics_for(config, store)
        get = metrics.registry.get_sample_value
        table = [
            {"world_size": 1, "efficiency": 1.0},
            {"world_size": 4, "efficiency": 0.82},
            {"world_size": 8, "efficiency": None},
        ]
        finished(store, "weekly", "passed", T0, details={"comparison": {"table": table}})
        assert (
            get("schedctl_smoketest_scaling_efficiency", {"tier": "weekly", "nproc": "4"}) == 0.82
        )
        assert (
            get("schedctl_smoketest_scaling_efficiency", {"tier": "weekly", "nproc": "8"}) is None
        )

    @pytest.mark.parametrize(
        "details",
        [{}, {"comparison": None}, {"comparison": {"table": "x"}}, {"comparison": {"table": [1]}}],
        ids=["absent", "null", "not-a-list", "bad-row"],
    )
    def test_scaling_efficiency_tolerates_absent_or_malformed_details(
        self, details: dict[str, Any]
    ) -> None:
        """Runs without a usable comparison table export no efficiency."""
        assert scaling_efficiency(details) == {}

    def test_unreadable_store_yields_store_up_zero_not_an_error(
        self, config: Config, store: Store
    ) -> None:
        """A broken store gives schedctl_store_up 0 and a scrape that still renders."""
        metrics = metrics_for(config, store)
        with store.begin() as conn:
            conn.exec_driver_sql("DROP TABLE runs")
        text = generate_latest(metrics.registry).decode()
        assert "schedctl_store_up 0.0" in text
        assert "schedctl_build_info{" in text


class TestSchedule:
    def test_next_fire_and_period_from_cron(self, config: Config, store: Store) -> None:
        """Without a scheduler attached, next fire and period come from each tier's cron."""
        get = metrics_for(config, store).registry.get_sample_value
        next_hourly = get("schedctl_tier_next_fire_timestamp_seconds", {"tier": "hourly"})
        assert next_hourly is not None
        assert datetime.fromtimestamp(next_hourly, timezone.utc).minute == 15
        assert get("schedctl_tier_period_seconds", {"tier": "hourly"}) == 3600
        assert get("schedctl_tier_period_seconds", {"tier": "weekly"}) == 7 * 86400

    def test_attached_scheduler_wins_and_a_paused_tier_has_no_next_fire(
        self, config: Config, store: Store
    ) -> None:
        """The live scheduler's next fire times are exported; a tier it lacks has none."""
        metrics = metrics_for(config, store)
        metrics.attach_scheduler(lambda: {"hourly": T0, "daily": None})
        get = metrics.registry.get_sample_value
        assert get("schedctl_tier_next_fire_timestamp_seconds", {"tier": "hourly"}) == (
            T0.timestamp()
        )
        assert get("schedctl_tier_next_fire_timestamp_seconds", {"tier": "daily"}) is None

    def test_broken_scheduler_falls_back_to_cron(self, config: Config, store: Store) -> None:
        """A scheduler that raises (mid-shutdown) does not fail the scrape."""
        metrics = metrics_for(config, store)

        def broken() -> dict[str, datetime | None]:
            raise RuntimeError("scheduler shut down")

        metrics.attach_scheduler(broken)
        get = metrics.registry.get_sample_value
        assert get("schedctl_tier_next_fire_timestamp_seconds", {"tier": "hourly"}) is not None


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

    def test_scheduled_run_through_the_dispatcher(self, config: Config, store: Store) -> None:
        """A real dispatcher run with the fake runner shows up in counters and the fire lag."""
        metrics = metrics_for(config, store)
        tests = [("t::a", "passed"), ("t::b", "failed")]
        runner = FakeRunner(always(FakeBehaviour(exit_code=1, tests=tests)))
        factory = RunnerFactory({"local": runner, "auto": runner, "docker": runner})
        dispatcher = Dispatcher(config, store, factory, listeners=[metrics.on_event])
        request = RunRequest("hourly", trigger="schedule", slot=T0, fire_lag_s=1.5)
        record = dispatcher.run(request, threading.Event())
        assert record.outcome is Outcome.FAILED
        get = metrics.registry.get_sample_value
        labels = {"tier": "hourly", "outcome": "failed", "trigger": "schedule"}
        assert get("schedctl_runs_total", labels) == 1
        assert get("schedctl_tests_total", {"tier": "hourly", "outcome": "failed"}) == 1
        assert get("schedctl_fire_lag_seconds_sum", {"tier": "hourly"}) == 1.5
        assert get("schedctl_tier_consecutive_failures", {"tier": "hourly"}) == 1


class TestTierHistoryWindow:
    @pytest.mark.parametrize("seed", range(20))
    def test_streak_agrees_with_the_store(self, config: Config, store: Store, seed: int) -> None:
        """Random histories, longer than the window: the gauges equal the store's own answers."""
        rng = random.Random(seed)
        choices = ["passed", "failed", "timeout", "infra-error", "missed", "cancelled", "error"]
        weights = [1, 4, 1, 2, 1, 1, 1] if seed % 2 else [6, 1, 1, 1, 1, 1, 1]
        for i in range(rng.randint(0, 3 * RECENT_WINDOW)):
            outcome = rng.choices(choices, weights)[0]
            finished(store, "daily", outcome, T0 + timedelta(minutes=i))
        get = metrics_for(config, store).registry.get_sample_value
        green = store.last_green("daily")
        assert get("schedctl_tier_consecutive_failures", {"tier": "daily"}) == (
            store.consecutive_failures("daily")
        )
        assert get("schedctl_tier_last_success_timestamp_seconds", {"tier": "daily"}) == (
            green.finished_at.timestamp() if green and green.finished_at else None
        )

    def test_run_older_than_the_window_finishing_updates_the_gauges(
        self, config: Config, store: Store
    ) -> None:
        """A run that outlived a window of skipped slots still moves last run when it ends."""
        get = metrics_for(config, store).registry.get_sample_value
        long_run = store.create_run(tier="daily", trigger="schedule", outcome="running")
        assert long_run is not None
        for i in range(RECENT_WINDOW + 2):
            finished(store, "daily", "skipped-overlap", T0 + timedelta(minutes=i))
        assert get("schedctl_tier_last_run_timestamp_seconds", {"tier": "daily"}) is None
        end = T0 + timedelta(hours=5)
        store.finish_run(long_run, outcome="passed", finished_at=end)
        assert get("schedctl_tier_last_run_timestamp_seconds", {"tier": "daily"}) == (
            end.timestamp()
        )
        assert get("schedctl_tier_last_success_timestamp_seconds", {"tier": "daily"}) == (
            end.timestamp()
        )


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
        config = make_config(daemon={"metrics_address": None})
        store = Store(config.db_path)
        services = build_services(config, store, build_dispatcher(config, store))
        assert not any(isinstance(s, MetricsService) for s in services)
