"""The sqlite3 writer writes a run's lifecycle as the store does, and steps aside when it cannot.

The contract tests run on the full store (SQLite and PostgreSQL) and on the writer: the same
calls, the same answers. On SQLite the writer's rows are also compared with the store's, table
by table, byte for byte (datetimes, JSON, booleans as SQLAlchemy binds them).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.kernel.errors import StoreError, UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.run.protocols import RunStore
from scheduler.store import sqlite_writes, writes
from scheduler.store.base import ActiveRunExists, RunAlreadyFinal
from scheduler.store.engine import SCHEMA_VERSION, Store, TestResultRow
from scheduler.store.records import QuarantineRow
from scheduler.store.schema import test_daily, test_weekly, tests
from scheduler.store.writer import bind_datetime, open_writer

T0 = datetime(2026, 3, 1, 23, 59, 30, 123456, tzinfo=timezone.utc)


def test_generated_statements_are_current() -> None:
    """Regenerate with ``python -m scheduler.store.writes`` (then ruff format) when this fails."""
    assert sqlite_writes.SCHEMA_VERSION == SCHEMA_VERSION
    assert writes.compile_all() == {
        "CHUNK": sqlite_writes.CHUNK,
        "RUN_COLUMNS": sqlite_writes.RUN_COLUMNS,
        "STATEMENTS": sqlite_writes.STATEMENTS,
        "UPDATES": sqlite_writes.UPDATES,
    }


RESULTS = [
    TestResultRow("t.py::ok", "passed", 0.5, "hourly", peak_rss_bytes=1 << 20, owner="@ann"),
    TestResultRow("t.py::bad", "failed", 1.25, "", "boom\n<b>", attempt=0, final=False),
    TestResultRow("t.py::bad", "passed", 1.0, "", attempt=1),
    TestResultRow("t.py::skip", "skipped", 0.0, "", "no gpu", rss_method="ru_maxrss"),
    TestResultRow("t.py::ünï", "error", 0.25, "daily", "E   x", cuda_peak_bytes=5),
]


def lifecycle(store: RunStore, tier: str = "hourly", slot_minutes: int = 0) -> int:
    """What ``schedctl run`` writes: open, start, provenance, finish with results."""
    slot = T0 + timedelta(minutes=slot_minutes)
    run_id = store.create_run(
        lambda new: f"/state/runs/{new}",
        tier=tier,
        kind="pytest",
        trigger="schedule",
        slot=slot,
        idempotency_key=f"{tier}@{slot.isoformat()}",
        host="box",
        owner_pid=123,
        owner_identity="boot:1",
        markers="hourly",
        queued_at=slot,
    )
    assert run_id is not None
    store.update_run(run_id, sha="a" * 40, source={"sha": "a" * 40, "subject": "ünï"})
    store.update_run(
        run_id,
        outcome=Outcome.RUNNING,
        started_at=slot + timedelta(seconds=1),
        runner="local",
        argv=["python", "-m", "pytest", "-m", "hourly"],
        image=None,
    )
    store.finish_run(
        run_id,
        RESULTS,
        outcome=Outcome.FAILED,
        reason="1 test failed",
        exit_code=1,
        counts={"passed": 1, "failed": 0, "flaky": 1, "skipped": 1, "error": 1},
        started_at=slot + timedelta(seconds=1),
        finished_at=slot + timedelta(seconds=31),
        duration_s=30.0,
        image_id=None,
        container_id=None,
        details={"termination": "exited", "nested": {"a": [1, 2]}, "none": None},
    )
    return run_id


def test_a_run_lifecycle_reads_back_as_written(run_store: RunStore) -> None:
    run_id = lifecycle(run_store)
    record = run_store.get_run(run_id)
    assert record.outcome is Outcome.FAILED
    assert (record.tier, record.kind, record.trigger, record.host) == (
        "hourly",
        "pytest",
        "schedule",
        "box",
    )
    assert record.run_dir == f"/state/runs/{run_id}"
    assert record.slot == T0 and record.queued_at == T0
    assert record.started_at == T0 + timedelta(seconds=1)
    assert record.finished_at == T0 + timedelta(seconds=31)
    assert record.source == {"sha": "a" * 40, "subject": "ünï"}
    assert list(record.argv) == ["python", "-m", "pytest", "-m", "hourly"]
    assert record.details == {"termination": "exited", "nested": {"a": [1, 2]}, "none": None}
    assert record.counts["flaky"] == 1 and record.exit_code == 1 and record.duration_s == 30.0
    assert run_store.get_run_by_key(f"hourly@{T0.isoformat()}") == record
    assert run_store.get_run_by_key("hourly@never") is None
    assert run_store.active_runs() == []
    full = run_store.full_store()
    assert full.test_results_for(run_id, attempts=True) == RESULTS
    assert [r.nodeid for r in full.test_results_for(run_id)] == [
        "t.py::ok",
        "t.py::bad",
        "t.py::skip",
        "t.py::ünï",
    ]
    with pytest.raises(UnknownRunError):
        run_store.get_run(run_id + 1000)


def rollups(store: RunStore, table: sa.Table) -> list[tuple[Any, ...]]:
    """``table``'s rows by nodeid: period, tier, counts, durations, peak RSS, run ids."""
    period = table.c.day if "day" in table.c else table.c.week
    query = (
        sa.select(
            tests.c.nodeid,
            period,
            table.c.tier,
            table.c.runs,
            table.c.passed,
            table.c.failed,
            table.c.flaky,
            table.c.skipped,
            table.c.duration_sum,
            table.c.duration_max,
            table.c.peak_rss_max,
            table.c.first_run_id,
            table.c.last_run_id,
        )
        .join(tests, tests.c.id == table.c.test_id)
        .order_by(tests.c.nodeid, period)
    )
    with store.full_store().engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_a_runs_rollups_count_each_tests_final_attempt_once(run_store: RunStore) -> None:
    """Per test its final attempt, the last one reported should a run report two; a second
    run the same day and week adds to the same rows."""
    first = lifecycle(run_store)  # finished 2026-03-02 00:00:01, a Monday
    second = run_store.create_run(tier="hourly", trigger="manual", queued_at=T0)
    assert second is not None
    run_store.finish_run(
        second,
        [
            TestResultRow("t.py::ok", "failed", 2.0, peak_rss_bytes=1 << 10),
            TestResultRow("t.py::dup", "failed", 2.0),
            TestResultRow("t.py::dup", "passed", 3.0),  # reported twice, both final: the last
        ],
        outcome=Outcome.FAILED,
        finished_at=T0 + timedelta(hours=1),
    )
    day, week = "2026-03-02", "2026-03-02"
    expected = [
        ("t.py::bad", day, "hourly", 1, 1, 0, 0, 0, 1.0, 1.0, None, first, first),
        ("t.py::dup", day, "hourly", 1, 1, 0, 0, 0, 3.0, 3.0, None, second, second),
        ("t.py::ok", day, "hourly", 2, 1, 1, 0, 0, 2.5, 2.0, 1 << 20, first, second),
        ("t.py::skip", day, "hourly", 1, 0, 0, 0, 1, 0.0, 0.0, None, first, first),
        ("t.py::ünï", day, "hourly", 1, 0, 1, 0, 0, 0.25, 0.25, None, first, first),
    ]
    assert rollups(run_store, test_daily) == expected
    assert rollups(run_store, test_weekly) == [(n, week, *rest) for n, _d, *rest in expected]


