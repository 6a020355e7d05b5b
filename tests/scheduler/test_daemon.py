"""The daemon with a real APScheduler and SQLite job store, and the fake runner."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.triggers.cron import CronTrigger

from runners.base import Outcome
from runners.fake import FakeBehaviour, FakeRunner, always
from scheduler.config import Config
from scheduler.daemon import JOB_PREFIX, Daemon, StateLock
from scheduler.dispatch import Dispatcher
from scheduler.errors import DaemonLocked
from scheduler.events import Event, SlotMissed
from scheduler.runner_select import RunnerFactory
from scheduler.store import RunRecord, Store
from tests.conftest import tier


def make_daemon(config: Config, behaviour: FakeBehaviour | None = None) -> Daemon:
    store = Store(config.db_path)
    runner = FakeRunner(always(behaviour or FakeBehaviour()))
    factory = RunnerFactory({"local": runner, "auto": runner, "docker": runner})
    return Daemon(config, store, Dispatcher(config, store, factory))


@pytest.fixture
def daemon(make_config: Callable[..., Config]) -> Iterator[Daemon]:
    config = make_config(tiers={"hourly": tier(), "weekly": tier(schedule="0 3 * * 0")})
    d = make_daemon(config)
    d.start()
    yield d
    if d.started.is_set():
        d.stop(grace_s=1)


def wait_for_runs(store: Store, count: int, timeout: float = 15) -> list[RunRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in store.list_runs() if r.outcome.is_final]
        if len(runs) >= count:
            return runs
        time.sleep(0.05)
    raise AssertionError(f"expected {count} finished runs, have {store.list_runs()}")


def test_jobs_follow_config_with_sunday_weekly(daemon: Daemon) -> None:
    """One job per scheduled tier; weekly's next fire is a Sunday 03:00 UTC."""
    nexts = daemon.next_fire_times()
    weekly = nexts["weekly"]
    assert weekly is not None
    weekly_utc = weekly.astimezone(timezone.utc)
    assert (weekly_utc.weekday(), weekly_utc.hour, weekly_utc.minute) == (6, 3, 0)
    hourly = nexts["hourly"]
    assert hourly is not None and hourly.minute == 15


def test_scheduled_fire_records_slot_and_lag(daemon: Daemon) -> None:
    """A fire produces a schedule-triggered run with its slot, idempotency key and small lag."""
    fire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    daemon.scheduler.reschedule_job(
        JOB_PREFIX + "hourly", trigger=CronTrigger(second=fire_at.second, timezone="UTC")
    )
    (run,) = wait_for_runs(daemon.store, 1)
    assert run.trigger == "schedule" and run.outcome is Outcome.PASSED
    assert run.slot == fire_at
    assert run.idempotency_key == f"hourly@{fire_at.isoformat()}"
    assert run.started_at is not None and (run.started_at - fire_at).total_seconds() < 2


def test_second_daemon_on_same_state_dir_refuses(daemon: Daemon) -> None:
    """A second daemon on the same state dir fails with a clear message naming the pid."""
    other = make_daemon(daemon.config)
    with pytest.raises(DaemonLocked, match=r"another schedctl daemon \(pid \d+\)"):
        other.start()
    assert StateLock.holder(daemon.config.state_dir) is not None


def test_missed_slots_are_all_recorded(make_config: Callable[..., Config]) -> None:
    """Slots older than the misfire grace become 'missed' rows and SlotMissed events, each one."""
    config = make_config(tiers={"hourly": tier(misfire_grace=1)})
    d = make_daemon(config)
    now = datetime.now(timezone.utc)
    latest = now.replace(minute=15, second=0, microsecond=0)
    if latest > now - timedelta(seconds=5):
        latest -= timedelta(hours=1)
    history = latest - timedelta(hours=3)
    d.store.create_run(
        tier="hourly",
        trigger="schedule",
        kind="pytest",
        slot=history,
        idempotency_key=f"hourly@{history.isoformat()}",
        outcome=Outcome.PASSED,
    )
    events: list[Event] = []
    d.dispatcher.add_listener(events.append)
    d.start()
    try:
        d.scheduler.pause()
        d.scheduler.modify_job(JOB_PREFIX + "hourly", next_run_time=history + timedelta(hours=1))
        d.scheduler.resume()
        expected = {history + timedelta(hours=h) for h in (1, 2, 3)}
        runs = [r for r in wait_for_runs(d.store, 4) if r.slot != history]
    finally:
        d.stop(grace_s=1)
    assert {r.slot for r in runs} == expected
    assert {r.outcome for r in runs} == {Outcome.MISSED}
    assert {e.run_id for e in events if isinstance(e, SlotMissed)} == {r.id for r in runs}


def test_stop_cancels_runs_after_grace(make_config: Callable[..., Config]) -> None:
    """SIGTERM-style stop gives a run its grace, then cancels and records it."""
    config = make_config()
    d = make_daemon(config, FakeBehaviour(duration_s=60))
    d.start()
    fire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    d.scheduler.reschedule_job(JOB_PREFIX + "hourly", trigger=CronTrigger(second=fire_at.second))
    deadline = time.monotonic() + 10
    while not d.dispatcher.active_run_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    d.stop(grace_s=1)
    assert time.monotonic() - t0 < 10
    (run,) = d.store.list_runs()
    assert run.outcome is Outcome.CANCELLED
    assert run.reason == "daemon stopped: grace period ran out"
    assert StateLock.holder(config.state_dir) is None
