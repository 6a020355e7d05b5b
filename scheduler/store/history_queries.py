"""Test history: per-test sums over days, one test's attempts, and quarantine rows.

Fast at 1,000,000 results through the schema, not a cache: ``test_daily`` is written with the
results (see :mod:`.daily`), and a test's attempts are read from ``ix_test_results_history``
joined to ``runs`` by primary key. The store only reads and writes; which run outcomes count and
what a flake is are decided in :mod:`scheduler.history`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.daily import FAILING, PASSING
from scheduler.store.outbox_queries import OutboxEntry, insert_outbox_entry
from scheduler.store.schema import EVIDENCE_OUTCOMES, quarantine, runs

__all__ = ["AttemptRow", "HistoryQueries", "QuarantineRow", "TestSummaryRow"]


@dataclass(frozen=True)
class TestSummaryRow:
    """One test's sums over a window of days (final attempts of evidence runs)."""

    __test__ = False

    nodeid: str
    runs: int
    passed: int
    failed: int
    flaky: int
    skipped: int
    duration_sum: float
    duration_max: float
    peak_rss_max: int | None
    first_at: datetime | None
    last_at: datetime | None


class AttemptRow(NamedTuple):
    """One attempt of one test in one run, with the run's commit (a tuple: thousands are read
    per query)."""

    nodeid: str
    run_id: int
    tier: str
    sha: str | None
    finished_at: datetime | None
    attempt: int
    final: bool
    outcome: str
    duration_s: float
    peak_rss_bytes: int | None = None
    cuda_peak_bytes: int | None = None
    owner: str | None = None


@dataclass(frozen=True)
class QuarantineRow:
    nodeid: str
    reason: str
    created_at: datetime
    owner: str | None = None
    expires_at: datetime | None = None
    expiry_alerted_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "reason": self.reason,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expiry_alerted_at": (
                self.expiry_alerted_at.isoformat() if self.expiry_alerted_at else None
            ),
        }


def _summary(row: Any) -> TestSummaryRow:
    return TestSummaryRow(
        nodeid=str(row[0]),
        runs=int(row[1] or 0),
        passed=int(row[2] or 0),
        failed=int(row[3] or 0),
        flaky=int(row[4] or 0),
        skipped=int(row[5] or 0),
        duration_sum=float(row[6] or 0.0),
        duration_max=float(row[7] or 0.0),
        peak_rss_max=None if row[8] is None else int(row[8]),
        first_at=_stamp(row[9]),
        last_at=_stamp(row[10]),
    )


def _stamp(text: str | datetime | None) -> datetime | None:
    return dialect.stamp(text)


def _runs_of(
    conn: Connection, from_run_id: int, tier: str | None, evidence_only: bool
) -> dict[int, tuple[str, str | None, datetime | None]]:
    """``{run id: (tier, sha, finished_at)}`` of the runs from ``from_run_id`` on."""
    sql = "SELECT id, tier, sha, finished_at, outcome FROM runs WHERE id >= ?"
    params: list[Any] = [from_run_id]
    if tier:
        sql += " AND tier = ?"
        params.append(tier)
    evidence = set(EVIDENCE_OUTCOMES)
    return {
        int(r[0]): (str(r[1]), r[2], _stamp(r[3]))
        for r in _rows(conn, sql, params)
        if not evidence_only or r[4] in evidence
    }


