"""The daemon with a real APScheduler and SQLite job store, and the fake runner."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger

from runners.fake import FakeBehaviour
from scheduler.config import Config
from scheduler.daemon.lock import StateLock
from scheduler.daemon.scheduler import JOB_PREFIX, Daemon
from scheduler.daemon.sdnotify import Notifier, Watchdog, watchdog_interval
from scheduler.daemon.slots import SlotPlan
from scheduler.kernel.errors import DaemonLocked
from scheduler.kernel.events import Event, SlotMissed
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord, Store
from tests.conftest import quiet_hourly, tier
from tests.scheduler.conftest import FakeDispatcher
from tests.scheduler.daemon.test_catch_up import record_slot
from tests.waiting import wait_for

MakeDaemon = Callable[..., Daemon]
PlanFor = Callable[..., tuple[Daemon, datetime]]


@pytest.fixture
def make_daemon(fake_dispatcher: FakeDispatcher) -> MakeDaemon:
    """``make_daemon(config, behaviour=None)``: a Daemon over a fake-runner dispatcher."""

    def make(config: Config, behaviour: FakeBehaviour | None = None) -> Daemon:
        dispatcher = fake_dispatcher(config, behaviour or FakeBehaviour())
        return Daemon(config, dispatcher.store, dispatcher)

    return make


@pytest.fixture
def daemon(make_config: Callable[..., Config], make_daemon: MakeDaemon) -> Iterator[Daemon]:
    config = make_config(tiers={"hourly": tier(), "weekly": tier(schedule="0 3 * * 0")})
    d = make_daemon(config)
    d.start()
    yield d
    if d.started.is_set():
        d.stop(grace_s=1)


def wait_for_runs(store: Store, count: int, timeout: float = 30) -> list[RunRecord]:
    def finished() -> list[RunRecord]:
        runs = [r for r in store.list_runs() if r.outcome.is_final]
        return runs if len(runs) >= count else []

    return wait_for(finished, timeout, f"{count} finished runs")


def test_jobs_follow_config_with_sunday_weekly(daemon: Daemon) -> None:
    """One job per scheduled tier; weekly's next fire is a Sunday 03:00 UTC."""
    nexts = daemon.next_fire_times()
    weekly = nexts["weekly"]
    assert weekly is not None
    weekly_utc = weekly.astimezone(timezone.utc)
    assert (weekly_utc.weekday(), weekly_utc.hour, weekly_utc.minute) == (6, 3, 0)
    hourly = nexts["hourly"]
    assert hourly is not None and hourly.minute == 15


def test_a_tier_pinned_to_other_hosts_gets_no_job(
    make_config: Callable[..., Config], make_daemon: MakeDaemon
) -> None:
    """tiers.<t>.hosts: only the listed daemons schedule the tier; the rest float."""
    config = make_config(
        host="box-2",
        tiers={"hourly": tier(), "weekly": tier(schedule="0 3 * * 0", hosts=["box-1"])},
    )
    d = make_daemon(config)
    d.start()
    try:
        nexts = d.next_fire_times()
        assert nexts["weekly"] is None and nexts["hourly"] is not None
    finally:
        d.stop(grace_s=1)


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


def test_second_daemon_on_same_state_dir_refuses(daemon: Daemon, make_daemon: MakeDaemon) -> None:
    """A second daemon on the same state dir fails with a clear message naming the pid."""
    other = make_daemon(daemon.config)
    with pytest.raises(DaemonLocked, match=r"another schedctl daemon \(pid \d+\)"):
        other.start()
    assert StateLock.holder(daemon.config.state_dir) is not None


