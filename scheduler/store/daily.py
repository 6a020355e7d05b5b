"""``test_daily``: per tier, test and UTC day, the sums ``schedctl tests`` reads.

Written by :meth:`~scheduler.store.run_queries.RunQueries.finish_run` in the transaction that
stores the run's results, so the table always agrees with ``test_results``: no cache to go stale.
Only each test's final attempt counts (a rerun that passed makes the test ``flaky``, once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.records import TestResultRow
from scheduler.store.schema import runs, test_daily

PASSING = frozenset({"passed", "xfailed", "xpassed"})
FAILING = frozenset({"failed", "error"})


def day_of(when: datetime) -> str:
    """The UTC day a run's results count on (SQLite keeps datetimes naive, in UTC)."""
    return when.strftime("%Y-%m-%d")


def add_to_daily(
    conn: Connection, run_id: int, finished_at: datetime, results: Sequence[TestResultRow]
) -> None:
    tier_name = str(conn.execute(sa.select(runs.c.tier).where(runs.c.id == run_id)).scalar_one())
    day = day_of(finished_at)
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        if not r.final:
            continue
        rows[r.nodeid] = {
            "tier": tier_name,
            "nodeid": r.nodeid,
            "day": day,
            "runs": 1,
            "passed": int(r.outcome in PASSING),
            "failed": int(r.outcome in FAILING),
            "flaky": int(r.outcome == "flaky"),
            "skipped": int(r.outcome == "skipped"),
            "duration_sum": r.duration_s,
            "duration_max": r.duration_s,
            "peak_rss_max": r.peak_rss_bytes,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "first_at": finished_at,
            "last_at": finished_at,
        }
    if not rows:
        return
    insert = dialect.insert(conn, test_daily)
    new = insert.excluded
    table = test_daily.c
    upsert = insert.on_conflict_do_update(
        index_elements=["nodeid", "day", "tier"],
        set_={
            "runs": table.runs + new.runs,
            "passed": table.passed + new.passed,
            "failed": table.failed + new.failed,
            "flaky": table.flaky + new.flaky,
            "skipped": table.skipped + new.skipped,
            "duration_sum": table.duration_sum + new.duration_sum,
            "duration_max": dialect.greatest(conn, table.duration_max, new.duration_max),
            "peak_rss_max": dialect.greatest(conn, table.peak_rss_max, new.peak_rss_max),
            "last_run_id": dialect.greatest(conn, table.last_run_id, new.last_run_id),
            "last_at": dialect.greatest(conn, table.last_at, new.last_at),
        },
    )
    conn.execute(upsert, list(rows.values()))
