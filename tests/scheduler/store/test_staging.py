"""Run-ordered staging: a finish writes into ``test_results_staged``, readers see it through
``test_results_all`` at once, and the merge moves it into ``test_results`` (idempotent, in one
transaction), with the same answers before and after, on every engine and through the writer."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import SCHEMA_VERSION, Store, TestResultRow
from scheduler.store.writer import SqliteWriter, open_writer

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
SCHEMA_V6 = Path(__file__).with_name("schema_v6.sql")


def _results(run: int) -> list[TestResultRow]:
    return [
        TestResultRow("t.py::ok", "passed", 0.5 + run, "hourly", peak_rss_bytes=1 << 20),
        TestResultRow("t.py::flaky", "failed", 1.25, "", "boom", attempt=0, final=False),
        TestResultRow("t.py::flaky", "passed" if run % 2 else "failed", 1.0, "", attempt=1),
        TestResultRow("t.py::skip", "skipped", 0.0, "", "no gpu", rss_method="ru_maxrss"),
        TestResultRow(f"t.py::new{run}", "passed", 0.25 * run, "", owner="@ann"),
    ]


def _finish_runs(store: Any, count: int, first: int = 0) -> list[int]:
    ids = []
    for run in range(first, first + count):
        slot = T0 + timedelta(hours=run)
        run_id = store.create_run(tier="hourly", trigger="schedule", slot=slot, queued_at=slot)
        assert run_id is not None
        store.update_run(run_id, outcome=Outcome.RUNNING, started_at=slot)
        outcome = Outcome.PASSED if run % 2 else Outcome.FAILED
        store.finish_run(run_id, _results(run), outcome=outcome, finished_at=slot)
        ids.append(run_id)
    return ids


def _answers(full: Store, run_ids: list[int]) -> dict[str, Any]:
    """What the readers answer: a run's results, attempts, flaky verdicts, durations, tallies,
    the web's slowest tests."""
    nodeids = ["t.py::ok", "t.py::flaky", "t.py::skip", "t.py::new1"]
    return {
        "results": [full.test_results_for(i, attempts=True) for i in run_ids],
        "final": [full.test_results_for(i) for i in run_ids],
        "attempts": sorted(full.test_attempts(nodeids, from_run_id=0), key=repr),
        "newest": full.test_attempts(["t.py::flaky"], tier="hourly", newest=3),
        "verdicts": full.verdict_runs(nodeids, tier=None, from_run_id=0),
        "durations": full.recent_durations(nodeids, tier=None, from_run_id=0, limit=3),
        "percentiles": full.recent_percentiles(
            nodeids, tier="hourly", from_run_id=0, limit=3, fractions=(0.5, 0.9)
        ),
        "tallies": full.test_tally_rows(run_ids),
        "slowest": full.slowest_tests("hourly", 2),
        "slowest_in": full.slowest_in_runs(run_ids, 2),
    }


def _count(full: Store, table: str) -> int:
    with full.begin() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0)


def test_results_read_the_same_staged_and_merged(run_store: Any) -> None:
    run_ids = _finish_runs(run_store, 4)
    full = run_store.full_store() if isinstance(run_store, SqliteWriter) else run_store
    staged = _answers(full, run_ids)
    assert _count(full, "test_results_staged") == 4 * 5
    assert _count(full, "test_results") == 0
    assert [len(r) for r in staged["results"]] == [5] * 4
    assert staged["durations"]["t.py::ok"] == [3.5, 2.5, 1.5]
    assert all(staged.values()), staged  # every reader found rows: the comparison compares

    assert run_store.merge_staged() == 4 * 5
    assert _count(full, "test_results_staged") == 0
    assert _count(full, "test_results") == 4 * 5
    assert _answers(full, run_ids) == staged
    assert run_store.merge_staged() == 0  # idempotent: nothing left to move

    # Half merged: older runs in test_results, the newest staged -- still the same answers.
    more = _finish_runs(run_store, 2, first=4)
    both = _answers(full, run_ids + more)
    assert _count(full, "test_results_staged") == 2 * 5
    assert run_store.merge_staged() == 2 * 5
    assert _answers(full, run_ids + more) == both


def test_a_merge_after_a_partial_copy_takes_what_is_left(sqlite_store: Store) -> None:
    """Rows already in test_results (as a crash between two separate halves would leave
    them) are left as they are; the merge still empties staging and adds the rest."""
    run_ids = _finish_runs(sqlite_store, 2)
    before = _answers(sqlite_store, run_ids)
    with sqlite_store.begin(write=True) as conn:
        conn.exec_driver_sql(
            "INSERT INTO test_results SELECT test_id, run_id, attempt, seq, final, outcome, "
            "duration_s, markers, message, peak_rss_bytes, rss_method, cuda_peak_bytes, owner "
            f"FROM test_results_staged WHERE run_id = {run_ids[0]}"
        )
    assert sqlite_store.merge_staged() == 2 * 5
    assert _count(sqlite_store, "test_results") == 2 * 5
    assert _count(sqlite_store, "test_results_staged") == 0
    assert _answers(sqlite_store, run_ids) == before


def test_a_schema_6_store_migrates_to_staging_without_moving_a_row(tmp_path: Path) -> None:
    """A store written by schema 6 (the results clustered by test, no staging) gains the staging
    table and the view; its results stay in test_results and read as before; the next finish is
    staged and read beside them."""
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V6.read_text())
    conn.execute("INSERT INTO schedctl_meta (key, value) VALUES ('schema_version', '6')")
    conn.execute("INSERT INTO tests (id, nodeid) VALUES (1, 't.py::old'), (2, 't.py::older')")
    for run_id in (1, 2, 3):
        conn.execute(
            'INSERT INTO runs (id, tier, kind, "trigger", outcome, reason, source, gpus, argv, '
            "counts, details, queued_at, finished_at) VALUES (?, 'hourly', 'pytest', 'manual', "
            "'passed', '', '{}', '[]', '[]', '{}', '{}', '2026-03-01 10:00:00.000000', "
            "'2026-03-01 11:00:00.000000')",
            (run_id,),
        )
        for seq, test_id in enumerate((1, 2)):
            conn.execute(
                "INSERT INTO test_results (test_id, run_id, attempt, seq, final, outcome, "
                "duration_s, markers) VALUES (?, ?, 0, ?, 1, 'passed', ?, '')",
                (test_id, run_id, seq, run_id + 0.5),
            )
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 7
        assert _count(store, "test_results") == 6
        assert _count(store, "test_results_staged") == 0
        assert [r.nodeid for r in store.test_results_for(2)] == ["t.py::old", "t.py::older"]
        assert store.recent_durations(["t.py::old"], tier=None, from_run_id=0, limit=2) == {
            "t.py::old": [3.5, 2.5]
        }
    finally:
        store.close()
    writer = open_writer(path)  # the writer speaks the migrated schema
    assert writer is not None
    try:
        (run_id,) = _finish_runs(writer, 1, first=5)
        full = writer.full_store()
        assert _count(full, "test_results_staged") == 5
        assert len(full.test_attempts(["t.py::old", "t.py::ok"], from_run_id=0)) == 4
        assert writer.merge_staged() == 5
        assert _count(full, "test_results") == 6 + 5
    finally:
        writer.close()
