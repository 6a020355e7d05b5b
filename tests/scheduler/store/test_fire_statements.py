"""What a fire and a finish write, in as few steps as they can: the row and its run dir in one
transaction, the statements rehearsed at start-up without leaving a trace, a test's id looked up
once per store."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from sqlalchemy.exc import IntegrityError

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store, TestResultRow

ROW = {
    "tier": "hourly",
    "kind": "pytest",
    "trigger": "schedule",
    "slot": datetime(2026, 1, 5, 3, 0, tzinfo=timezone.utc),
    "idempotency_key": "hourly@2026-01-05T03:00:00+00:00",
    "ref": None,
    "host": "box",
    "owner_pid": 1,
    "owner_identity": None,
    "markers": "hourly",
}
STARTED = {"outcome": Outcome.RUNNING, "started_at": datetime.now(timezone.utc), "argv": []}


def test_create_run_names_its_run_dir_from_its_id(store: Store) -> None:
    run_id = store.create_run(lambda new: f"/state/runs/{new}", **ROW)
    assert run_id is not None
    record = store.get_run(run_id)
    assert record.run_dir == f"/state/runs/{run_id}"
    assert record.outcome is Outcome.QUEUED
    assert record.slot == ROW["slot"]
    # A second row for the slot: none, and its run dir is never asked for.
    asked: list[int] = []
    assert store.create_run(lambda new: str(asked.append(new)), **ROW) is None
    assert asked == []


def test_a_rehearsal_leaves_no_trace(store: Store) -> None:
    store.rehearse_run(ROW, STARTED)
    assert store.max_run_id() == 0
    assert store.active_runs() == []
    assert store.last_slot("hourly") is None
    # Nothing held: the real row of that slot goes in, under the first id.
    run_id = store.create_run(**ROW)
    assert run_id == 1
    # With the tier busy the rehearsal's insert fails inside it, and still nothing changes.
    store.rehearse_run({**ROW, "idempotency_key": None, "slot": None}, STARTED)
    assert [r.id for r in store.active_runs()] == [1]
    assert store.max_run_id() == 1


def test_update_run_writes_only_the_columns_given(store: Store) -> None:
    run_id = store.create_run(**ROW)
    assert run_id is not None
    store.update_run(run_id, details={"requeue_of": 7})
    store.update_run(run_id, **STARTED, runner="local", image=None)
    record = store.get_run(run_id)
    assert record.details == {"requeue_of": 7}
    assert record.outcome is Outcome.RUNNING and record.runner == "local"
    assert record.markers == "hourly" and record.argv == []


def finished(store: Store, nodeids: list[str]) -> int:
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    rows = [TestResultRow(n, "passed", 0.1) for n in nodeids]
    store.finish_run(run_id, rows, outcome=Outcome.PASSED)
    return run_id


def test_remembered_test_ids_stay_right_beside_another_writer(store: Store) -> None:
    """A store keeps the ids of the tests it wrote; another store on the same database adds
    tests in between, and every run still reads back its own nodeids, in order."""
    other = Store(store.url, password=store._password) if store.is_postgres else Store(store.path)
    try:
        finished(store, ["t.py::a", "t.py::b"])
        finished(other, ["t.py::c", "t.py::a"])
        third = finished(store, ["t.py::c", "t.py::b", "t.py::d"])
        fourth = finished(other, ["t.py::d", "t.py::a"])
    finally:
        other.close()
    assert [r.nodeid for r in store.test_results_for(third)] == ["t.py::c", "t.py::b", "t.py::d"]
    assert [r.nodeid for r in store.test_results_for(fourth)] == ["t.py::d", "t.py::a"]


def test_ids_of_a_rolled_back_finish_are_not_remembered(sqlite_store: Store) -> None:
    """A finish that fails after adding its new tests rolls them back: the next run adds them
    afresh instead of pointing at ids that were never committed."""
    store = sqlite_store
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    # A result without an outcome breaks NOT NULL at its insert, after its test was added.
    bad = TestResultRow("t.py::new", None, 0.1)  # type: ignore[arg-type]
    with pytest.raises((IntegrityError, sqlite3.IntegrityError)):  # the driver cursor's own
        store.finish_run(run_id, [bad], outcome=Outcome.PASSED)
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM tests").fetchone()[0] == 0
    finally:
        conn.close()
    store.finish_run(run_id, outcome=Outcome.ERROR)
    later = finished(store, ["t.py::new"])
    assert [r.nodeid for r in store.test_results_for(later)] == ["t.py::new"]


def test_fire_reads_answer_as_last_slot_and_active_runs_do(store: Store) -> None:
    """A fire's one read gives what the two separate reads give, before and after rows."""
    assert store.fire_reads("hourly") == (None, [])
    done = store.create_run(**ROW)
    assert done is not None
    store.finish_run(done, outcome=Outcome.PASSED)
    later = datetime(2026, 1, 5, 4, 0, tzinfo=timezone.utc)
    running = store.create_run(**{**ROW, "slot": later, "idempotency_key": "hourly@4"})
    other = store.create_run(**{**ROW, "tier": "daily", "slot": None, "idempotency_key": None})
    last, actives = store.fire_reads("hourly")
    assert last == later == store.last_slot("hourly")
    assert [r.id for r in actives] == [r.id for r in store.active_runs()] == [other, running]
