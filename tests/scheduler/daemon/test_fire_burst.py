"""Tiers firing in the same second, and a fire that reads nothing before it records its row.

A daemon on its own SQLite store knows each tier's last recorded slot (read at start-up,
followed as it records slots), so a cron fire inserts its row straight away and the store's
unique index on active runs per tier decides overlap; a refusal by a crash's leftover row is
recovered before the slot runs, a refusal by a live run is an overlap skip.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger

from runners.fake import FakeRunner
from scheduler.config import Config
from scheduler.daemon.scheduler import JOB_PREFIX, Daemon
from scheduler.kernel.events import Event, RunStarted, SlotMissed
from scheduler.kernel.outcome import Outcome
from scheduler.store.daemon_store import DaemonRunStore, daemon_run_store
from scheduler.store.engine import RunRecord, Store
from tests.conftest import tier
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for

DEAD_PID = 2**22 + 12345
FIVE = [f"t{i}" for i in range(5)]
WEEKLY = CronTrigger(day_of_week="sun", hour=3, timezone="UTC")


@pytest.fixture
def five_tiers(make_config: Callable[..., Config]) -> Config:
    return make_config(tiers={name: tier(schedule="0 3 * * 0") for name in FIVE})


@pytest.fixture
def daemon_with_events(
    fake_dispatcher: FakeDispatcher,
) -> Iterator[Callable[[Config], tuple[Daemon, list[Event]]]]:
    started: list[Daemon] = []

    def make(config: Config) -> tuple[Daemon, list[Event]]:
        events: list[Event] = []
        store = Store(config.db_path)
        # run rows through the writer, as `schedctl daemon` writes them
        runs = daemon_run_store(store)
        dispatcher = fake_dispatcher(config, FakeRunner(), events=events, store=runs)
        daemon = Daemon(config, store, dispatcher, recovery_interval_s=3600)
        started.append(daemon)
        return daemon, events

    yield make
    for daemon in started:
        if daemon.started.is_set():
            daemon.stop(grace_s=5)


def active_row(daemon: Daemon, tier_name: str, pid: int, identity: str | None) -> int:
    """An active row of ``tier_name`` owned by ``pid``: a crash's leftover when it is dead."""
    run_id = daemon.store.create_run(
        tier=tier_name, trigger="manual", kind="pytest", outcome=Outcome.QUEUED,
        host=daemon.dispatcher.host, owner_pid=pid, owner_identity=identity,
    )  # fmt: skip
    assert run_id is not None
    return run_id


def no_reads_before_insert(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a cron fire read the store before it inserted its row")

    monkeypatch.setattr(daemon.store, "fire_reads", refuse)
    monkeypatch.setattr(daemon.store, "last_slot", refuse)


def sunday(weeks: int) -> datetime:
    """A weekly slot ahead of the daemon's start: run when fired, not caught up."""
    first = datetime(2027, 1, 3, 3, 0, tzinfo=timezone.utc)
    assert first > datetime.now(timezone.utc), "move the test's slots ahead"
    return first + timedelta(weeks=weeks)


def test_five_tiers_in_the_same_second_each_get_one_row_and_one_run_started(
    five_tiers: Config, daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]]
) -> None:
    daemon, events = daemon_with_events(five_tiers)
    daemon.start()
    for name in FIVE:
        daemon.scheduler.reschedule_job(JOB_PREFIX + name, trigger=CronTrigger(second="*"))

    def three_seconds_each() -> list[RunRecord] | None:
        runs = [r for r in daemon.store.list_runs(limit=1000) if r.outcome.is_final]
        per_tier = Counter(r.tier for r in runs)
        return runs if all(per_tier[name] >= 3 for name in FIVE) else None

    wait_for(three_seconds_each, 60, "three finished runs of each of five tiers")
    daemon.stop(grace_s=5)
    runs = daemon.store.list_runs(limit=1000)
    by_slot = Counter((r.tier, r.slot) for r in runs)
    assert all(count == 1 for count in by_slot.values()), by_slot
    started = Counter(e.run_id for e in events if isinstance(e, RunStarted))
    for record in runs:
        assert record.slot is not None and record.slot.microsecond == 0
        # Every slot of every tier ran (none missed, none skipped as an overlap), once.
        assert record.outcome is Outcome.PASSED, (record.tier, record.slot, record.reason)
        assert started[record.id] == 1
    assert set(started) == {r.id for r in runs}
    for name in FIVE:
        slots = sorted(r.slot for r in runs if r.tier == name and r.slot is not None)
        assert slots == [slots[0] + timedelta(seconds=i) for i in range(len(slots))], name