def test_the_slot_key_and_the_active_run_are_kept(run_store: RunStore) -> None:
    first = run_store.create_run(tier="hourly", trigger="schedule", idempotency_key="hourly@1")
    assert first is not None
    assert (
        run_store.create_run(tier="hourly", trigger="schedule", idempotency_key="hourly@1") is None
    )
    with pytest.raises(ActiveRunExists):
        run_store.create_run(tier="hourly", trigger="manual")
    assert [r.id for r in run_store.active_runs("hourly")] == [first]
    assert run_store.active_runs("daily") == []
    done = run_store.finish_run(first, outcome=Outcome.PASSED)
    assert done.outcome is Outcome.PASSED and done.finished_at is not None
    with pytest.raises(RunAlreadyFinal):
        run_store.finish_run(first, outcome=Outcome.FAILED)
    assert run_store.get_run(first).outcome is Outcome.PASSED
    final_from_birth = run_store.create_run(
        tier="hourly",
        trigger="schedule",
        outcome=Outcome.SKIPPED_OVERLAP,
        reason="busy",
        queued_at=T0,
        started_at=T0,
        finished_at=T0,
        duration_s=0.0,
    )
    assert final_from_birth is not None
    assert run_store.get_run(final_from_birth).reason == "busy"


def test_dead_leases_are_released(run_store: RunStore) -> None:
    full = run_store.full_store()
    run_id = run_store.create_run(tier="gpu", trigger="manual")
    assert run_id is not None
    assert full.acquire_leases(run_id, "gpu", [(0, "GPU-0")])
    assert run_store.release_dead_leases() == 0  # its run is active
    run_store.finish_run(run_id, outcome=Outcome.INTERRUPTED)
    assert run_store.release_dead_leases() == 1
    assert full.active_leases() == []


