"""The SQLite WAL: inserts never checkpoint it; ``Store.checkpoint`` (the daemon's timer, the end
of a CLI run) copies it back, after which it starts over instead of growing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store, TestResultRow
from scheduler.store.pragmas import WAL_AUTOCHECKPOINT_PAGES

TESTS = 500


def insert_run(store: Store, run: int) -> None:
    """A finished 500-test run: a result lands on a page of its own test's range."""
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    rows = [
        TestResultRow(f"tests/test_mod{i % 37}.py::test_{i}", "passed", 0.01 * i + run)
        for i in range(TESTS)
    ]
    store.finish_run(run_id, rows, outcome=Outcome.PASSED)


def wal(store: Store) -> Path:
    return store.path.with_name(store.path.name + "-wal")


def test_a_run_s_results_fit_between_backstop_checkpoints(sqlite_store: Store) -> None:
    """The backstop lies far above what a run writes; each connection has it."""
    raw = sqlite_store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        assert cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT_PAGES
    finally:
        raw.close()
    assert WAL_AUTOCHECKPOINT_PAGES * 4096 >= 64 * 2**20


def test_inserts_do_not_checkpoint(sqlite_store: Store) -> None:
    """Each run's insert appends to the WAL and the database file stays as it was: no commit
    pays a write-back (SQLite's default of 1,000 pages checkpointed every other run)."""
    store = sqlite_store
    insert_run(store, 0)
    store.checkpoint()
    database = store.path.stat().st_size
    sizes = []
    for run in range(1, 6):
        insert_run(store, run)
        sizes.append(wal(store).stat().st_size)
    assert sizes == sorted(set(sizes)), f"the WAL stopped growing: a checkpoint ran ({sizes})"
    assert store.path.stat().st_size == database


def test_checkpoint_lets_the_wal_start_over(sqlite_store: Store) -> None:
    store = sqlite_store
    for run in range(4):
        insert_run(store, run)
    database = store.path.stat().st_size
    done = store.checkpoint()
    assert done is not None
    frames, copied = done
    assert frames > 0 and copied == frames
    assert store.path.stat().st_size > database  # the pages are in the file now
    after_first = wal(store).stat().st_size
    for run in range(4, 8):
        insert_run(store, run)
    # As many writes again: the WAL started over from its beginning, it holds the second batch
    # only (a few pages more: the tests' ranges have grown), not both.
    assert wal(store).stat().st_size < 1.5 * after_first
    assert store.checkpoint(min_wal_bytes=after_first * 10) is None  # below the threshold
    # What was written is all there, read by another connection from the file and the WAL.
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM test_results_all").fetchone()[0] == 8 * TESTS
    finally:
        conn.close()


def test_checkpoint_without_a_wal_is_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "schedctl.db")
    store.close()  # the last connection's close checkpoints and removes the WAL
    assert not wal(store).exists()
    assert store.checkpoint() is None


def test_postgres_has_no_checkpoint_to_run(store: Store) -> None:
    """Both engines: the call is safe anywhere (PostgreSQL checkpoints itself)."""
    insert_run(store, 0)
    if store.is_postgres:
        assert store.checkpoint() is None
        assert store.wal_bytes() == 0
    else:
        assert store.wal_bytes() > 0
        assert store.checkpoint() is not None
