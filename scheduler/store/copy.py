"""``schedctl store copy``: move one box's history into another store (SQLite -> PostgreSQL).

The target may already hold other boxes' history, so nothing is copied by id: run ids are
shifted past the target's largest (and every reference to a run follows: test results, daily
sums' first/last run, image builds, alert state), a slot key that the target already holds gets
the source host appended, runs still active in the source are copied ``interrupted`` (their
daemon is not coming to the target to finish them), and per-day test sums are added to the
target's. Test ids are the target's: each nodeid is looked up (or added) there, and every row
that names a test (results, sums, quarantine) follows. Rows keyed by name that the target already
has (alert state, outbox rows, quarantine, drained GPUs) are left as the target has them. GPU
leases and meta rows (heartbeats, schema version) belong to their store and are not copied.
Everything is written in one transaction on the target: a failed copy leaves it as it was.

Test results (a box's bulk: a million rows) go into PostgreSQL by ``COPY ... FROM STDIN`` on the
same connection and transaction rather than as inserts: they never conflict (their run ids are
new to the target), and COPY is several times faster than batched inserts there. Everything that
may conflict (per-day sums, keyed rows) or is small (runs) keeps its statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.daily import ROW_COLUMNS, merge_rollup
from scheduler.store.driver import bind_datetime, fetch
from scheduler.store.engine import Store
from scheduler.store.nodeids import ids_of
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    alert_state,
    alerts_outbox,
    gpu_drains,
    image_builds,
    quarantine,
    runs,
    test_daily,
    test_results,
    test_results_all,
    test_weekly,
    tests,
)

__all__ = ["CopyReport", "copy_store"]

BATCH = 5000


@dataclass
class CopyReport:
    """What was copied, per table, and how run ids moved."""

    rows: dict[str, int] = field(default_factory=dict)
    run_id_offset: int = 0
    renamed_keys: int = 0
    interrupted: int = 0

    def add(self, table: str, n: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + n


def _batches(
    conn: Connection, query: sa.Select[Any], key: sa.ColumnElement[Any]
) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``query`` in ``key`` order, ``BATCH`` at a time (keyset pagination)."""
    last: Any = None
    while True:
        page = query.order_by(key).limit(BATCH)
        if last is not None:
            page = page.where(key > last)
        rows = [dict(r) for r in conn.execute(page).mappings()]
        if not rows:
            return
        last = rows[-1][key.name]  # before the caller rewrites ids
        yield rows


