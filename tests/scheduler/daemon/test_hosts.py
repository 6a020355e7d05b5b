"""Several daemons on one store: heartbeats, and a survivor recording a dead daemon's run once.

Runs on both engines (a SQLite file is a store two processes can share on one box too); clocks
are injected, so "60 s later" costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.config import Config, config_from_mapping
from scheduler.daemon.hosts import HostWatch, heartbeat_key
from scheduler.kernel.events import EventBus, RunFinished
from scheduler.kernel.outcome import Outcome
from scheduler.run.ledger import RunLedger
from scheduler.store.engine import Store
from tests.conftest import SUITE
from tests.pg import PgCluster

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two handles (two daemons) on one store."""
    if request.param == "sqlite":
        yield Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url: str = request.getfixturevalue("pg_url")
    a, b = Store(url, password=cluster.password), Store(url, password=cluster.password)
    yield a, b
    a.close()
    b.close()


def watch(store: Store, host: str, clock: Clock, finished: list[RunFinished]) -> HostWatch:
    events = EventBus([lambda e: finished.append(e) if isinstance(e, RunFinished) else None])
    return HostWatch(
        store, RunLedger(store, events, clock), host=host, identity=f"boot:{host}", pid=1,
        interval_s=5, timeout_s=60, clock=clock,
    )  # fmt: skip


def owned_run(store: Store, host: str, tier: str = "hourly") -> int:
    run_id = store.create_run(
        tier=tier, trigger="schedule", host=host, owner_pid=1, owner_identity=f"boot:{host}",
        outcome=Outcome.RUNNING,
    )  # fmt: skip
    assert run_id is not None
    return run_id


def test_a_dead_daemons_run_is_interrupted_once_by_one_survivor(
    stores: tuple[Store, Store],
) -> None:
    store_a, store_b = stores
    clock = Clock()
    finished: list[RunFinished] = []
    pairs = ((store_a, "a"), (store_b, "b"), (store_b, "c"))
    dead, b, c = (watch(s, h, clock, finished) for s, h in pairs)
    for w in (dead, b, c):
        w.beat()
    run_id = owned_run(store_a, "a")
    clock.now += timedelta(seconds=59)
    b.beat()
    c.beat()
    assert b.sweep() == [] and c.sweep() == []  # within the timeout: alive
    assert store_b.get_run(run_id).outcome is Outcome.RUNNING
    clock.now += timedelta(seconds=2)  # a's last beat is 61 s old
    b.beat()
    c.beat()
    assert b.sweep() == [run_id]
    assert c.sweep() == []  # already recorded: never twice
    record = store_b.get_run(run_id)
    assert record.outcome is Outcome.INTERRUPTED
    assert "host a stopped sending heartbeats" in record.reason and "by host b" in record.reason
    assert [e.run_id for e in finished] == [run_id]  # published once
    assert heartbeat_key("a", "boot:a", 1) not in store_b.meta_with_prefix("heartbeat:")
    # The tier is free again for the survivors.
    assert owned_run(store_b, "b") is not None


def test_runs_without_a_heartbeat_are_left_to_their_host(stores: tuple[Store, Store]) -> None:
    """A foreground `schedctl run` beats no heartbeat: its own host's recovery judges it."""
    store_a, store_b = stores
    clock = Clock()
    b = watch(store_b, "b", clock, [])
    b.beat()
    run_id = owned_run(store_a, "a")
    clock.now += timedelta(hours=5)
    b.beat()
    assert b.sweep() == []
    assert store_a.get_run(run_id).outcome is Outcome.RUNNING


def test_a_live_daemon_keeps_its_runs(stores: tuple[Store, Store]) -> None:
    store_a, store_b = stores
    clock = Clock()
    a, b = watch(store_a, "a", clock, []), watch(store_b, "b", clock, [])
    run_id = owned_run(store_a, "a")
    for _ in range(30):  # ten minutes of beats
        clock.now += timedelta(seconds=20)
        a.beat()
        b.beat()
        assert b.sweep() == []
    assert store_a.get_run(run_id).outcome is Outcome.RUNNING


def test_a_clean_stop_removes_the_heartbeat(stores: tuple[Store, Store]) -> None:
    store_a, _ = stores
    a = watch(store_a, "a", Clock(), [])
    a.start(None)
    assert a.key in store_a.meta_with_prefix("heartbeat:")
    a.stop()
    assert a.key not in store_a.meta_with_prefix("heartbeat:")


def test_tiers_pinned_to_hosts_fire_only_there() -> None:
    data = {
        "project": {"path": str(SUITE)},
        "tiers": {"gpu": {"schedule": "0 * * * *", "hosts": ["box-1"]}, "cpu": {}},
        "store": "postgresql://schedctl@db.lab/schedctl",
    }
    on_1 = config_from_mapping({**data, "host": "box-1"})
    on_2 = config_from_mapping({**data, "host": "box-2"})
    assert (on_1.fires_here("gpu"), on_2.fires_here("gpu")) == (True, False)
    assert on_1.fires_here("cpu") and on_2.fires_here("cpu")
    assert on_1.store.url == "postgresql://schedctl@db.lab/schedctl"


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("postgresql://u:pw@db/x", "the password does not belong in the URL"),
        ("mysql://u@db/x", "expected postgresql://"),
        ("postgresql://u@db", "expected postgresql://user@host"),
        ({"url": "postgresql://u@db/x", "heartbeat": 30, "host_timeout": 60}, "3 heartbeats"),
    ],
)
def test_bad_store_settings_name_the_key(store: object, message: str) -> None:
    from scheduler.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as caught:
        config_from_mapping({"project": {"path": str(SUITE)}, "tiers": {"h": {}}, "store": store})
    assert "store" in str(caught.value)


def test_retention_on_a_shared_store_prunes_only_this_hosts_runs(
    pg_store: Store, make_config: Callable[..., Config]
) -> None:
    """Run dirs live on the disk of the host that ran them: box-a never marks box-b's pruned."""
    from scheduler.daemon.retention import Pruner

    config = make_config(store=pg_store.url, host="box-a")
    ids = {}
    for host in ("box-a", "box-b"):
        run_id = pg_store.create_run(tier=f"t-{host}", trigger="manual", host=host)
        assert run_id is not None
        run_dir = config.runs_dir / str(run_id)
        run_dir.mkdir(parents=True)
        pg_store.update_run(run_id, run_dir=str(run_dir))
        pg_store.finish_run(run_id, outcome=Outcome.PASSED, finished_at=T0)
        ids[host] = run_id
    report = Pruner(config, pg_store, clock=lambda: T0 + timedelta(days=60)).prune()
    assert report.runs == [ids["box-a"]]
    assert pg_store.get_run(ids["box-b"]).pruned_at is None


def test_config_check_warns_about_a_tier_pinned_elsewhere(
    write_config: Callable[..., Path],
) -> None:
    from click.testing import CliRunner

    from scheduler.cli import cli

    config = write_config(
        host="box-2", tiers={"gpu": {"schedule": "0 * * * *", "hosts": ["box-1"]}}
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "tier gpu: pinned to hosts box-1; this daemon (host box-2) does not fire it" in (
        result.stderr
    )