def test_missed_slots_are_all_recorded(
    make_config: Callable[..., Config], make_daemon: MakeDaemon
) -> None:
    """Slots older than the misfire grace become 'missed' rows and SlotMissed events, each one."""
    schedule, latest = quiet_hourly(datetime.now(timezone.utc))
    config = make_config(tiers={"hourly": tier(schedule=schedule, misfire_grace=1)})
    d = make_daemon(config)
    history = latest - timedelta(hours=3)
    record_slot(d.store, "hourly", history)
    events: list[Event] = []
    d.dispatcher.add_listener(events.append)
    d.start()
    try:
        d.scheduler.pause()
        d.scheduler.modify_job(JOB_PREFIX + "hourly", next_run_time=history + timedelta(hours=1))
        d.scheduler.resume()
        expected = {history + timedelta(hours=h) for h in (1, 2, 3)}
        runs = [r for r in wait_for_runs(d.store, 4) if r.slot != history]

        def missed_events() -> set[int]:
            return {e.run_id for e in events if isinstance(e, SlotMissed)}

        # A row is committed before its event is emitted, and the fire and APScheduler's
        # missed-job listener can each be recording one: wait for the events, not only rows.
        wait_for(lambda: missed_events() >= {r.id for r in runs}, 30, "a SlotMissed per row")
    finally:
        d.stop(grace_s=1)
    assert {r.slot for r in runs} == expected
    assert {r.outcome for r in runs} == {Outcome.MISSED}
    assert missed_events() == {r.id for r in runs}


def test_stop_cancels_runs_after_grace(
    make_config: Callable[..., Config], make_daemon: MakeDaemon
) -> None:
    """SIGTERM-style stop gives a run its grace, then cancels and records it."""
    config = make_config()
    d = make_daemon(config, FakeBehaviour(duration_s=60))
    d.start()
    fire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    d.scheduler.reschedule_job(JOB_PREFIX + "hourly", trigger=CronTrigger(second=fire_at.second))
    wait_for(d.dispatcher.active_run_ids, 30, "the scheduled run to start")
    t0 = time.monotonic()
    d.stop(grace_s=1)
    assert time.monotonic() - t0 < 10
    (run,) = d.store.list_runs()
    assert run.outcome is Outcome.CANCELLED
    assert run.reason == "daemon stopped: grace period ran out"
    assert StateLock.holder(config.state_dir) is None


class TestSlotPlan:
    """Which slots a fire runs and which it records as missed (catch-up capped per tier)."""

    EVERY_10S = CronTrigger(second="*/10", timezone="UTC")

    @pytest.fixture
    def plan_for(
        self, make_config: Callable[..., Config], make_daemon: MakeDaemon
    ) -> Callable[..., tuple[Daemon, datetime]]:
        """``plan_for(started_ago_s, **tier)``: a daemon with 11:59:00 recorded, and "now"."""

        def plan_for(started_ago_s: float, **tier_overrides: object) -> tuple[Daemon, datetime]:
            config = make_config(tiers={"hourly": tier(**tier_overrides)})
            d = make_daemon(config)
            now = datetime(2026, 1, 1, 12, 0, 5, tzinfo=timezone.utc)
            d.started_at = now - timedelta(seconds=started_ago_s)
            last = now - timedelta(seconds=65)  # 11:59:00 recorded; 11:59:10..12:00:00 not
            record_slot(d.store, "hourly", last)
            return d, now

        return plan_for

    def test_regular_fire_runs_slot_and_marks_lost_ones(self, plan_for: PlanFor) -> None:
        """A slot due while the daemon ran is run; unrecorded older slots are missed."""
        d, now = plan_for(started_ago_s=3600)
        slot = now.replace(second=0)
        plan = d.plan("hourly", self.EVERY_10S, slot, now)
        assert plan.run == [slot]
        assert len(plan.missed) == 5 and max(plan.missed) < slot

    def test_catch_up_runs_newest_within_grace_up_to_cap(self, plan_for: PlanFor) -> None:
        """After downtime, the newest max_catchup slots within the grace run; older are missed."""
        d, now = plan_for(started_ago_s=1, misfire_grace=25, max_catchup=2)
        slot = now.replace(second=0)
        plan = d.plan("hourly", self.EVERY_10S, slot, now)
        assert plan.run == [slot - timedelta(seconds=10), slot]
        assert len(plan.missed) == 4 and slot - timedelta(seconds=20) in plan.missed

    def test_zero_catch_up_records_every_backlog_slot_missed(self, plan_for: PlanFor) -> None:
        """max_catchup 0: nothing from the downtime runs, every slot becomes a missed row."""
        d, now = plan_for(started_ago_s=1, max_catchup=0)
        slot = now.replace(second=0)
        plan = d.plan("hourly", self.EVERY_10S, slot, now)
        assert plan.run == [] and len(plan.missed) == 6

    def test_recorded_slot_is_not_planned_again(self, plan_for: PlanFor) -> None:
        """A slot that already has a row is neither run nor missed (restart idempotency)."""
        d, now = plan_for(started_ago_s=1)
        recorded = now - timedelta(seconds=65)
        assert d.plan("hourly", self.EVERY_10S, recorded, now) == SlotPlan()


