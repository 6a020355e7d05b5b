"""A shared store: PostgreSQL's connection, schema and migration rules, and what two store handles
(two daemons) on one database may and may not both do. Parametrized ``store`` tests run where a
rule holds on both engines; ``pg_store`` where it is about PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.kernel.errors import StoreConnectError, StoreError
from scheduler.kernel.outcome import Outcome
from scheduler.store.copy import copy_store
from scheduler.store.engine import (
    SCHEMA_VERSION,
    ActiveRunExists,
    OutboxEntry,
    RunAlreadyFinal,
    Store,
    TestResultRow,
)
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    alerts_outbox,
    test_daily,
    test_results,
    test_weekly,
)
from scheduler.store.schema import runs as runs_table
from scheduler.store.schema import tests as tests_table
from tests.pg import PgCluster

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc)


def twin(store: Store, pg_cluster: PgCluster | None) -> Store:
    """A second handle on the same database: another daemon's view."""
    if store.is_postgres:
        assert pg_cluster is not None
        return Store(store.url, password=pg_cluster.password)
    return Store(store.path)


@pytest.fixture
def other(store: Store, request: pytest.FixtureRequest) -> Store:
    cluster = request.getfixturevalue("pg_cluster") if store.is_postgres else None
    second = twin(store, cluster)
    request.addfinalizer(second.close)
    return second


# -- connection and schema ----------------------------------------------------------------------


