"""What a fire writes, in as few steps as it can: the row and its run dir in one transaction,
and the statements rehearsed at start-up without leaving a trace."""

from __future__ import annotations

from datetime import datetime, timezone

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store

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
