"""The SQLite store: run rows, idempotency, results, leases, consecutive failures."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scheduler.kernel.errors import StoreError, UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import SCHEMA_VERSION, Store, TestResultRow
from tests.waiting import wait_for


def finish(store: Store, tier: str, outcome: Outcome) -> int:
    run_id = store.create_run(tier=tier, trigger="manual", kind="pytest")
    assert run_id is not None
    store.finish_run(run_id, outcome=outcome)
    return run_id


def test_wal_and_schema_version(sqlite_store: Store) -> None:
    """The database runs in WAL mode and records its schema version."""
    store = sqlite_store
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version() == SCHEMA_VERSION


OPEN_WHEN_TOLD = """
import sys, time
from pathlib import Path
from scheduler.store.engine import Store
ready, go, db = (Path(a) for a in sys.argv[1:])
ready.touch()
while not go.exists():
    time.sleep(0.001)
Store(db)
"""


def test_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    """`schedctl run hourly & schedctl run daily` on a new state_dir: nobody loses the race."""
    go = tmp_path / "go"
    procs = []
    for file in range(3):
        for opener in range(5):
            ready = tmp_path / f"ready-{file}-{opener}"
            procs.append(
                (
                    ready,
                    subprocess.Popen(
                        [sys.executable, "-c", OPEN_WHEN_TOLD, ready, go, tmp_path / f"{file}.db"],
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
    wait_for(lambda: all(ready.exists() for ready, _ in procs), 60, "15 openers to start")
    go.touch()
    errors = [p.communicate(timeout=60)[1] for _, p in procs]
    assert [e.strip().splitlines()[-1:] for e in errors if e.strip()] == []
    assert all(p.returncode == 0 for _, p in procs)
    for file in range(3):
        assert Store(tmp_path / f"{file}.db").schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(sqlite_store: Store) -> None:
    """A database written by a newer schedctl is not silently used."""
    store = sqlite_store
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE schedctl_meta SET value='999' WHERE key='schema_version'")
    conn.commit()
    with pytest.raises(StoreError, match="schema version 999 is newer"):
        Store(store.path)


def test_idempotency_key_is_unique(store: Store) -> None:
    """A second row for the same tier@slot is refused (returns None)."""
    slot = datetime(2026, 11, 27, 1, 15, tzinfo=timezone.utc)
    first = store.create_run(
        tier="hourly",
        trigger="schedule",
        kind="pytest",
        slot=slot,
        idempotency_key=f"hourly@{slot.isoformat()}",
    )
    again = store.create_run(
        tier="hourly",
        trigger="schedule",
        kind="pytest",
        slot=slot,
        idempotency_key=f"hourly@{slot.isoformat()}",
    )
    assert first is not None and again is None
    assert store.get_run(first).slot == slot


def test_finish_run_with_results(store: Store) -> None:
    """Final outcome and per-test rows are written together and read back."""
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    rows = [
        TestResultRow("t.py::a", "passed", 0.1, "hourly"),
        TestResultRow("t.py::b", "failed", 0.2, "", "boom"),
    ]
    record = store.finish_run(
        run_id, results=rows, outcome=Outcome.FAILED, counts={"passed": 1, "failed": 1}
    )
    assert record.outcome is Outcome.FAILED and record.finished_at is not None
    assert store.test_results_for(run_id) == rows


def test_unknown_run(store: Store) -> None:
    """Asking for a run that does not exist is a usage error naming the id."""
    with pytest.raises(UnknownRunError, match="no run with id 42"):
        store.get_run(42)


def test_consecutive_failures_ignore_infra(store: Store) -> None:
    """Infra outcomes neither count as failures nor break a failure streak."""
    finish(store, "hourly", Outcome.PASSED)
    finish(store, "hourly", Outcome.FAILED)
    finish(store, "hourly", Outcome.GPU_UNAVAILABLE)
    finish(store, "hourly", Outcome.TIMEOUT)
    finish(store, "daily", Outcome.FAILED)
    assert store.consecutive_failures("hourly") == 2
    finish(store, "hourly", Outcome.PASSED)
    assert store.consecutive_failures("hourly") == 0


def test_last_green_before(store: Store) -> None:
    """last_green finds the newest passed run before a given run."""
    a = finish(store, "hourly", Outcome.PASSED)
    b = finish(store, "hourly", Outcome.FAILED)
    c = finish(store, "hourly", Outcome.PASSED)
    green = store.last_green("hourly", before_id=b)
    assert green is not None and green.id == a
    latest = store.last_green("hourly")
    assert latest is not None and latest.id == c


def test_leases_are_exclusive_and_released_for_dead_runs(store: Store) -> None:
    """A GPU leased to one run cannot be leased to another; finished runs' leases are freed."""
    one = store.create_run(tier="hourly", trigger="manual", kind="pytest", outcome=Outcome.RUNNING)
    two = store.create_run(tier="daily", trigger="manual", kind="pytest", outcome=Outcome.RUNNING)
    assert one is not None and two is not None
    assert store.acquire_leases(one, "hourly", [(0, "GPU-a")])
    assert not store.acquire_leases(two, "daily", [(1, "GPU-b"), (0, "GPU-a")])
    assert [lease["gpu_uuid"] for lease in store.active_leases()] == ["GPU-a"]
    store.finish_run(one, outcome=Outcome.INTERRUPTED)
    assert store.release_dead_leases() == 1
    assert store.acquire_leases(two, "daily", [(0, "GPU-a")])


