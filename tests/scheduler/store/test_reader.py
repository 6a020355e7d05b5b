"""The light SQLite reader answers as the store does, and steps aside when it cannot."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.kernel.errors import StoreError, UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store, TestResultRow
from scheduler.store.reader import SqliteReader, open_reader
from scheduler.store.records import QuarantineRow

T0 = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)


def _run(store: Store, tier: str, outcome: Outcome, sha: str, minutes: int, **extra: object) -> int:
    run_id = store.create_run(
        tier=tier,
        trigger="schedule",
        kind="pytest",
        slot=T0 + timedelta(minutes=minutes),
        queued_at=T0 + timedelta(minutes=minutes),
        idempotency_key=f"{tier}@{minutes}",
    )
    assert run_id is not None
    store.update_run(run_id, outcome=Outcome.RUNNING, started_at=T0 + timedelta(minutes=minutes))
    if outcome.is_final:
        results = [
            TestResultRow("t.py::ok", "passed", 0.5, "hourly", peak_rss_bytes=1 << 20),
            TestResultRow("t.py::bad", "failed", 1.25, "", "boom\n<b>", attempt=0, final=False),
            TestResultRow("t.py::bad", "passed", 1.0, "", attempt=1, owner="@ann"),
        ]
        store.finish_run(
            run_id,
            results,
            outcome=outcome,
            sha=sha,
            exit_code=0 if outcome is Outcome.PASSED else 1,
            counts={"passed": 2, "failed": 1},
            details={"note": "ünïcode", "nested": {"a": [1, 2]}},
            source={"sha": sha, "subject": "a commit"},
            gpus=[{"index": 0, "uuid": "GPU-1"}],
            argv=["python", "-m", "pytest"],
            duration_s=12.5,
            finished_at=T0 + timedelta(minutes=minutes, seconds=30),
            **extra,
        )
    return run_id


@pytest.fixture
def populated(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state" / "schedctl.db")
    _run(store, "hourly", Outcome.PASSED, "a" * 40, 0)
    _run(store, "hourly", Outcome.FAILED, "b" * 40, 60)
    _run(store, "hourly", Outcome.INFRA_ERROR, "b" * 40, 120)
    _run(store, "hourly", Outcome.FAILED, "c" * 40, 180, reason="2 failed")
    _run(store, "daily", Outcome.PASSED, "c" * 40, 30)
    active = _run(store, "daily", Outcome.RUNNING, "d" * 40, 240)
    assert store.acquire_leases(active, "daily", [(1, "GPU-b"), (0, "GPU-a")])
    store.quarantine_add(QuarantineRow("t.py::bad", "flaky", T0, owner="@ann"))
    store.quarantine_add(QuarantineRow("t.py::zzz", "slow", T0, expires_at=T0 + timedelta(days=7)))
    return store


def _reader(store: Store) -> SqliteReader:
    reader = open_reader(store.path)
    assert reader is not None
    return reader


def test_every_read_answers_as_the_store_does(populated: Store) -> None:
    store, reader = populated, _reader(populated)
    for tier in (None, "hourly", "daily", "nope"):
        for limit in (1, 2, 20):
            assert reader.list_runs(tier=tier, limit=limit) == store.list_runs(
                tier=tier, limit=limit
            )
            assert reader.runs_json(tier=tier, limit=limit) == store.runs_json(
                tier=tier, limit=limit
            )
    assert len(store.list_runs()) == 6  # the comparison saw every run
    for tier in ("hourly", "daily", "nope"):
        assert reader.last_run(tier) == store.last_run(tier)
        assert reader.last_green(tier) == store.last_green(tier)
        assert reader.consecutive_failures(tier) == store.consecutive_failures(tier)
        for before in (1, 4, 5, 100):
            assert reader.last_green(tier, before_id=before) == store.last_green(
                tier, before_id=before
            )
    assert store.consecutive_failures("hourly") == 2  # infra outcomes neither count nor break
    assert reader.active_runs() == store.active_runs() != []
    for run_id in range(1, 7):
        assert reader.get_run(run_id) == store.get_run(run_id)
        for attempts in (False, True):
            assert reader.test_results_for(run_id, attempts=attempts) == store.test_results_for(
                run_id, attempts=attempts
            )
    assert len(store.test_results_for(1, attempts=True)) == 3
    assert reader.quarantine_list() == store.quarantine_list()
    assert len(store.quarantine_list()) == 2
    assert reader.active_leases() == store.active_leases()
    assert [lease["gpu_index"] for lease in reader.active_leases()] == [0, 1]


def test_datetimes_come_back_aware_and_json_parsed(populated: Store) -> None:
    record = _reader(populated).get_run(1)
    assert record.slot == T0
    assert record.finished_at == T0 + timedelta(seconds=30)
    assert record.details == {"note": "ünïcode", "nested": {"a": [1, 2]}}
    assert record.outcome is Outcome.PASSED


def test_unknown_run_names_the_file(populated: Store) -> None:
    with pytest.raises(UnknownRunError, match=f"no run with id 99 in {populated.path}"):
        _reader(populated).get_run(99)


def test_the_store_opens_what_the_reader_cannot(tmp_path: Path, populated: Store) -> None:
    assert open_reader(tmp_path / "missing.db") is None  # the store creates it
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert open_reader(garbage) is None  # the store reports it
    conn = sqlite3.connect(populated.path)
    conn.execute("UPDATE schedctl_meta SET value='5' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    assert open_reader(populated.path) is None  # the store migrates it


def test_errors_while_reading_name_the_file(populated: Store) -> None:
    reader = _reader(populated)
    conn = sqlite3.connect(populated.path)
    conn.execute("DROP TABLE gpu_leases")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=str(populated.path)):
        reader.active_leases()
