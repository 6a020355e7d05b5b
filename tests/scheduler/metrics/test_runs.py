"""Run counters from the store's rows: outcomes, tests, durations, restarts."""

from __future__ import annotations

from datetime import timedelta

from scheduler.config import Config
from scheduler.store.engine import Store
from tests.scheduler.metrics.conftest import T0, finished, metrics_for


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
