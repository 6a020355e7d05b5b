"""Test history in the store: the schema-3 migration, test_daily, attempts, quarantine rows."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import SCHEMA_VERSION, QuarantineRow, Store, TestResultRow

SCHEMA_V2 = Path(__file__).with_name("schema_v2.sql")
DAY = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def test_store_at_schema_2_migrates_without_losing_rows(tmp_path: Path) -> None:
    """A version-2 file keeps every run and result, gains the new columns, and its results are
    summed into test_daily (only runs whose outcome is test evidence)."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V2.read_text())
    for run_id, outcome in ((1, "passed"), (2, "failed"), (3, "timeout")):
        conn.execute(
            'INSERT INTO runs (id, tier, kind, "trigger", outcome, reason, source, gpus, argv, '
            "counts, details, queued_at, finished_at) VALUES (?, 'hourly', 'pytest', 'manual', ?, "
            "'', '{}', '[]', '[]', '{}', '{}', '2026-03-01 10:00:00', '2026-03-01 11:00:00')",
            (run_id, outcome),
        )
        conn.execute(
            "INSERT INTO test_results (run_id, nodeid, outcome, duration_s, markers) "
            "VALUES (?, 't.py::x', ?, 1.5, '')",
            (run_id, "passed" if run_id == 1 else "failed"),
        )
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert [r.id for r in store.list_runs(limit=10)] == [3, 2, 1]
    (row,) = store.test_results_for(2)
    assert (row.outcome, row.attempt, row.final, row.peak_rss_bytes) == ("failed", 0, True, None)
    (summary,) = store.test_summaries("2026-03-01")
    assert (summary.runs, summary.passed, summary.failed) == (2, 1, 1)
    assert summary.duration_sum == 3.0
    indexes = {r[1] for r in sqlite3.connect(path).execute("PRAGMA index_list(test_results)")}
    assert "ix_test_results_run" in indexes


def finish(store: Store, outcome: Outcome, results: list[TestResultRow], sha: str) -> int:
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    store.finish_run(run_id, results, outcome=outcome, sha=sha, finished_at=DAY)
    return run_id


def test_daily_sums_count_final_attempts_of_evidence_runs(store: Store) -> None:
    """A rerun's superseded attempt and a timed-out run add nothing to the day's sums."""
    finish(
        store,
        Outcome.PASSED,
        [
            TestResultRow("t.py::x", "failed", 1.0, attempt=0, final=False),
            TestResultRow("t.py::x", "flaky", 2.0, attempt=1, peak_rss_bytes=10),
        ],
        "a",
    )
    finish(store, Outcome.FAILED, [TestResultRow("t.py::x", "failed", 3.0, peak_rss_bytes=30)], "b")
    finish(store, Outcome.TIMEOUT, [TestResultRow("t.py::x", "error", 99.0)], "c")
    (s,) = store.test_summaries("2026-03-01", "hourly")
    assert (s.runs, s.passed, s.failed, s.flaky) == (2, 0, 1, 1)
    assert (s.duration_sum, s.duration_max, s.peak_rss_max) == (5.0, 3.0, 30)
    attempts = store.test_attempts(["t.py::x"])
    assert [(a.run_id, a.attempt, a.outcome) for a in attempts] == [
        (1, 0, "failed"),
        (1, 1, "flaky"),
        (2, 0, "failed"),
    ]
    newest = store.test_attempts(["t.py::x"], newest=2, evidence_only=False)
    assert [(a.run_id, a.outcome) for a in newest] == [(2, "failed"), (3, "error")]


def test_quarantine_rows_and_active_filter(store: Store) -> None:
    """Add replaces, quarantined() hides expired ones, remove says whether it removed."""
    now = DAY
    store.quarantine_add(QuarantineRow("a", "why", now, expires_at=now + timedelta(days=1)))
    store.quarantine_add(QuarantineRow("b", "old", now, expires_at=now - timedelta(days=1)))
    assert [q.nodeid for q in store.quarantined(["a", "b", "c"], now)] == ["a"]
    assert store.quarantine_remove("a") and not store.quarantine_remove("a")
    assert [q.nodeid for q in store.quarantine_list()] == ["b"]


def test_verdict_runs_give_the_verdict_of_every_attempt(store: Store) -> None:
    """The reduced input (first run, failing runs, the run after each, runs at failing commits,
    and the run count) yields the same verdict as all attempts, on seeded random histories with
    reruns, repeated commits, skips, an infra-failed run and a test that is never shown."""
    from scheduler.history.flaky import classify  # the rule the reduction must keep

    rng = random.Random(22)
    nodeids = [f"t.py::case_{i}" for i in range(12)]
    for run in range(60):
        outcome = Outcome.TIMEOUT if run == 17 else Outcome.FAILED
        rows: list[TestResultRow] = []
        for i, nodeid in enumerate(nodeids):
            roll = rng.random()
            if roll < 0.04 * i:
                rows.append(TestResultRow(nodeid, "failed", 0.1, attempt=0, final=False))
                again = "passed" if rng.random() < 0.5 else "failed"
                rows.append(TestResultRow(nodeid, "flaky" if again == "passed" else again, 0.1,
                                          attempt=1))  # fmt: skip
            else:
                rows.append(TestResultRow(nodeid, "skipped" if roll > 0.95 else "passed", 0.1))
        finish(store, outcome, rows, sha=f"{run // rng.choice((1, 2, 3)):040x}")
    reduced, totals = store.verdict_runs(nodeids, tier=None, from_run_id=5)
    full = store.test_attempts(nodeids, from_run_id=5, lean=True)
    assert len(reduced) < len(full)
    flaky = 0
    for nodeid in nodeids:
        expected = classify(nodeid, [a for a in full if a.nodeid == nodeid])
        got = classify(nodeid, [a for a in reduced if a.nodeid == nodeid], totals.get(nodeid))
        assert got == expected
        flaky += expected.flaky
    assert 0 < flaky < len(nodeids)
