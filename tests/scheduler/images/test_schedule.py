"""A recipe's build schedule fires through the daemon's slot machinery, like any tier."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger

from scheduler.config import Config
from scheduler.daemon.scheduler import JOB_PREFIX, Daemon
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from tests.conftest import tier
from tests.waiting import wait_for

MakeDispatcher = Callable[[Config], Dispatcher]


def daily_build(make_config: Callable[..., Config], project: Path, **recipe: object) -> Config:
    return make_config(
        project=project,
        runner="docker",
        images={"ci": {"dockerfile": "Dockerfile", "schedule": "0 7 * * *", **recipe}},
        tiers={"hourly": tier(schedule=None, image="@ci")},
    )


def test_daily_build_fires_as_a_slot_row(
    make_config: Callable[..., Config], dockerfile_project: Path, build_dispatcher: MakeDispatcher
) -> None:
    """The build job fires at 07:00 UTC; a fire records one schedule row keyed image:ci@slot."""
    config = daily_build(make_config, dockerfile_project)
    dispatcher = build_dispatcher(config)
    daemon = Daemon(config, dispatcher.store, dispatcher)
    daemon.start()
    try:
        nxt = daemon.next_fire_times()["image:ci"]
        assert nxt is not None and (nxt.hour, nxt.minute) == (7, 0)
        fire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
        daemon.scheduler.reschedule_job(
            JOB_PREFIX + "image:ci", trigger=CronTrigger(second=fire_at.second, timezone="UTC")
        )
        (run,) = wait_for(
            lambda: [r for r in dispatcher.store.list_runs() if r.outcome.is_final],
            30, "the scheduled build",
        )  # fmt: skip
    finally:
        daemon.stop(grace_s=1)
    assert (run.tier, run.kind, run.trigger, run.outcome) == (
        "image:ci", "build", "schedule", Outcome.PASSED,
    )  # fmt: skip
    assert run.slot == fire_at and run.idempotency_key == f"image:ci@{fire_at.isoformat()}"
    assert dispatcher.store.latest_image_build("ci") is not None


def test_a_build_slot_runs_exactly_once(
    make_config: Callable[..., Config], dockerfile_project: Path, build_dispatcher: MakeDispatcher
) -> None:
    """The same slot fired twice (a restart, a second daemon) is one row and one build."""
    dispatcher = build_dispatcher(daily_build(make_config, dockerfile_project))
    slot = datetime(2026, 1, 1, 7, 0, tzinfo=timezone.utc)
    first = dispatcher.run(RunRequest("image:ci", trigger="schedule", slot=slot))
    again = dispatcher.run(RunRequest("image:ci", trigger="schedule", slot=slot))
    assert again.id == first.id and len(dispatcher.store.list_runs(tier="image:ci")) == 1
    assert len(dispatcher.store.image_builds("ci")) == 1


def test_build_slots_lost_to_downtime_are_missed(
    make_config: Callable[..., Config], dockerfile_project: Path, build_dispatcher: MakeDispatcher
) -> None:
    """After three days down, the newest build slot within the grace runs; the others are
    missed rows, as for a test tier."""
    config = daily_build(make_config, dockerfile_project, misfire_grace="2h")
    dispatcher = build_dispatcher(config)
    daemon = Daemon(config, dispatcher.store, dispatcher)
    now = datetime(2026, 1, 4, 7, 30, tzinfo=timezone.utc)
    daemon.started_at = now - timedelta(seconds=1)
    last = datetime(2026, 1, 1, 7, 0, tzinfo=timezone.utc)
    dispatcher.store.create_run(
        tier="image:ci", kind="build", trigger="schedule", slot=last,
        idempotency_key=f"image:ci@{last.isoformat()}", outcome=Outcome.PASSED,
    )  # fmt: skip
    daily = CronTrigger(hour=7, minute=0, timezone="UTC")
    plan = daemon.plan("image:ci", daily, now.replace(minute=0), now)
    assert plan.run == [now.replace(minute=0)]
    assert plan.missed == [last + timedelta(days=1), last + timedelta(days=2)]