class TestSdNotify:
    """The notify protocol over a datagram socket, abstract addresses included."""

    def test_messages_reach_path_and_abstract_sockets(self, tmp_path: Path) -> None:
        """READY/STATUS/STOPPING datagrams arrive; '@' names an abstract socket."""
        for address, bind in (
            (str(tmp_path / "n.sock"), str(tmp_path / "n.sock")),
            (f"@schedctl-test-{os.getpid()}", f"\0schedctl-test-{os.getpid()}"),
        ):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
                server.bind(bind)
                notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
                assert notifier.ready("up") and notifier.stopping()
                assert server.recv(100) == b"READY=1\nSTATUS=up"
                assert server.recv(100) == b"STOPPING=1"

    def test_no_socket_is_a_no_op(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        assert Notifier.from_env({}).ready() is False

    def test_watchdog_interval_and_pings_only_when_healthy(self, tmp_path: Path) -> None:
        """Half of WATCHDOG_USEC; pings stop while the health check fails."""
        assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
        assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
        assert watchdog_interval({}) is None
        path = tmp_path / "w.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(str(path))
            server.settimeout(30)
            healthy = threading.Event()
            healthy.set()
            unhealthy_checks: list[float] = []

            def health() -> bool:
                if healthy.is_set():
                    return True
                unhealthy_checks.append(time.monotonic())
                return False

            dog = Watchdog(Notifier(str(path)), 0.05, health)
            dog.start()
            try:
                assert server.recv(100) == b"WATCHDOG=1"
                healthy.clear()
                # The loop pings right after a healthy check, before its next check: once one
                # check has failed, any ping decided before the clear is already in the socket.
                wait_for(lambda: unhealthy_checks, 30, "a failed health check")
                server.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        server.recv(100)
                failed = len(unhealthy_checks)
                wait_for(lambda: len(unhealthy_checks) >= failed + 3, 30, "3 more failed checks")
                with pytest.raises(BlockingIOError):
                    server.recv(100)
            finally:
                dog.stop()


def test_daemon_health_reflects_scheduler_and_store(daemon: Daemon) -> None:
    """healthy() is true while running and false once the scheduler is shut down."""
    assert daemon.healthy() is True
    daemon.scheduler.shutdown(wait=False)
    assert daemon.healthy() is False


def test_freeze_heap_freezes_after_start_up_and_gives_back_at_stop(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """``schedctl daemon``'s start-up heap leaves the collector's full passes while it runs and
    comes back at stop; a daemon built without the flag leaves the collector alone."""
    cron, _ = quiet_hourly(datetime.now(timezone.utc))
    config = make_config(tiers={"hourly": tier(schedule=cron)})
    dispatcher = fake_dispatcher(config, FakeBehaviour())
    plain = Daemon(config, dispatcher.store, dispatcher)
    plain.start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        plain.stop(grace_s=1)
    frozen = Daemon(config, dispatcher.store, dispatcher, freeze_heap=True)
    frozen.start()
    try:
        assert gc.get_freeze_count() > 10_000
    finally:
        frozen.stop(grace_s=1)
    assert gc.get_freeze_count() == 0