def test_a_wrong_password_is_one_clear_line_without_the_password(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    with pytest.raises(StoreConnectError) as caught:
        Store(pg_url, password="not-the-password-x9")
    message = str(caught.value)
    assert "password authentication failed" in message
    assert "not-the-password-x9" not in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_an_unreachable_host_is_a_connect_error(pg_cluster: PgCluster) -> None:
    closed = pg_cluster.url("nodb").replace(str(pg_cluster.port), "1")
    with pytest.raises(StoreConnectError, match="cannot connect.*refused"):
        Store(closed, password=pg_cluster.password, connect_timeout_s=2)


def test_postgres_is_migrated_only_when_asked(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database(empty=True)
    try:
        with pytest.raises(StoreError, match="run `schedctl store migrate` first"):
            Store(url, password=pg_cluster.password)
        store = Store(url, password=pg_cluster.password, migrate=True)
        assert store.schema_version() == SCHEMA_VERSION
        assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # a second migrate: no-op
        store.close()
        Store(url, password=pg_cluster.password).close()  # now it opens without migrating
    finally:
        pg_cluster.drop_database(url)


def test_a_newer_postgres_schema_is_refused(pg_store: Store, pg_cluster: PgCluster) -> None:
    pg_store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        Store(pg_store.url, password=pg_cluster.password)
    with pytest.raises(StoreError, match="is newer"):
        Store(pg_store.url, password=pg_cluster.password, migrate=True)


def test_an_older_postgres_schema_asks_for_migrate(pg_store: Store, pg_cluster: PgCluster) -> None:
    pg_store.set_meta("schema_version", str(SCHEMA_VERSION - 1))
    with pytest.raises(StoreError, match="is older.*schedctl store migrate"):
        Store(pg_store.url, password=pg_cluster.password)


def test_the_store_url_never_shows_the_password(pg_store: Store, pg_cluster: PgCluster) -> None:
    assert pg_cluster.password not in pg_store.url
    assert pg_cluster.password not in pg_store.location
    assert pg_cluster.password not in repr(pg_store.engine.url)


# -- two daemons, one database -------------------------------------------------------------------


def test_a_slot_is_recorded_once_across_daemons(store: Store, other: Store) -> None:
    """Both daemons fire hourly@T0 at once: one row; the loser records nothing."""
    key = f"hourly@{T0.isoformat()}"
    results: list[int | None] = []
    barrier = threading.Barrier(2)

    def fire(handle: Store) -> None:
        barrier.wait()
        results.append(
            handle.create_run(tier="hourly", trigger="schedule", slot=T0, idempotency_key=key)
        )

    threads = [threading.Thread(target=fire, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results.count(None) == 1
    assert len(store.list_runs(tier="hourly")) == 1


def test_one_active_run_per_tier_across_daemons(store: Store, other: Store) -> None:
    first = store.create_run(tier="hourly", trigger="manual", host="a")
    assert first is not None
    with pytest.raises(ActiveRunExists):
        other.create_run(tier="hourly", trigger="manual", host="b")
    other.finish_run(first, outcome=Outcome.PASSED)
    assert store.create_run(tier="hourly", trigger="manual", host="b") is not None


def test_a_run_is_finished_once(store: Store, other: Store) -> None:
    run_id = store.create_run(tier="hourly", trigger="manual", host="a")
    assert run_id is not None
    store.finish_run(run_id, outcome=Outcome.INTERRUPTED, reason="by a")
    with pytest.raises(RunAlreadyFinal):
        other.finish_run(
            run_id,
            [TestResultRow(nodeid="t::x", outcome="passed", duration_s=1.0, markers="")],
            outcome=Outcome.PASSED,
        )
    record = store.get_run(run_id)
    assert (record.outcome, record.reason) == (Outcome.INTERRUPTED, "by a")
    assert store.test_results_for(run_id) == []


def test_an_alert_delivery_is_claimed_by_one_worker(store: Store, other: Store) -> None:
    store.outbox_enqueue(OutboxEntry("a1", "webhook", "fp", "fire", {"x": 1}), T0)
    due_a = store.outbox_due(T0)
    due_b = other.outbox_due(T0)
    assert [r.id for r in due_a] == [r.id for r in due_b] == ["a1"]
    lease = T0 + timedelta(minutes=2)
    claims = [store.outbox_claim(due_a[0], T0, lease), other.outbox_claim(due_b[0], T0, lease)]
    assert claims == [True, False]


def test_external_state_merges_per_sink_on_both_engines(store: Store, other: Store) -> None:
    from scheduler.store.engine import AlertStep, AlertTrackRow

    run_id = store.create_run(tier="hourly", trigger="manual")
    assert run_id is not None
    track = AlertTrackRow("fp", "hourly", "tests", "firing", "warning", 1, 0, run_id)
    store.apply_alert_step("hourly", run_id, T0, lambda _s, _t: AlertStep([track], []))
    for handle, sink, n in ((store, "github", 7), (other, "slack", 8)):
        handle.outbox_enqueue(OutboxEntry(f"{sink}-1", sink, "fp", "fire", {}), T0)
        row = next(r for r in handle.outbox_due(T0) if r.sink == sink)
        assert handle.outbox_claim(row, T0, T0 + timedelta(minutes=1))
        assert handle.outbox_complete(row, 1, T0, {"issue": n})
    assert store.alert_external("fp", "github") == {"issue": 7}
    assert other.alert_external("fp", "slack") == {"issue": 8}


def test_serialised_steps_do_not_interleave(store: Store, other: Store) -> None:
    """``begin(immediate=True)`` is one step at a time across handles (BEGIN IMMEDIATE / an
    advisory lock): a read-then-write never sees a stale read."""
    store.set_meta("counter", "0")
    errors: list[BaseException] = []

    def bump(handle: Store) -> None:
        try:
            for _ in range(20):
                with handle.begin(immediate=True) as conn:
                    from sqlalchemy import select, update

                    from scheduler.store.schema import meta_table

                    value = int(
                        conn.execute(
                            select(meta_table.c.value).where(meta_table.c.key == "counter")
                        ).scalar_one()
                    )
                    conn.execute(
                        update(meta_table)
                        .where(meta_table.c.key == "counter")
                        .values(value=str(value + 1))
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert store.get_meta("counter") == "40"


# -- store copy ------------------------------------------------------------------------------


def _box(path: Path, host: str | None, nodeid: str) -> Store:
    box = Store(path)
    for minute in (15, 16):
        slot = T0.replace(minute=minute)
        run_id = box.create_run(
            tier="hourly",
            trigger="schedule",
            slot=slot,
            idempotency_key=f"hourly@{slot.isoformat()}",
            host=host,
        )
        assert run_id is not None
        box.finish_run(
            run_id,
            [TestResultRow(nodeid=nodeid, outcome="failed", duration_s=2.0, markers="")],
            outcome=Outcome.FAILED,
            finished_at=slot,
        )
    box.create_run(tier="daily", trigger="manual", host=host)  # still active in the box
    box.outbox_enqueue(OutboxEntry(f"o-{host}", "webhook", "fp", "fire", {}), T0)
    return box


def test_copy_moves_two_boxes_into_one_store(pg_store: Store, tmp_path: Path) -> None:
    a = _box(tmp_path / "a.db", "gpu-a", "t::shared")
    b = _box(tmp_path / "b.db", None, "t::shared")
    first = copy_store(a, pg_store, host="unused")
    second = copy_store(b, pg_store, host="gpu-b")
    assert first.rows["runs"] == second.rows["runs"] == 3
    assert (first.run_id_offset, second.run_id_offset) == (0, 3)
    assert second.renamed_keys == 2  # the same slots ran on both boxes
    assert first.interrupted == second.interrupted == 1
    runs = pg_store.list_runs(limit=10)
    assert sorted((r.id, r.host) for r in runs) == [
        (1, "gpu-a"), (2, "gpu-a"), (3, "gpu-a"), (4, "gpu-b"), (5, "gpu-b"), (6, "gpu-b"),
    ]  # fmt: skip
    assert pg_store.active_runs() == []
    assert [r.run_id for r in pg_store.test_attempts(["t::shared"])] == [1, 2, 4, 5]
    (summary,) = pg_store.test_summaries("2026-01-01")
    assert (summary.runs, summary.failed) == (4, 4)
    assert {r.id for r in pg_store.outbox_rows()} == {"o-gpu-a", "o-None"}
    # The sequence moved past the copied ids: a new run gets the next id.
    assert pg_store.create_run(tier="hourly", trigger="manual") == 7


def test_a_claimer_skips_a_row_another_worker_holds(pg_store: Store, pg_cluster: PgCluster) -> None:
    """FOR UPDATE SKIP LOCKED: while one worker's transaction holds the row, another's claim
    answers False at once instead of queueing behind it."""
    import sqlalchemy as sa

    from scheduler.store.schema import alerts_outbox

    pg_store.outbox_enqueue(OutboxEntry("h1", "webhook", "fp", "fire", {}), T0)
    (row,) = pg_store.outbox_due(T0)
    holder = twin(pg_store, pg_cluster)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.begin() as conn:
            conn.execute(
                sa.select(alerts_outbox.c.id).where(alerts_outbox.c.id == "h1").with_for_update()
            )
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        assert pg_store.outbox_claim(row, T0, T0 + timedelta(minutes=1)) is False
    finally:
        release.set()
        thread.join(30)
        holder.close()
    assert pg_store.outbox_claim(row, T0, T0 + timedelta(minutes=1)) is True


def test_a_stats_reader_keeps_its_snapshot_while_another_daemon_writes(
    store: Store, other: Store
) -> None:
    """One scrape reads one view of the store, however many statements it takes."""
    store.create_run(tier="hourly", trigger="manual")
    with store.stats_reader() as reader:
        before = reader.active_counts()
        assert before == {("hourly", "queued"): 1}
        assert other.create_run(tier="daily", trigger="manual") is not None
        assert reader.active_counts() == before
    with store.stats_reader() as reader:
        assert reader.active_counts() == {("hourly", "queued"): 1, ("daily", "queued"): 1}


AWKWARD = [
    "tab\there",
    "new\nline\r\nand CR",
    "back\\slash \\N \\. \\t",
    "quotes ' \" `",
    "unicode: é 漢字 🚀 \u2028",
    "",
    "\\",
    ".",
]


def _rows(store: Store, table: sa.Table) -> list[dict[str, object]]:
    """Every row of ``table`` in key order; SQLite's naive UTC datetimes made aware."""

    def value(v: object) -> object:
        if isinstance(v, datetime) and v.tzinfo is None:
            return v.replace(tzinfo=timezone.utc)
        return v

    with store.begin() as conn:
        query = sa.select(table).order_by(*table.primary_key.columns)
        return [{k: value(v) for k, v in r.items()} for r in conn.execute(query).mappings()]


def test_copy_lands_awkward_text_and_typed_values_identical(
    pg_store: Store, tmp_path: Path
) -> None:
    box = _box(tmp_path / "box.db", "gpu-a", "t::plain")
    slot = T0.replace(minute=30)
    run_id = box.create_run(tier="hourly", trigger="schedule", slot=slot, host="gpu-a")
    assert run_id is not None
    results = [
        TestResultRow(
            nodeid=f"t.py::test[{text}]",
            outcome="failed" if i % 2 else "passed",
            duration_s=i + 0.125,
            markers=text,
            message=text,
            attempt=i % 2,
            final=bool(i % 3),
            peak_rss_bytes=None if i % 2 else 2**40 + i,
            rss_method=None if i % 3 else text,
            cuda_peak_bytes=2**33 if i % 2 else None,
            owner=text or None,
        )
        for i, text in enumerate(AWKWARD)
    ]
    box.finish_run(run_id, results, outcome=Outcome.FAILED, finished_at=slot)
    copy_store(box, pg_store, host="unused")  # the box's results are staged: the copy carries them
    assert box.merge_staged() == len(AWKWARD) + 2  # now in the box's test_results, to compare
    copied = 0
    for table in (runs_table, tests_table, test_results, test_daily, test_weekly, alerts_outbox):
        source = _rows(box, table)
        if table is runs_table:  # a run still active in the box is copied interrupted
            for row in source:
                if row["outcome"] in ACTIVE_OUTCOMES:
                    row["outcome"] = "interrupted"
                    row["reason"] = "copied by `schedctl store copy` while it was still active"
        target = _rows(pg_store, table)
        assert len(target) == len(source), table.name
        for got, want in zip(target, source, strict=True):
            assert {k: v for k, v in got.items() if v != want[k]} == {}, (table.name, want)
        copied += len(source)
    assert len(_rows(pg_store, test_results)) == len(AWKWARD) + 2
    assert copied > 0


def test_a_nul_in_a_result_fails_the_copy_and_leaves_the_target_as_it_was(
    pg_store: Store, tmp_path: Path
) -> None:
    box = _box(tmp_path / "box.db", "gpu-a", "t::plain")
    run_id = box.create_run(tier="hourly", trigger="manual", host="gpu-a")
    assert run_id is not None
    bad = TestResultRow(nodeid="t::nul", outcome="failed", message="a\x00b")
    box.finish_run(run_id, [bad], outcome=Outcome.FAILED, finished_at=T0)
    with pytest.raises(StoreError, match="NUL"):
        copy_store(box, pg_store, host="unused")
    assert _rows(pg_store, runs_table) == []
    assert _rows(pg_store, test_results) == []