def test_quarantines_read_as_the_store_reads_them(run_store: RunStore) -> None:
    full = run_store.full_store()
    full.quarantine_add(
        QuarantineRow(nodeid="t.py::ok", reason="flaky on GPUs", created_at=T0, owner="@ann")
    )
    assert run_store.quarantine_list() == full.quarantine_list()
    assert [q.nodeid for q in run_store.quarantine_list()] == ["t.py::ok"]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        names = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if row[0] != "schedctl_meta"
        ]
        return {name: sorted(conn.execute(f"SELECT * FROM {name}"), key=repr) for name in names}
    finally:
        conn.close()


def test_the_writer_stores_exactly_what_the_store_stores(tmp_path: Path) -> None:
    """Same calls on two files: every table the same, byte for byte."""
    by_store = Store(tmp_path / "a" / "schedctl.db")
    Store(tmp_path / "b" / "schedctl.db").close()
    by_writer = open_writer(tmp_path / "b" / "schedctl.db")
    assert by_writer is not None
    for store in (by_store, by_writer):
        lifecycle(store)
        lifecycle(store, slot_minutes=60)  # the next day: rollups of a second day and week
        lifecycle(store, tier="daily", slot_minutes=60 * 24 * 7)
        bare = store.create_run(tier="weekly", trigger="manual", queued_at=T0)
        assert bare is not None
        store.finish_run(bare, outcome=Outcome.INFRA_ERROR, finished_at=T0, counts={})
    written, expected = dump(tmp_path / "b" / "schedctl.db"), dump(tmp_path / "a" / "schedctl.db")
    # The comparison compares rows: results are staged until a merge.
    assert expected["test_results_staged"] and expected["test_weekly"]
    assert not expected["test_results"]
    assert written == expected
    # The merge moves the same rows on both.
    assert (
        by_store.merge_staged() == by_writer.merge_staged() == len(expected["test_results_staged"])
    )
    by_store.close()
    by_writer.close()
    written, expected = dump(tmp_path / "b" / "schedctl.db"), dump(tmp_path / "a" / "schedctl.db")
    assert expected["test_results"] and not expected["test_results_staged"]
    assert written == expected