def test_unwritable_state_dir(tmp_path: Path) -> None:
    """A state dir that cannot be created is a StoreError naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create state directory"):
        Store(blocker / "sub" / "x.db")


SCHEMA_V2 = Path(__file__).with_name("schema_v2.sql")


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A database from schema version 1 gains runs.owner_identity and is stamped current."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V2.read_text())
    conn.execute("ALTER TABLE runs DROP COLUMN owner_identity")
    conn.execute("UPDATE schedctl_meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    migrated = Store(path)
    assert migrated.schema_version() == SCHEMA_VERSION
    run_id = migrated.create_run(
        tier="hourly", trigger="manual", kind="pytest", owner_identity="boot:1"
    )
    assert run_id is not None and migrated.get_run(run_id).owner_identity == "boot:1"


def test_runs_json_is_to_json_of_every_listed_run(store: Store) -> None:
    """``runs_json`` (read straight into dicts, for `schedctl runs --json`) gives what
    ``to_json`` of each ``list_runs`` record gives: JSON columns, datetimes with and without
    microseconds, NULLs, the tier/outcome/before filters and the limit."""
    when = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
    ids = []
    for i in range(6):
        run_id = store.create_run(
            tier="hourly" if i % 2 else "daily",
            trigger="manual",
            kind="pytest",
            queued_at=when.replace(microsecond=123456 * (i % 2)),
            source={"ref": "main", "n": i},
            gpus=[{"index": 0, "uuid": "GPU-1"}] if i == 3 else [],
            argv=["pytest", "-m", "hourly"],
        )
        assert run_id is not None
        ids.append(run_id)
        if i < 5:
            store.finish_run(
                run_id,
                outcome=Outcome.PASSED if i % 3 else Outcome.FAILED,
                counts={"passed": i},
                details={"note": "x" * i} if i else {},
                finished_at=when.replace(second=i, microsecond=7 * i),
            )
    for kwargs in (
        {"limit": 20},
        {"limit": 2},
        {"tier": "hourly", "limit": 20},
        {"outcomes": [Outcome.PASSED.value], "limit": 20},
        {"before_id": ids[3], "limit": 20},
    ):
        expected = [r.to_json() for r in store.list_runs(**kwargs)]  # type: ignore[arg-type]
        assert store.runs_json(**kwargs) == expected  # type: ignore[arg-type]
        assert expected
    assert store.runs_json(limit=20)[-1]["queued_at"] == "2026-03-01T10:00:00+00:00"
