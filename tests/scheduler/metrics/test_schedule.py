"""Next fire time and period per tier: from cron, or from the attached scheduler."""

from __future__ import annotations

from datetime import datetime, timezone

from scheduler.config import Config
from scheduler.store.engine import Store
from tests.scheduler.metrics.conftest import T0, metrics_for


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
