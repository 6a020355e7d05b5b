"""What the web pages and the slowest-tests gauge read that no other query module offers.

Runs filtered by tier, outcome, trigger and date, paged by id (keyset: ``before_id``), the
durations of a tier's newest runs, the tiers the store knows, and the slowest tests of a tier's
newest run with a test verdict. Reads only; everything is served from the indexes of
:mod:`.schema` (``ix_runs_tier_id``, ``ix_runs_outcome``, ``ix_test_results_run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from scheduler.store.base import QueryBase
from scheduler.store.records import RunRecord
from scheduler.store.schema import EVIDENCE_OUTCOMES, FINAL_OUTCOMES, runs, test_results, tests

__all__ = ["RunFilter", "SlowTest", "WebQueries"]


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


_NEWEST_EVIDENCE = (
    sa.select(runs.c.id)
    .where(runs.c.tier == sa.bindparam("tier"), runs.c.outcome.in_(EVIDENCE_OUTCOMES))
    .order_by(runs.c.id.desc())
    .limit(1)
)
_SLOWEST = (
    sa.select(tests.c.nodeid, test_results.c.duration_s)
    .join(tests, tests.c.id == test_results.c.test_id)
    .where(test_results.c.run_id == sa.bindparam("run_id"), test_results.c.final.is_(True))
    .order_by(test_results.c.duration_s.desc(), tests.c.nodeid)
    .limit(sa.bindparam("limit"))
)


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
        """:meth:`slowest_tests` of each tier, read in one transaction (the gauge's scrape)."""
        found: dict[str, list[SlowTest]] = {}
        with self.begin() as conn:
            for tier in tiers:
                run_id = conn.execute(_NEWEST_EVIDENCE, {"tier": tier}).scalar()
                if run_id is None:
                    found[tier] = []
                    continue
                rows = conn.execute(_SLOWEST, {"run_id": run_id, "limit": limit})
                found[tier] = [SlowTest(str(r[0]), float(r[1] or 0.0), int(run_id)) for r in rows]
        return found
