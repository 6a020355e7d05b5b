"""Gauges read from the store at scrape time: leases, queue, outbox, streaks, efficiency."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from scheduler.config import Config
from scheduler.metrics.state import RECENT_WINDOW, scaling_efficiency
from scheduler.store.engine import Store, alerts_outbox
from tests.scheduler.metrics.conftest import T0, finished, metrics_for


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