@pytest.mark.parametrize("json_each", [True, False], ids=["named", "found"])
def test_a_test_reported_many_times_rolls_up_as_the_store_rolls_it_up(
    tmp_path: Path, json_each: bool
) -> None:
    """The writer names the final rows a later final row supersedes (the store looks for them):
    a test reported final three times, out of order with others, counts its last report once."""
    repeated = [
        TestResultRow("t.py::dup", "failed", 1.0),
        TestResultRow("t.py::ok", "passed", 0.5),
        TestResultRow("t.py::dup", "passed", 2.0, attempt=1, final=False),
        TestResultRow("t.py::dup", "skipped", 3.0, attempt=1),
        TestResultRow("t.py::other", "failed", 0.25, final=False),
        TestResultRow("t.py::dup", "error", 4.0),  # the last final report of t.py::dup
        TestResultRow("t.py::other", "passed", 0.75, attempt=1),
    ]
    by_store = Store(tmp_path / "a" / "schedctl.db")
    Store(tmp_path / "b" / "schedctl.db").close()
    by_writer = open_writer(tmp_path / "b" / "schedctl.db")
    assert by_writer is not None
    assert by_writer._rollup_suffix == "_skipping"  # this SQLite has json_each
    if not json_each:  # as on a SQLite built without it: the store's own upserts
        by_writer._rollup_suffix = ""
    for store in (by_store, by_writer):
        for results in (repeated, repeated[::-1], RESULTS):
            run_id = store.create_run(tier="hourly", trigger="manual", queued_at=T0)
            assert run_id is not None
            store.finish_run(run_id, results, outcome=Outcome.FAILED, finished_at=T0)
    assert rollups(by_writer, test_daily)[0][:8] == (
        "t.py::bad",
        "2026-03-01",
        "hourly",
        1,
        1,
        0,
        0,
        0,
    )
    dup = [row for row in rollups(by_writer, test_daily) if row[0] == "t.py::dup"]
    # error (the last of the first run), failed (the last of the reversed run)
    assert dup == [("t.py::dup", "2026-03-01", "hourly", 2, 0, 2, 0, 0, 5.0, 4.0, None, 1, 2)]
    by_store.close()
    by_writer.close()
    assert dump(tmp_path / "b" / "schedctl.db") == dump(tmp_path / "a" / "schedctl.db")


def test_concurrent_finishes_write_once(tmp_path: Path) -> None:
    Store(tmp_path / "schedctl.db").close()
    writer = open_writer(tmp_path / "schedctl.db")
    assert writer is not None
    run_id = writer.create_run(tier="hourly", trigger="manual")
    assert run_id is not None
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def finish() -> None:
        start.wait()
        try:
            writer.finish_run(run_id, RESULTS, outcome=Outcome.PASSED)
            outcomes.append("finished")
        except RunAlreadyFinal:
            outcomes.append("already final")

    threads = [threading.Thread(target=finish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["already final"] * 3 + ["finished"]
    assert len(writer.test_results_for(run_id, attempts=True)) == len(RESULTS)
    writer.close()


def test_the_full_store_opens_what_the_writer_cannot(tmp_path: Path) -> None:
    path = tmp_path / "schedctl.db"
    assert open_writer(path) is None  # no file yet: the store creates it
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schedctl_meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    assert open_writer(path) is None  # another version: the store migrates or refuses it
    (tmp_path / "junk.db").write_text("not a database at all, just text " * 100)
    assert open_writer(tmp_path / "junk.db") is None


def test_an_unknown_column_is_named(tmp_path: Path) -> None:
    Store(tmp_path / "schedctl.db").close()
    writer = open_writer(tmp_path / "schedctl.db")
    assert writer is not None
    with pytest.raises(StoreError, match="colour"):
        writer.create_run(tier="hourly", trigger="manual", colour="red")
    run_id = writer.create_run(tier="hourly", trigger="manual")
    assert run_id is not None
    with pytest.raises(StoreError, match="colour"):
        writer.update_run(run_id, colour="red")
    writer.close()


def test_datetimes_bind_as_sqlalchemy_binds_them() -> None:
    assert bind_datetime(None) is None
    assert bind_datetime(T0) == "2026-03-01 23:59:30.123456"
    assert bind_datetime(datetime(2026, 1, 2)) == "2026-01-02 00:00:00.000000"
    with pytest.raises(TypeError):
        bind_datetime("2026-01-02")
