"""Crash recovery off the fire path: a run recovers only when a stale active row says a crash
left something; the daemon recovers at start-up and on its timer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.triggers.cron import CronTrigger

from runners.fake import FakeRunner
from scheduler.config import Config
from scheduler.daemon import scheduler as daemon_module
from scheduler.daemon.scheduler import JOB_PREFIX, Daemon
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from tests.conftest import tier
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for

DEAD_PID = 2**22 + 12345


class CountingRunner(FakeRunner):
    """A passing fake runner that counts orphan reaps (one per recovery)."""

    def __init__(self) -> None:
        super().__init__()
        self.reaps = 0

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        self.reaps += 1
        return super().reap_orphans(live_run_ids)


def stale_row(d: Dispatcher, tier_name: str = "daily") -> int:
    """A running row whose owner process is gone, as a killed ``schedctl run`` leaves it."""
    run_id = d.store.create_run(
        tier=tier_name,
        trigger="manual",
        kind="pytest",
        outcome=Outcome.RUNNING,
        host=d.host,
        owner_pid=DEAD_PID,
    )
    assert run_id is not None
    return run_id


@pytest.fixture
def two_tiers(make_config: Callable[..., Config]) -> Config:
    return make_config(tiers={"hourly": tier(), "daily": tier(schedule="30 2 * * *")})


def test_a_run_without_stale_rows_does_not_recover(
    two_tiers: Config, fake_dispatcher: FakeDispatcher
) -> None:
    runner = CountingRunner()
    d = fake_dispatcher(two_tiers, runner)
    live = d.store.create_run(
        tier="daily", trigger="manual", kind="pytest", outcome=Outcome.RUNNING,
        host=d.host, owner_pid=os.getpid(), owner_identity=d.identity,
    )  # fmt: skip
    assert d.stale_runs() == []
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED
    assert runner.reaps == 0
    assert live is not None and d.store.get_run(live).outcome is Outcome.RUNNING


def test_a_stale_row_makes_the_run_recover_first(
    two_tiers: Config, fake_dispatcher: FakeDispatcher
) -> None:
    runner = CountingRunner()
    d = fake_dispatcher(two_tiers, runner)
    dead = stale_row(d)
    assert d.stale_runs() == [dead]
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED
    assert runner.reaps == 1
    assert d.store.get_run(dead).outcome is Outcome.INTERRUPTED
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED
    assert runner.reaps == 1  # nothing stale any more


def test_a_stale_row_of_the_same_tier_does_not_make_it_busy(
    two_tiers: Config, fake_dispatcher: FakeDispatcher
) -> None:
    d = fake_dispatcher(two_tiers, CountingRunner())
    dead = stale_row(d, "hourly")
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED
    assert d.store.get_run(dead).outcome is Outcome.INTERRUPTED


def test_recover_true_always_recovers(two_tiers: Config, fake_dispatcher: FakeDispatcher) -> None:
    runner = CountingRunner()
    d = fake_dispatcher(two_tiers, runner)
    assert d.run(RunRequest("hourly"), recover=True).outcome is Outcome.PASSED
    assert runner.reaps == 1


@pytest.fixture
def daemon_of(fake_dispatcher: FakeDispatcher) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(config: Config, runner: FakeRunner, **kwargs: float) -> Daemon:
        d = fake_dispatcher(config, runner)
        daemon = Daemon(config, d.store, d, **kwargs)  # type: ignore[arg-type]
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.started.is_set():
            daemon.stop(grace_s=1)


def test_daemon_recovers_at_start_and_on_its_timer(
    two_tiers: Config, daemon_of: Callable[..., Daemon]
) -> None:
    runner = CountingRunner()
    daemon = daemon_of(two_tiers, runner, recovery_interval_s=0.05)
    before = stale_row(daemon.dispatcher)
    daemon.start()
    assert daemon.store.get_run(before).outcome is Outcome.INTERRUPTED  # at start-up
    after = stale_row(daemon.dispatcher)
    # recover() marks the row first and reaps after: wait for both, not the row alone.
    wait_for(
        lambda: daemon.store.get_run(after).outcome is Outcome.INTERRUPTED and runner.reaps >= 2,
        30,
        "the recovery timer to interrupt a row left after start-up and reap again",
    )


def test_fires_use_the_slot_apscheduler_hands_them(
    two_tiers: Config, daemon_of: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No search for the latest slot: the job gets its scheduled time (and trigger)."""

    def no_search(*_args: object) -> None:
        raise AssertionError("latest_slot searched on a scheduled fire")

    monkeypatch.setattr(daemon_module, "latest_slot", no_search)
    runner = CountingRunner()
    daemon = daemon_of(two_tiers, runner, recovery_interval_s=3600)
    daemon.start()
    reaps_at_start = runner.reaps
    daemon.scheduler.reschedule_job(JOB_PREFIX + "hourly", trigger=CronTrigger(second="*"))
    runs = wait_for(
        lambda: (
            [r for r in daemon.store.list_runs(tier="hourly") if r.outcome.is_final][:2]
            if len([r for r in daemon.store.list_runs(tier="hourly") if r.outcome.is_final]) >= 2
            else None
        ),
        30,
        "two scheduled runs",
    )
    for record in runs:
        assert record.outcome is Outcome.PASSED, record.reason
        assert record.slot is not None and record.slot.microsecond == 0
        assert record.slot <= record.started_at if record.started_at else True
    assert runner.reaps == reaps_at_start  # no recovery on a fire


def test_a_direct_fire_still_finds_its_slot(
    two_tiers: Config, daemon_of: Callable[..., Daemon]
) -> None:
    daemon = daemon_of(two_tiers, CountingRunner(), recovery_interval_s=3600)
    daemon.start()
    slot = datetime(2026, 1, 1, 2, 30, tzinfo=timezone.utc)
    daemon.fire("daily", slot, CronTrigger(hour=2, minute=30, timezone="UTC"))
    record = daemon.store.list_runs(tier="daily")[0]
    assert record.slot == slot
    assert record.outcome.is_final
    daemon.fire("hourly")  # no slot handed over: the latest hourly slot before now
    hourly = daemon.store.list_runs(tier="hourly")[0]
    assert hourly.slot is not None
    assert timedelta(0) <= datetime.now(timezone.utc) - hourly.slot <= timedelta(hours=1)