def _rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows straight from the sqlite3 cursor, in the open transaction: history queries return
    thousands of rows, and SQLAlchemy's per-row result processing would cost more than SQLite's
    own work (about 4x at 1,000,000 results). Plain SQL with placeholders only."""
    return dialect.driver_rows(conn, sql, params)


_PASSED, _FAILED, _FLAKY = 1, 2, 4
_BAD = _FAILED | _FLAKY
_VERDICT_BITS = {
    **{o: _PASSED for o in PASSING},
    **{o: _FAILED for o in FAILING},
    "flaky": _FLAKY,
}
_OUTCOME_OF_BIT = ((_FLAKY, "flaky"), (_PASSED, "passed"), (_FAILED, "failed"))


def _commit(run_id: int, window: dict[int, tuple[str, str | None, datetime | None]]) -> str:
    return window[run_id][1] or f"run:{run_id}"


def _quarantine(row: Any) -> QuarantineRow:
    return QuarantineRow(
        nodeid=row["nodeid"],
        reason=row["reason"],
        created_at=aware(row["created_at"]),
        owner=row["owner"],
        expires_at=aware(row["expires_at"]),
        expiry_alerted_at=aware(row["expiry_alerted_at"]),
    )


class HistoryQueries(QueryBase):
    """``test_daily``, one test's attempts, ``quarantine``."""

    def test_summaries(
        self,
        since_day: str,
        tier: str | None = None,
        nodeids: Sequence[str] | None = None,
        *,
        with_failures: bool = False,
    ) -> list[TestSummaryRow]:
        """Per test, the sums of ``test_daily`` from ``since_day`` (``YYYY-MM-DD``) on."""
        sql = (
            "SELECT nodeid, sum(runs), sum(passed), sum(failed), sum(flaky), sum(skipped), "
            "sum(duration_sum), max(duration_max), max(peak_rss_max), min(first_at), "
            "max(last_at) FROM test_daily WHERE day >= ?"
        )
        params: list[Any] = [since_day]
        if tier:
            sql += " AND tier = ?"
            params.append(tier)
        if nodeids is not None:
            sql += f" AND nodeid IN ({', '.join('?' * len(nodeids))})"
            params += list(nodeids)
        sql += " GROUP BY nodeid"
        if with_failures:
            sql += " HAVING sum(failed) + sum(flaky) > 0"
        with self.begin() as conn:
            return [_summary(row) for row in _rows(conn, sql, params)]

    def first_run_id_since(self, since: datetime) -> int:
        """The id of the oldest run queued at or after ``since`` (ids grow with time)."""
        with self.begin() as conn:
            found = conn.execute(
                sa.select(runs.c.id).where(runs.c.queued_at >= since).order_by(runs.c.id).limit(1)
            ).scalar()
            if found is not None:
                return int(found)
            top = conn.execute(sa.select(sa.func.max(runs.c.id))).scalar()
            return int(top or 0) + 1

    def test_attempts(
        self,
        nodeids: Sequence[str],
        *,
        tier: str | None = None,
        from_run_id: int = 0,
        newest: int | None = None,
        evidence_only: bool = True,
        lean: bool = False,
    ) -> list[AttemptRow]:
        """Attempts of ``nodeids`` in runs from ``from_run_id`` on (grouped by test, not sorted;
        oldest first with ``newest``).

        ``newest`` keeps only the newest that many attempts (one test: ``schedctl test``);
        ``evidence_only`` drops runs whose outcome says nothing about their tests. The runs of
        the window are read first and joined here: SQLite would otherwise walk every result of
        every run instead of the few tests' rows in ``ix_test_results_history``. Rows come
        through the driver's own cursor: this query returns thousands of rows per call.
        ``lean`` reads only what a verdict needs (outcomes), from that index alone; duration,
        memory and owner are then left empty.
        """
        if not nodeids:
            return []
        marks = ", ".join("?" * len(nodeids))
        columns = (
            "nodeid, run_id, attempt, final, outcome, 0.0, NULL, NULL, NULL"
            if lean
            else "nodeid, run_id, attempt, final, outcome, duration_s, peak_rss_bytes, "
            "cuda_peak_bytes, owner"
        )
        sql = (
            f"SELECT {columns} FROM test_results "  # noqa: S608 -- placeholders only
            f"WHERE nodeid IN ({marks}) AND run_id >= ?"
        )
        params: list[Any] = [*nodeids, from_run_id]
        if newest is not None:
            sql += " ORDER BY run_id DESC, attempt DESC LIMIT ?"
            params.append(newest)
        # Otherwise rows come in the index's order, by test then run (callers sort what they
        # need): an ORDER BY here makes SQLite sort every row through a temporary B-tree.
        with self.begin() as conn:
            found = _rows(conn, sql, params)
            if newest is not None:
                found.reverse()
            first = min((r[1] for r in found), default=from_run_id)
            window = _runs_of(conn, first, tier, evidence_only)
        out: list[AttemptRow] = []
        for r in found:
            run = window.get(r[1])
            if run is not None:
                out.append(
                    AttemptRow(r[0], r[1], run[0], run[1], run[2], r[2] or 0, bool(r[3]), r[4],
                               r[5] or 0.0, r[6], r[7], r[8])
                )  # fmt: skip
        return out

    def verdict_runs(
        self, nodeids: Sequence[str], *, tier: str | None, from_run_id: int
    ) -> tuple[list[AttemptRow], dict[str, int]]:
        """What a flaky verdict needs of ``nodeids`` in evidence runs from ``from_run_id`` on:
        per test, its number of runs with a pass or fail, and only the runs that can change the
        verdict, as one synthetic attempt per outcome seen in the run (``passed``, ``failed``,
        ``flaky``): its first run, the runs where it failed, the run after each of those (it
        ends a failing stretch) and every run at a commit where it failed. A stable test costs
        one row, not one per run: building a row per attempt cost more than reading them.
        """
        if not nodeids:
            return [], {}
        sql = (
            f"SELECT nodeid, run_id, outcome FROM test_results "  # noqa: S608 -- placeholders only
            f"WHERE nodeid IN ({', '.join('?' * len(nodeids))}) AND run_id >= ?"
        )
        with self.begin() as conn:
            found = _rows(conn, sql, [*nodeids, from_run_id])
            window = _runs_of(conn, from_run_id, tier, evidence_only=True)
        seen: dict[str, dict[int, int]] = {}
        for nodeid, run_id, outcome in found:
            bit = _VERDICT_BITS.get(outcome)
            if bit and run_id in window:
                per_run = seen.setdefault(nodeid, {})
                per_run[run_id] = per_run.get(run_id, 0) | bit
        rows: list[AttemptRow] = []
        for nodeid, per_run in seen.items():
            ordered = sorted(per_run)
            bad = [run_id for run_id in ordered if per_run[run_id] & _BAD]
            bad_commits = {_commit(run_id, window) for run_id in bad}
            after = {
                ordered[k + 1] for k, run_id in enumerate(ordered[:-1]) if per_run[run_id] & _BAD
            }
            for run_id in ordered:
                keep = run_id == ordered[0] or per_run[run_id] & _BAD or run_id in after
                if keep or _commit(run_id, window) in bad_commits:
                    run_tier, sha, _ = window[run_id]
                    rows += [
                        AttemptRow(nodeid, run_id, run_tier, sha, None, 0, True, outcome, 0.0)
                        for bit, outcome in _OUTCOME_OF_BIT
                        if per_run[run_id] & bit
                        and not (bit != _FLAKY and per_run[run_id] & _FLAKY)
                    ]
        return rows, {nodeid: len(per_run) for nodeid, per_run in seen.items()}

    def recent_durations(
        self, nodeids: Sequence[str], *, tier: str | None, from_run_id: int, limit: int
    ) -> dict[str, list[float]]:
        """Per test, the durations of its newest ``limit`` final results from ``from_run_id`` on
        (runs whose outcome is test evidence, skips left out), in one transaction."""
        sql = (
            "SELECT run_id, duration_s FROM test_results WHERE nodeid = ? AND run_id >= ? "
            "AND final AND outcome != 'skipped' ORDER BY run_id DESC LIMIT ?"
        )
        out: dict[str, list[float]] = {}
        with self.begin() as conn:
            window = _runs_of(conn, from_run_id, tier, evidence_only=True)
            for nodeid in nodeids:
                rows = _rows(conn, sql, (nodeid, from_run_id, limit))
                out[nodeid] = [float(d or 0.0) for run_id, d in rows if run_id in window]
        return out

    # -- quarantine ----------------------------------------------------------------------------

    def quarantine_add(self, row: QuarantineRow) -> None:
        """Add or replace the quarantine of ``row.nodeid`` (a replaced one may alert again)."""
        values = {
            "nodeid": row.nodeid,
            "reason": row.reason,
            "owner": row.owner,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "expiry_alerted_at": None,
        }
        with self.begin() as conn:
            statement = dialect.insert(conn, quarantine).values(**values)
            conn.execute(statement.on_conflict_do_update(index_elements=["nodeid"], set_=values))

    def quarantine_remove(self, nodeid: str) -> bool:
        with self.begin() as conn:
            return bool(
                conn.execute(quarantine.delete().where(quarantine.c.nodeid == nodeid)).rowcount
            )

    def quarantine_list(self) -> list[QuarantineRow]:
        with self.begin() as conn:
            rows = conn.execute(sa.select(quarantine).order_by(quarantine.c.nodeid)).mappings()
            return [_quarantine(r) for r in rows]

    def quarantined(self, nodeids: Sequence[str], now: datetime) -> list[QuarantineRow]:
        """The unexpired quarantines among ``nodeids``."""
        if not nodeids:
            return []
        query = sa.select(quarantine).where(
            quarantine.c.nodeid.in_(list(nodeids)),
            sa.or_(quarantine.c.expires_at.is_(None), quarantine.c.expires_at > now),
        )
        with self.begin() as conn:
            return [_quarantine(r) for r in conn.execute(query).mappings()]

    def claim_expired_quarantines(
        self, now: datetime, entries_for: Callable[[QuarantineRow], Sequence[OutboxEntry]]
    ) -> list[QuarantineRow]:
        """Mark each expired, not yet alerted quarantine as alerted and enqueue its alerts, in one
        ``BEGIN IMMEDIATE`` transaction: two processes never alert the same expiry twice."""
        claimed: list[QuarantineRow] = []
        with self.begin(immediate=True) as conn:
            rows = conn.execute(
                sa.select(quarantine).where(
                    quarantine.c.expires_at.is_not(None),
                    quarantine.c.expires_at <= now,
                    quarantine.c.expiry_alerted_at.is_(None),
                )
            ).mappings()
            for row in [_quarantine(r) for r in rows]:
                conn.execute(
                    quarantine.update()
                    .where(quarantine.c.nodeid == row.nodeid)
                    .values(expiry_alerted_at=now)
                )
                for entry in entries_for(row):
                    insert_outbox_entry(conn, entry, now)
                claimed.append(row)
        return claimed
