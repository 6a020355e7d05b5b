"""What the web pages and the slowest-tests gauge read that no other query module offers.

Runs filtered by tier, outcome, trigger and date, paged by id (keyset: ``before_id``), the
durations of a tier's newest runs, the tiers the store knows, and the slowest tests of a tier's
newest run with a test verdict. Reads only; everything is served from the indexes of
:mod:`.schema` (``ix_runs_tier_id``, ``ix_runs_outcome``, ``ix_test_results_run``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store.base import QueryBase
from scheduler.store.records import RunRecord
from scheduler.store.schema import EVIDENCE_OUTCOMES, FINAL_OUTCOMES, runs, test_results_all, tests

__all__ = ["RunFilter", "SlowTest", "WebQueries"]

T = TypeVar("T")


class RunFilter(NamedTuple):
    """The Runs page's filters; ``None`` leaves a column unfiltered."""

    tier: str | None = None
    outcome: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class SlowTest(NamedTuple):
    nodeid: str
    duration_s: float
    run_id: int


_UNION_TERMS = 100
"""Terms per compound statement (SQLite allows 500)."""


_IS_EVIDENCE = sa.or_(*(runs.c.outcome == sa.literal_column(f"'{o}'") for o in EVIDENCE_OUTCOMES))
"""The verdict outcomes written into the statement: an ``IN`` list of bound values is expanded
again at every execution, 24 times per scrape here."""


@functools.lru_cache(maxsize=8)
def _newest_evidence_of(count: int) -> sa.CompoundSelect[Any]:
    """Per tier, the id of its newest run with a test verdict: one index search per term."""
    terms = []
    for i in range(count):
        sub = (
            sa.select(runs.c.tier, runs.c.id)
            .where(runs.c.tier == sa.bindparam(f"tier{i}"), _IS_EVIDENCE)
            .order_by(runs.c.id.desc())
            .limit(1)
            .subquery()
        )
        terms.append(sa.select(sub))
    return sa.union_all(*terms)


@functools.lru_cache(maxsize=8)
def _slowest_of(count: int) -> sa.CompoundSelect[Any]:
    """Per run, its ``limit`` slowest final results (ix_test_results_run)."""
    terms = []
    for i in range(count):
        sub = (
            sa.select(test_results_all.c.run_id, tests.c.nodeid, test_results_all.c.duration_s)
            .join(tests, tests.c.id == test_results_all.c.test_id)
            .where(
                test_results_all.c.run_id == sa.bindparam(f"run{i}"),
                test_results_all.c.final.is_(True),
            )
            .order_by(test_results_all.c.duration_s.desc(), tests.c.nodeid)
            .limit(sa.bindparam(f"limit{i}"))
            .subquery()
        )
        terms.append(sa.select(sub))
    return sa.union_all(*terms)


def _chunks(items: Sequence[T], size: int = _UNION_TERMS) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class WebQueries(QueryBase):
    """Read-only lookups for :mod:`scheduler.web` and the slowest-tests gauge."""

    def filter_runs(
        self, where: RunFilter, *, limit: int, before_id: int | None = None
    ) -> list[RunRecord]:
        """Runs matching ``where``, newest first, at most ``limit``, ids below ``before_id``."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if where.tier:
            query = query.where(runs.c.tier == where.tier)
        if where.outcome:
            query = query.where(runs.c.outcome == where.outcome)
        if where.trigger:
            query = query.where(runs.c.trigger == where.trigger)
        if where.since is not None:
            query = query.where(runs.c.queued_at >= where.since)
        if where.until is not None:
            query = query.where(runs.c.queued_at < where.until)
        if before_id is not None:
            query = query.where(runs.c.id < before_id)
        with self.begin() as conn:
            return [RunRecord.from_row(r) for r in conn.execute(query).mappings()]

    def known_tiers(self) -> list[str]:
        """Every tier with a run in the store, by name."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(runs.c.tier).distinct().order_by(runs.c.tier))
            return [str(r[0]) for r in rows]

    def tier_durations(self, tier: str, limit: int) -> list[tuple[int, float, str]]:
        """``(run id, duration s, outcome)`` of the tier's newest ``limit`` finished runs that
        have a duration, oldest first."""
        query = (
            sa.select(runs.c.id, runs.c.duration_s, runs.c.outcome)
            .where(
                runs.c.tier == tier,
                runs.c.outcome.in_(FINAL_OUTCOMES),
                runs.c.duration_s.is_not(None),
            )
            .order_by(runs.c.id.desc())
            .limit(limit)
        )
        with self.begin() as conn:
            found = [(int(r[0]), float(r[1]), str(r[2])) for r in conn.execute(query)]
        found.reverse()
        return found

    def slowest_tests(self, tier: str, limit: int) -> list[SlowTest]:
        """The ``limit`` slowest final results of the tier's newest run with a test verdict."""
        return self.slowest_tests_of([tier], limit)[tier]

    def slowest_tests_of(self, tiers: Sequence[str], limit: int) -> dict[str, list[SlowTest]]:
        """:meth:`slowest_tests` of each tier, read in one transaction."""
        with self.begin() as conn:
            newest = _newest_evidence(conn, tiers)
            by_run = _slowest_in(conn, sorted(set(newest.values())), limit)
        return {name: list(by_run.get(newest.get(name, -1), ())) for name in tiers}

    def newest_evidence_runs(self, tiers: Sequence[str]) -> dict[str, int]:
        """The id of each tier's newest run with a test verdict (tiers without one left out).
        Such a run is final: its results were written with its outcome and never change."""
        with self.begin() as conn:
            return _newest_evidence(conn, tiers)

    def slowest_in_runs(self, run_ids: Sequence[int], limit: int) -> dict[int, list[SlowTest]]:
        """The ``limit`` slowest final results of each run (runs without results left out)."""
        with self.begin() as conn:
            return _slowest_in(conn, run_ids, limit)


def _newest_evidence(conn: Connection, tiers: Sequence[str]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for chunk in _chunks(list(dict.fromkeys(tiers))):
        params = {f"tier{i}": name for i, name in enumerate(chunk)}
        for tier, run_id in conn.execute(_newest_evidence_of(len(chunk)), params):
            newest[str(tier)] = int(run_id)
    return newest


def _slowest_in(conn: Connection, run_ids: Sequence[int], limit: int) -> dict[int, list[SlowTest]]:
    by_run: dict[int, list[SlowTest]] = {}
    for ids in _chunks(list(dict.fromkeys(run_ids))):
        params: dict[str, int] = {f"run{i}": run_id for i, run_id in enumerate(ids)}
        params.update({f"limit{i}": limit for i in range(len(ids))})
        for run_id, nodeid, duration in conn.execute(_slowest_of(len(ids)), params):
            slow = SlowTest(str(nodeid), float(duration or 0.0), int(run_id))
            by_run.setdefault(slow.run_id, []).append(slow)
    for found in by_run.values():
        found.sort(key=lambda slow: (-slow.duration_s, slow.nodeid))
    return by_run
