"""The daemon's run store: run rows through the sqlite3 writer, the rest through the store."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from scheduler.kernel.outcome import Outcome
from scheduler.store.daemon_store import DaemonRunStore, daemon_run_store
from scheduler.store.engine import Store


def test_run_rows_go_through_the_writer_and_read_back_through_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    runs = daemon_run_store(store)
    assert isinstance(runs, DaemonRunStore)
    runs.rehearse_run({}, {})  # opens the writer: nothing is written
    writer = runs.writer()
    assert writer is not None
    assert store.max_run_id() == 0
    slot = datetime(2027, 1, 3, 3, 0, tzinfo=timezone.utc)
    row = {
        "tier": "weekly", "kind": "pytest", "trigger": "schedule", "slot": slot,
        "idempotency_key": f"weekly@{slot.isoformat()}", "host": "box", "owner_pid": 1,
    }  # fmt: skip
    run_id = runs.create_run(lambda new: f"/state/runs/{new}", **row)
    assert run_id is not None
    assert runs.create_run(**row) is None  # the slot's key: once
    runs.update_run(run_id, outcome=Outcome.RUNNING, argv=["python3", "-m", "pytest"])
    record = store.get_run(run_id)
    # read back through the writer's connection: what the store answers
    assert runs.get_run(run_id) == record
    assert runs.get_run_by_key(str(row["idempotency_key"])) == record
    assert runs.active_runs() == store.active_runs() == [record]
    assert runs.active_runs("daily") == []
    assert runs.quarantine_list() == store.quarantine_list()
    assert (record.outcome, record.run_dir, record.argv) == (
        Outcome.RUNNING, f"/state/runs/{run_id}", ["python3", "-m", "pytest"],
    )  # fmt: skip
    done = runs.finish_run(run_id, outcome=Outcome.PASSED, reason="")
    assert done.outcome is Outcome.PASSED
    assert store.get_run(run_id).outcome is Outcome.PASSED
    assert runs.full_store() is store
    assert runs.active_runs() == []
    assert runs.max_run_id() == run_id  # what the writer does not do: the store's
    runs.close()


def test_a_postgres_store_is_used_as_it_is(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert isinstance(daemon_run_store(store), DaemonRunStore)
    store.is_postgres = True  # what daemon_run_store asks; no server needed
    assert daemon_run_store(store) is store


def test_a_finish_through_the_daemon_merges_its_staged_results(tmp_path: Path) -> None:
    """The daemon merges after each finish (nobody waits on it): its results end in
    test_results, staging empty, and they read as the finish wrote them."""
    from scheduler.store.engine import TestResultRow

    store = Store(tmp_path / "s.db")
    runs = daemon_run_store(store)
    assert runs.full_store() is store
    run_id = runs.create_run(tier="hourly", kind="pytest", trigger="manual")
    assert run_id is not None
    results = [TestResultRow(f"t.py::test_{i}", "passed", 0.5) for i in range(20)]
    runs.finish_run(run_id, results, outcome=Outcome.PASSED)
    with store.begin() as conn:
        staged = conn.exec_driver_sql("SELECT count(*) FROM test_results_staged").scalar()
        merged = conn.exec_driver_sql("SELECT count(*) FROM test_results").scalar()
    assert (staged, merged) == (0, 20)
    assert [r.nodeid for r in store.test_results_for(run_id)] == [r.nodeid for r in results]
    assert runs.merge_staged() == 0
    runs.close()
