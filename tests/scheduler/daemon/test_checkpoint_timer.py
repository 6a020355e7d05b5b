"""The daemon checkpoints the SQLite WAL on its timer, since inserts never do."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.config import Config
from scheduler.daemon.scheduler import Daemon
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import TestResultRow
from tests.conftest import tier
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for


def test_daemon_checkpoints_the_wal_on_its_timer(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    config = make_config(tiers={"hourly": tier()})
    d = fake_dispatcher(config)
    store = d.store
    daemon = Daemon(config, store, d, checkpoint_interval_s=0.05)
    daemon.start()
    try:
        store.checkpoint()
        database = store.path.stat().st_size
        run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
        assert run_id is not None
        rows = [TestResultRow(f"t.py::test_{i}", "passed", 0.1) for i in range(300)]
        store.finish_run(run_id, rows, outcome=Outcome.PASSED)
        # The results went to the WAL; the timer copies them into the database file.
        wait_for(
            lambda: store.path.stat().st_size > database,
            30,
            "the daemon's checkpoint to copy the WAL into the database file",
        )
    finally:
        daemon.stop(grace_s=1)
    assert not any(t.is_alive() for t in daemon._timers)


def test_daemon_merges_staged_results_on_its_timer(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A finish stages its results (store/staging.py); the timer moves them into test_results,
    and the run reads the same before and after."""
    config = make_config(tiers={"hourly": tier()})
    d = fake_dispatcher(config)
    store = d.store

    def count(table: str) -> int:
        with store.begin() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0)

    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    rows = [TestResultRow(f"t.py::test_{i}", "passed", 0.1) for i in range(30)]
    store.finish_run(run_id, rows, outcome=Outcome.PASSED)
    staged = store.test_results_for(run_id)
    assert (count("test_results_staged"), count("test_results")) == (30, 0)
    daemon = Daemon(config, store, d, checkpoint_interval_s=0.05)
    daemon.start()
    try:
        wait_for(
            lambda: count("test_results_staged") == 0,
            30,
            "the daemon's timer to merge the staged results",
        )
    finally:
        daemon.stop(grace_s=1)
    assert count("test_results") == 30
    assert store.test_results_for(run_id) == staged