def test_a_fire_reads_nothing_before_it_inserts_its_row(
    five_tiers: Config,
    daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon, events = daemon_with_events(five_tiers)
    daemon.start()
    no_reads_before_insert(daemon, monkeypatch)
    monkeypatch.setattr(
        daemon.dispatcher, "stale_runs", lambda *_: pytest.fail("staleness judged on a fire")
    )
    daemon.fire("t0", sunday(0), WEEKLY)
    daemon.fire("t0", sunday(2), WEEKLY)  # the week between was not run: recorded missed
    runs = {r.slot: r for r in daemon.store.list_runs(tier="t0")}
    assert runs[sunday(0)].outcome is Outcome.PASSED
    assert runs[sunday(1)].outcome is Outcome.MISSED
    assert runs[sunday(2)].outcome is Outcome.PASSED
    assert [e.slot for e in events if isinstance(e, SlotMissed)] == [sunday(1)]
    daemon.fire("t0", sunday(1), WEEKLY)  # an older slot than the last recorded: nothing
    assert len(daemon.store.list_runs(tier="t0")) == 3


def test_a_crash_between_record_and_start_is_recovered_by_the_next_fire(
    five_tiers: Config,
    daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row recorded queued whose process died before it started: recovery sees it, and the
    tier's next fire (which did not read it) recovers it before it runs its slot."""
    daemon, events = daemon_with_events(five_tiers)
    daemon.start()
    dead = active_row(daemon, "t1", DEAD_PID, None)
    no_reads_before_insert(daemon, monkeypatch)
    daemon.fire("t1", sunday(0), WEEKLY)
    left = daemon.store.get_run(dead)
    assert left.outcome is Outcome.INTERRUPTED
    assert str(DEAD_PID) in (left.reason or "")
    ran = daemon.store.get_run_by_key(f"t1@{sunday(0).isoformat()}")
    assert ran is not None and ran.outcome is Outcome.PASSED, ran
    assert [e.run_id for e in events if isinstance(e, RunStarted)] == [ran.id]


def test_a_live_run_of_the_tier_makes_the_fire_an_overlap_skip(
    five_tiers: Config,
    daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An active row whose owner lives (here: this very process, as a `schedctl run` beside the
    daemon would be) is not recovered: the slot is recorded as skipped, with the reason."""
    daemon, events = daemon_with_events(five_tiers)
    daemon.start()
    live = active_row(daemon, "t2", os.getpid(), daemon.dispatcher.identity)
    no_reads_before_insert(daemon, monkeypatch)
    daemon.fire("t2", sunday(0), WEEKLY)
    assert daemon.store.get_run(live).outcome is Outcome.QUEUED
    skipped = daemon.store.get_run_by_key(f"t2@{sunday(0).isoformat()}")
    assert skipped is not None and skipped.outcome is Outcome.SKIPPED_OVERLAP
    assert f"run {live}" in (skipped.reason or "")
    assert not [e for e in events if isinstance(e, RunStarted)]


def test_a_fire_that_fails_makes_the_next_one_read_the_store(
    five_tiers: Config,
    daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What this daemon knows of a tier's last slot is dropped when a fire raises: its slot may
    not be recorded, and the next fire reads the store."""
    daemon, _events = daemon_with_events(five_tiers)
    daemon.start()
    broken = daemon.dispatcher.record

    def fails(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("store went away")

    monkeypatch.setattr(daemon.dispatcher, "record", fails)
    with pytest.raises(RuntimeError):
        daemon.fire("t3", sunday(0), WEEKLY)
    monkeypatch.setattr(daemon.dispatcher, "record", broken)
    reads: list[str] = []
    fire_reads = daemon.store.fire_reads
    monkeypatch.setattr(
        daemon.store, "fire_reads", lambda tier: (reads.append(tier), fire_reads(tier))[1]
    )
    daemon.fire("t3", sunday(1), WEEKLY)
    daemon.fire("t3", sunday(2), WEEKLY)
    assert reads == ["t3"]  # read once, then known again
    outcomes = {r.slot: r.outcome for r in daemon.store.list_runs(tier="t3")}
    assert outcomes == {sunday(1): Outcome.PASSED, sunday(2): Outcome.PASSED}


def test_run_rows_go_through_the_writer_under_the_stores_lock(
    five_tiers: Config,
    daemon_with_events: Callable[[Config], tuple[Daemon, list[Event]]],
) -> None:
    """The daemon's dispatcher writes run rows with the sqlite3 writer (opened at start-up),
    while a write of the full store holds the store's lock the writer waits for it."""
    daemon, _events = daemon_with_events(five_tiers)
    runs = daemon.dispatcher.store
    assert isinstance(runs, DaemonRunStore)
    daemon.start()
    writer = runs.writer()
    assert writer is not None
    written: list[str] = []
    create_run = writer.create_run

    def noted(*args: Any, **kwargs: Any) -> Any:
        written.append(str(kwargs.get("tier")))
        return create_run(*args, **kwargs)

    writer.create_run = noted  # type: ignore[method-assign]
    held = threading.Event()
    release = threading.Event()

    def hold_the_store() -> None:
        with daemon.store.begin(write=True):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_store)
    holder.start()
    assert held.wait(30)
    firing = threading.Thread(target=daemon.fire, args=("t4", sunday(0), WEEKLY))
    firing.start()
    firing.join(0.3)
    assert firing.is_alive()  # waits on the store's lock, not on SQLite's busy handler
    assert daemon.store.get_run_by_key(f"t4@{sunday(0).isoformat()}") is None
    release.set()
    holder.join(30)
    firing.join(30)
    assert written == ["t4"]
    ran = daemon.store.get_run_by_key(f"t4@{sunday(0).isoformat()}")
    assert ran is not None and ran.outcome is Outcome.PASSED
