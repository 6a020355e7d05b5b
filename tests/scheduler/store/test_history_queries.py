"""Test history in the store: the schema-3 migration, test_daily, attempts, quarantine rows."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

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
    assert store.schema_version() == SCHEMA_VERSION == 7
    assert [r.id for r in store.list_runs(limit=10)] == [3, 2, 1]
    (row,) = store.test_results_for(2)
    assert (row.outcome, row.attempt, row.final, row.peak_rss_bytes) == ("failed", 0, True, None)
    (summary,) = store.test_summaries("2026-03-01")
    assert (summary.runs, summary.passed, summary.failed) == (2, 1, 1)
    assert summary.duration_sum == 3.0
    indexes = {r[1] for r in sqlite3.connect(path).execute("PRAGMA index_list(test_results)")}
    assert "ix_test_results_run" in indexes


def finish(
    store: Store, outcome: Outcome, results: list[TestResultRow], sha: str, tier: str = "hourly"
) -> int:
    run_id = store.create_run(tier=tier, trigger="manual", kind="pytest")
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


def test_verdict_runs_keep_the_verdict_per_tier_and_window(store: Store) -> None:
    """The reduced input read per tier and from several first runs, on a history of two tiers
    with infra-failed runs (not evidence), a result reported twice in one run and commits run
    more than once: each verdict and run count equals the one judged from every attempt."""

    rng = random.Random(7)
    nodeids = [f"t.py::tier_case_{i}" for i in range(10)]
    for run in range(70):
        tier = "daily" if run % 3 == 0 else "hourly"
        outcome = Outcome.INFRA_ERROR if run in (11, 40) else Outcome.FAILED
        rows: list[TestResultRow] = []
        for i, nodeid in enumerate(nodeids):
            roll = rng.random()
            if roll < 0.05 * i:
                rows.append(TestResultRow(nodeid, "failed", 0.1, attempt=0, final=False))
                rows.append(TestResultRow(nodeid, "flaky", 0.1, attempt=1))
            elif roll < 0.08 * i:
                rows.append(TestResultRow(nodeid, "error", 0.1))
            else:
                rows.append(TestResultRow(nodeid, "passed" if roll < 0.93 else "skipped", 0.1))
            if run == 23 and i == 2:  # reported twice in one attempt (JUnit XML allows it)
                rows.append(TestResultRow(nodeid, "failed", 0.1))
        finish(store, outcome, rows, sha=f"{run // rng.choice((1, 2, 4)):040x}", tier=tier)
    assert_reduced_verdicts_match(store, nodeids, firsts=(1, 12, 41, 69))


def test_verdict_runs_read_passes_as_counts_only_where_they_say_which_runs(store: Store) -> None:
    """Passes are read as counts (runs, first, last, runs with a pass) where those say which
    runs a test passed in, else as run ids: tests that ran in every run and tests with gaps
    (not selected, another tier), a pass reported twice in one run, a pass beside a failure or
    a skip in one run, xfails and runs that are not evidence. Every verdict and run count
    equals the one judged from every attempt, for several windows and tiers."""

    rng = random.Random(31)
    nodeids = [f"t.py::dense_case_{i}" for i in range(12)] + ["t.py::dense_twice"]
    for run in range(80):
        tier = "daily" if run % 5 == 0 else "hourly"
        outcome = Outcome.INFRA_ERROR if run in (9, 50) else Outcome.FAILED
        rows: list[TestResultRow] = []
        for i, nodeid in enumerate(nodeids[:-1]):
            roll = rng.random()
            if i % 4 == 1 and roll < 0.3:
                continue  # not in this run: its passes have gaps
            if i % 4 == 2 and tier == "daily":
                continue  # an hourly-only test
            if roll < 0.04 * (i % 6):
                rows.append(TestResultRow(nodeid, "failed", 0.1, attempt=0, final=False))
                rows.append(TestResultRow(nodeid, "flaky", 0.1, attempt=1))
            elif roll < 0.06 * (i % 6):
                rows.append(TestResultRow(nodeid, rng.choice(("failed", "error")), 0.1))
                if i % 3 == 0:  # and a pass in the same run (reported twice, JUnit allows it)
                    rows.append(TestResultRow(nodeid, "passed", 0.1))
            elif roll > 0.97:
                rows.append(TestResultRow(nodeid, rng.choice(("skipped", "xfailed")), 0.1))
                if i % 2:
                    rows.append(TestResultRow(nodeid, "passed", 0.1))
            else:
                rows.append(TestResultRow(nodeid, "passed", 0.1))
                if roll < 0.1 and i % 5 == 0:  # a pass reported twice
                    rows.append(TestResultRow(nodeid, "passed", 0.1))
        # A test whose every other result is beside a pass in its run.
        rows.append(TestResultRow("t.py::dense_twice", "passed", 0.1))
        if run % 7 == 3:
            rows.append(TestResultRow("t.py::dense_twice", rng.choice(("failed", "skipped")), 0.1))
        finish(store, outcome, rows, sha=f"{run // rng.choice((1, 2, 3)):040x}", tier=tier)
    assert_reduced_verdicts_match(store, nodeids, firsts=(1, 10, 33, 79))


VERDICTS = frozenset({"passed", "failed", "error", "flaky", "xfailed", "xpassed"})


def assert_reduced_verdicts_match(
    store: Store, nodeids: list[str], firsts: tuple[int, ...]
) -> None:
    """For every tier (and none) and window: each test's verdict from ``verdict_runs``' reduced
    input equals the one judged from every attempt, its run count is the runs with a verdict
    (skips are none), and some test is flaky."""
    from scheduler.history.flaky import classify

    flaky = 0
    for tier in (None, "hourly", "daily"):
        for first in firsts:
            reduced, totals = store.verdict_runs(nodeids, tier=tier, from_run_id=first)
            full = store.test_attempts(nodeids, tier=tier, from_run_id=first, lean=True)
            for nodeid in nodeids:
                mine = [a for a in full if a.nodeid == nodeid]
                expected = classify(nodeid, mine)
                got = classify(nodeid, [a for a in reduced if a.nodeid == nodeid],
                               totals.get(nodeid))  # fmt: skip
                assert got == expected, (nodeid, tier, first)
                assert totals.get(nodeid, 0) == len(
                    {a.run_id for a in mine if a.outcome in VERDICTS}
                ), (nodeid, tier, first)
                flaky += expected.flaky
    assert flaky > 0


def test_recent_percentiles_are_nearest_ranks_of_the_recent_durations(store: Store) -> None:
    """On both engines (PostgreSQL in SQL, ``percentile_disc``), each percentile is the
    nearest-rank one that ``scheduler.history.stats.percentile`` takes of the durations
    ``recent_durations`` gives, for every sample size from 1 to past the history's length, with
    a timed-out run, skips and superseded attempts in the history, per tier and in total."""
    from scheduler.history.stats import percentile

    rng = random.Random(5)
    nodeids = ["t.py::pct_a", "t.py::pct_b", "t.py::pct_never"]
    for run in range(45):
        rows = [TestResultRow(nodeids[0], "passed", round(rng.lognormvariate(0, 1), 6))]
        if run % 4:
            rows.append(TestResultRow(nodeids[1], "failed", 0.5, attempt=0, final=False))
            rows.append(TestResultRow(nodeids[1], rng.choice(("flaky", "skipped")),
                                      round(rng.random(), 6), attempt=1))  # fmt: skip
        run_id = store.create_run(tier="daily" if run % 3 else "hourly", trigger="manual",
                                  kind="pytest")  # fmt: skip
        assert run_id is not None
        store.finish_run(run_id, rows, outcome=Outcome.TIMEOUT if run == 20 else Outcome.FAILED,
                         sha=f"{run:040x}", finished_at=DAY)  # fmt: skip
    qs = (10, 33, 50, 90, 99)
    for tier in (None, "daily"):
        for limit in range(1, 48):
            got = store.recent_percentiles(nodeids, tier=tier, from_run_id=3, limit=limit,
                                           fractions=[q / 100 for q in qs])  # fmt: skip
            durations = store.recent_durations(nodeids, tier=tier, from_run_id=3, limit=limit)
            for nodeid in nodeids:
                expected = tuple(percentile(durations[nodeid], q) for q in qs)
                assert got[nodeid] == expected, (nodeid, tier, limit)
    assert got[nodeids[2]] == (None,) * len(qs)


SCHEMA_V5 = Path(__file__).with_name("schema_v5.sql")


def _v5_store(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """A version-5 file as schedctl 19d1471 wrote it: seeded runs over 10 days with reruns, a
    result reported twice in one attempt (JUnit XML allows it), failure messages, memory,
    owners, a timed-out run, its test_daily rows and quarantines (one of a test never run).
    Returns what a reader must find again, table by table."""
    rng = random.Random(6)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V5.read_text())
    nodeids = [f"tests/m{i % 3}.py::test_{i}[p{i}]" for i in range(9)]
    results: list[tuple[object, ...]] = []
    for run_id in range(1, 31):
        outcome = "timeout" if run_id == 7 else rng.choice(("passed", "failed"))
        when = (DAY + timedelta(hours=8 * run_id)).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute(
            'INSERT INTO runs (id, tier, kind, "trigger", outcome, reason, source, gpus, argv, '
            "counts, details, queued_at, finished_at, sha) VALUES (?, ?, 'pytest', 'schedule', "
            "?, '', '{}', '[]', '[]', '{}', '{}', ?, ?, ?)",
            (
                run_id,
                "hourly" if run_id % 4 else "daily",
                outcome,
                when,
                when,
                f"{run_id // 2:040x}",
            ),
        )
        shown = rng.sample(nodeids, 6)
        shown += shown[:1] if run_id == 9 else []
        for nodeid in shown:
            failed = rng.random() < 0.2
            rows = [(0, not failed, "failed" if failed else "passed")]
            if failed and run_id % 2:
                rows.append((1, True, "flaky"))
            for attempt, final, result in rows:
                message = "E assert 1 == 2" if result == "failed" else None
                results.append((run_id, nodeid, result, round(rng.random(), 3), "gpu hourly",
                                message, attempt, final, rng.randrange(1 << 30), "vmhwm", None,
                                "@lab/a"))  # fmt: skip
    conn.executemany(
        "INSERT INTO test_results (run_id, nodeid, outcome, duration_s, markers, message, "
        "attempt, final, peak_rss_bytes, rss_method, cuda_peak_bytes, owner) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        results,
    )
    # test_daily as schema 5 filled it (its own step-5 statement, final attempts of evidence runs)
    conn.execute(
        "INSERT INTO test_daily (tier, nodeid, day, runs, passed, failed, flaky, skipped, "
        "duration_sum, duration_max, peak_rss_max, first_run_id, last_run_id, first_at, last_at) "
        "SELECT r.tier, t.nodeid, substr(r.finished_at, 1, 10), count(*), "
        "sum(t.outcome = 'passed'), sum(t.outcome = 'failed'), sum(t.outcome = 'flaky'), 0, "
        "sum(t.duration_s), max(t.duration_s), max(t.peak_rss_bytes), min(r.id), max(r.id), "
        "min(r.finished_at), max(r.finished_at) "
        "FROM test_results t JOIN runs r ON r.id = t.run_id WHERE r.outcome != 'timeout' "
        "AND t.final GROUP BY r.tier, t.nodeid, substr(r.finished_at, 1, 10)"
    )
    conn.executemany(
        "INSERT INTO quarantine (nodeid, reason, owner, created_at, expires_at) "
        "VALUES (?, 'flaky', '@lab/a', '2026-03-01 00:00:00.000000', ?)",
        [(nodeids[2], None), ("tests/new.py::never_ran", "2026-03-20 00:00:00.000000")],
    )
    conn.commit()
    expected = {
        name: conn.execute(sql).fetchall()
        for name, sql in {
            "results": "SELECT run_id, nodeid, attempt, final, outcome, duration_s, markers, "
            "message, peak_rss_bytes, rss_method, cuda_peak_bytes, owner FROM test_results "
            "ORDER BY run_id, id",
            "daily": "SELECT day, nodeid, tier, runs, passed, failed, flaky, skipped, "
            "duration_sum, duration_max, peak_rss_max, first_run_id, last_run_id, first_at, "
            "last_at FROM test_daily ORDER BY day, nodeid, tier",
            "quarantine": "SELECT nodeid, reason, owner, created_at, expires_at, "
            "expiry_alerted_at FROM quarantine ORDER BY nodeid",
        }.items()
    }
    conn.close()
    return expected


def test_store_at_schema_5_migrates_to_normalised_tests_without_losing_a_row(
    tmp_path: Path,
) -> None:
    """Every result (each attempt, the twice-reported one, in the order reported), every
    test_daily row and every quarantine of a version-5 file is found again, through the ids of
    the new tests table; the weekly rollups are the sums of the days; the file shrinks."""
    path = tmp_path / "v5.db"
    expected = _v5_store(path)
    assert len(expected["results"]) > 180 and len(expected["daily"]) > 40
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 7
    db = sqlite3.connect(path)
    got_results = db.execute(
        "SELECT r.run_id, t.nodeid, r.attempt, r.final, r.outcome, r.duration_s, r.markers, "
        "r.message, r.peak_rss_bytes, r.rss_method, r.cuda_peak_bytes, r.owner "
        "FROM test_results r JOIN tests t ON t.id = r.test_id ORDER BY r.run_id, r.seq"
    ).fetchall()
    assert got_results == expected["results"]
    assert db.execute("SELECT count(*) FROM tests").fetchone()[0] == 10  # 9 run + 1 quarantined
    got_daily = db.execute(
        "SELECT d.day, t.nodeid, d.tier, runs, passed, failed, flaky, skipped, duration_sum, "
        "duration_max, peak_rss_max, first_run_id, last_run_id, first_at, last_at "
        "FROM test_daily d JOIN tests t ON t.id = d.test_id ORDER BY d.day, t.nodeid, d.tier"
    ).fetchall()
    assert got_daily == expected["daily"]
    by_week = db.execute(
        "SELECT week, test_id, tier, runs, failed, duration_max FROM test_weekly "
        "ORDER BY week, test_id, tier"
    ).fetchall()
    summed = db.execute(
        "SELECT date(day, '-6 days', 'weekday 1') w, test_id, tier, sum(runs), sum(failed), "
        "max(duration_max) FROM test_daily GROUP BY w, test_id, tier ORDER BY w, test_id, tier"
    ).fetchall()
    assert by_week == summed and {w for w, *_ in by_week} == {
        "2026-02-23",
        "2026-03-02",
        "2026-03-09",
    }
    assert [(q.nodeid, q.reason, q.owner, q.expires_at) for q in store.quarantine_list()] == [
        (n, r, o, None if e is None else datetime.fromisoformat(e).replace(tzinfo=timezone.utc))
        for n, r, o, _c, e, _a in expected["quarantine"]
    ]
    # The public reads agree with the rows: a run's results in the order they were reported.
    nine = [r for r in expected["results"] if r[0] == 9]
    assert [(t.nodeid, t.attempt, t.outcome) for t in store.test_results_for(9, attempts=True)] == [
        (r[1], r[2], r[4]) for r in nine
    ]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not {t for t in tables if t.endswith("_v5")}
    assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # VACUUMed after rebuilding
    # And the migrated file takes new runs: a known test keeps its id, a new one gets the next.
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    store.finish_run(run_id, [TestResultRow(nine[0][1], "passed", 1.0),
                              TestResultRow("tests/brand_new.py::t", "failed", 2.0)],
                     outcome=Outcome.FAILED, finished_at=DAY + timedelta(days=12))  # fmt: skip
    assert db.execute("SELECT count(*) FROM tests").fetchone()[0] == 11


def test_postgresql_keeps_a_covering_index_of_each_tests_history(store: Store) -> None:
    """PostgreSQL's heap is in insertion (run) order: a test's history reads come from
    ``ix_test_results_history`` instead. SQLite's table is clustered by test: no such index."""
    indexes = {ix["name"]: ix for ix in sa.inspect(store.engine).get_indexes("test_results")}
    if store.is_postgres:
        found = indexes["ix_test_results_history"]
        assert found["column_names"] == ["test_id", "run_id"]
        include = found.get("include_columns") or found["dialect_options"]["postgresql_include"]
        assert list(include) == ["outcome", "final", "duration_s"]
    else:
        assert "ix_test_results_history" not in indexes