def copy_store(source: Store, target: Store, *, host: str) -> CopyReport:
    """Copy ``source``'s history into ``target`` (see the module docstring); ``host`` fills the
    host of source runs that recorded none."""
    report = CopyReport()
    with source.begin() as src, target.begin(immediate=True) as dst:
        offset = int(dst.execute(sa.select(sa.func.max(runs.c.id))).scalar() or 0)
        report.run_id_offset = offset

        def moved(run_id: Any) -> Any:
            return None if run_id is None else int(run_id) + offset

        for rows in _batches(src, sa.select(runs), runs.c.id):
            keys = [r["idempotency_key"] for r in rows if r["idempotency_key"]]
            taken = set()
            if keys:
                taken = {
                    str(k)
                    for (k,) in dst.execute(
                        sa.select(runs.c.idempotency_key).where(runs.c.idempotency_key.in_(keys))
                    )
                }
            for r in rows:
                r["id"] = moved(r["id"])
                r["host"] = r["host"] or host
                if r["idempotency_key"] in taken:
                    r["idempotency_key"] = f"{r['idempotency_key']}@{r['host']}"
                    report.renamed_keys += 1
                if r["outcome"] in ACTIVE_OUTCOMES:
                    r["outcome"] = "interrupted"
                    r["reason"] = "copied by `schedctl store copy` while it was still active"
                    report.interrupted += 1
            dst.execute(runs.insert(), rows)
            report.add("runs", len(rows))

        test_ids = _copy_tests(src, dst)
        result_names = [c.name for c in test_results.columns]
        run_ids = [int(i) for (i,) in src.execute(sa.select(runs.c.id).order_by(runs.c.id))]
        for start in range(0, len(run_ids), 100):
            chunk = run_ids[start : start + 100]
            # Through the view: the staged results (not merged yet) are carried too.
            query = sa.select(test_results_all).where(test_results_all.c.run_id.in_(chunk))
            # The driver's plain values (no column here needs SQLAlchemy's type processing):
            # a million results' row objects cost more than their COPY.
            rows = [dict(zip(result_names, r, strict=True)) for r in fetch(src, query)]
            for r in rows:
                r["run_id"] = moved(r["run_id"])
                r["test_id"] = test_ids[r["test_id"]]
            if rows:
                _append(dst, test_results, rows)
                report.add("test_results", len(rows))

        for table, period in ((test_daily, "day"), (test_weekly, "week")):
            _copy_rollup(src, dst, table, period, test_ids, moved, report)

        for rows in _batches(src, sa.select(image_builds), image_builds.c.run_id):
            for r in rows:
                r["run_id"] = moved(r["run_id"])
            dst.execute(image_builds.insert(), rows)
            report.add("image_builds", len(rows))

        keyed = (
            (alert_state, alert_state.c.fingerprint),
            (alerts_outbox, alerts_outbox.c.id),
            (quarantine, quarantine.c.test_id),
            (gpu_drains, gpu_drains.c.gpu_uuid),
        )
        for table, key in keyed:
            for rows in _batches(src, sa.select(table), key):
                if table is alert_state:
                    for r in rows:
                        r["last_run_id"] = moved(r["last_run_id"])
                if table is quarantine:
                    for r in rows:
                        r["test_id"] = test_ids[r["test_id"]]
                statement = dialect.insert(dst, table).on_conflict_do_nothing(
                    index_elements=[key.name]
                )
                written = 0
                for r in rows:  # one by one: rowcount says which were new
                    written += int(dst.execute(statement.values(**r)).rowcount or 0)
                report.add(table.name, written)

        if dialect.is_postgres(dst):
            # Ids were given explicitly: move the sequences past them.
            for table in (runs,):
                dst.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608 -- our table names
                        f"GREATEST((SELECT max(id) FROM {table.name}), 1))"
                    )
                )
    return report


def _append(dst: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` (each: every column of ``table``, none of which may conflict) to ``table``:
    PostgreSQL's COPY protocol there (psycopg escapes each value), inserts elsewhere."""
    if not dialect.is_postgres(dst):
        dst.execute(table.insert(), rows)
        return
    names = [c.name for c in table.columns]
    booleans = {c.name for c in table.columns if isinstance(c.type, sa.Boolean)}
    driver = dst.connection.driver_connection
    assert driver is not None
    sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"  # our table and column names
    error = dst.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for r in rows:
                copy.write_row(
                    [
                        (None if r[n] is None else bool(r[n])) if n in booleans else r[n]
                        for n in names
                    ]
                )
    except error as exc:  # as SQLAlchemy's own statements raise it: Store.begin translates
        raise sa.exc.DBAPIError.instance(sql, None, exc, error) from exc


def _copy_tests(src: Connection, dst: Connection) -> dict[int, int]:
    """``{source test id: target test id}``: each source nodeid found or added in the target."""
    mapping: dict[int, int] = {}
    for rows in _batches(src, sa.select(tests), tests.c.id):
        found = ids_of(dst, [str(r["nodeid"]) for r in rows])
        mapping.update((int(r["id"]), found[str(r["nodeid"])]) for r in rows)
    return mapping


def _copy_rollup(
    src: Connection,
    dst: Connection,
    table: sa.Table,
    period: str,
    test_ids: dict[int, int],
    moved: Any,
    report: CopyReport,
) -> None:
    """Add the source's per-day (per-week) sums to the target's (same test, period, tier:
    summed)."""
    order = (table.c[period], table.c.test_id, table.c.tier)
    offset = 0
    while True:
        page = sa.select(table).order_by(*order).limit(BATCH).offset(offset)
        rows = [dict(r) for r in src.execute(page).mappings()]
        if not rows:
            return
        offset += len(rows)
        merge_rollup(
            dst,
            period,
            [
                {
                    **{name: r[name] for name in ROW_COLUMNS},
                    period: r[period],
                    "test_id": test_ids[r["test_id"]],
                    "first_run_id": moved(r["first_run_id"]),
                    "last_run_id": moved(r["last_run_id"]),
                    "first_at": bind_datetime(dst, r["first_at"]),
                    "last_at": bind_datetime(dst, r["last_at"]),
                }
                for r in rows
            ],
        )
        report.add(table.name, len(rows))
