"""Start-up catch-up without a persistent job store: slots due while the daemon was down are
found from the store's last recorded slot, then run or recorded missed by slot planning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from runners.fake import FakeBehaviour
from scheduler.config import Config
from scheduler.daemon.scheduler import Daemon
from scheduler.kernel.outcome import Outcome
from scheduler.run.ledger import slot_key
from scheduler.store.engine import RunRecord, Store
from tests.conftest import quiet_hourly, tier
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for


def start_after_downtime(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher, **tier_options: object
) -> tuple[Daemon, list[datetime]]:
    """A daemon whose hourly tier last recorded a slot 3 h before the latest one."""
    schedule, latest = quiet_hourly(datetime.now(timezone.utc))
    config = make_config(tiers={"hourly": tier(schedule=schedule, **tier_options)})
    dispatcher = fake_dispatcher(config, FakeBehaviour())
    daemon = Daemon(config, dispatcher.store, dispatcher)
    history = latest - timedelta(hours=3)
    record_slot(daemon.store, "hourly", history)
    return daemon, [history + timedelta(hours=h) for h in (1, 2, 3)]


def record_slot(store: Store, tier: str, slot: datetime) -> None:
    """The passed row a scheduled fire of ``slot`` left, keyed as the ledger keys it."""
    store.create_run(
        tier=tier, trigger="schedule", kind="pytest", slot=slot,
        idempotency_key=slot_key(tier, slot), outcome=Outcome.PASSED,
    )  # fmt: skip


def settled(daemon: Daemon, count: int) -> list[RunRecord]:
    def done() -> list[RunRecord] | None:
        rows = [r for r in daemon.store.list_runs(tier="hourly") if r.outcome.is_final]
        return rows if len(rows) >= count else None

    return wait_for(done, 30, f"{count} final hourly rows")


def test_backlog_within_the_grace_runs_newest_max_catchup(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    daemon, slots = start_after_downtime(
        make_config, fake_dispatcher, misfire_grace=5 * 3600, max_catchup=1
    )
    daemon.start()
    try:
        rows = {r.slot: r.outcome for r in settled(daemon, 4)}
    finally:
        daemon.stop(grace_s=1)
    assert rows[slots[2]] is Outcome.PASSED
    assert rows[slots[0]] is Outcome.MISSED
    assert rows[slots[1]] is Outcome.MISSED


def test_backlog_past_the_grace_is_all_missed(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    daemon, slots = start_after_downtime(make_config, fake_dispatcher, misfire_grace=1)
    daemon.start()
    try:
        rows = {r.slot: r.outcome for r in settled(daemon, 4)}
    finally:
        daemon.stop(grace_s=1)
    assert {rows[s] for s in slots} == {Outcome.MISSED}


def test_a_fresh_store_catches_nothing_up(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    config = make_config(tiers={"hourly": tier()})
    dispatcher = fake_dispatcher(config, FakeBehaviour())
    daemon = Daemon(config, dispatcher.store, dispatcher)
    daemon.start()
    try:
        assert daemon.scheduler.get_job("catch-up:hourly") is None
        assert daemon.store.list_runs() == []
    finally:
        daemon.stop(grace_s=1)
