"""Flaky verdicts from our own history, each with its evidence.

A test is flaky when

* **same commit**: it passed and failed at one commit, in one run (a rerun passed: outcome
  ``flaky``) or in separate runs; or
* **intermittent**: it failed in at least :data:`MIN_EPISODES` separate episodes (a stretch of
  failing runs between passing ones) that each began at a commit never seen failing before. A
  test broken by a commit and fixed by a later one is one episode: a regression, not a flake; a
  known-bad commit run again (another branch, a re-run) starts no new episode.

Only attempts of runs whose outcome is test evidence reach here (the store filters them:
``Outcome.is_test_evidence``), so a timeout of the whole run, an OOM kill or an infra failure
never counts as a test failure. Skips and other non-verdicts are ignored.

:func:`flip_rate_verdict` is the baseline the benchmark compares with: flips between pass and
fail per pair of consecutive runs, above a threshold.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.store import AttemptRow

MIN_EPISODES = 3
FLIP_RATE_THRESHOLD = 0.05
PASS = frozenset({"passed", "flaky", "xpassed", "xfailed"})
FAIL = frozenset({"failed", "error"})


@dataclass(frozen=True)
class Evidence:
    """Why a test is called flaky: the kind, the commit and the runs that show it."""

    kind: str  # "same-commit" | "intermittent"
    sha: str | None
    run_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "sha": self.sha, "run_ids": list(self.run_ids)}


@dataclass(frozen=True)
class Verdict:
    nodeid: str
    flaky: bool
    score: float
    """Share of the observed runs whose failure is unexplained (an estimate of its fail rate)."""
    runs: int
    evidence: tuple[Evidence, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "flaky": self.flaky,
            "score": round(self.score, 4),
            "runs": self.runs,
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass(slots=True)
class _Run:
    run_id: int
    sha: str | None
    passed: bool = False
    failed: bool = False

    @property
    def commit(self) -> str:
        """Runs without a known commit compare only with themselves."""
        return self.sha or f"run:{self.run_id}"


def _runs(attempts: Sequence[AttemptRow]) -> list[_Run]:
    """One entry per run with a verdict, oldest first; a run can both fail and pass (reruns)."""
    by_id: dict[int, _Run] = {}
    for a in attempts:
        if a.outcome not in PASS and a.outcome not in FAIL:
            continue
        run = by_id.setdefault(a.run_id, _Run(a.run_id, a.sha))
        if a.outcome in FAIL:
            run.failed = True
        else:
            run.passed = True
        if a.outcome == "flaky":  # stored on the passing attempt; its failure may be pruned
            run.failed = True
    return [by_id[k] for k in sorted(by_id)]


def classify(nodeid: str, attempts: Sequence[AttemptRow], total: int | None = None) -> Verdict:
    """The verdict for one test from its attempts (any order, any number of tiers).

    ``total``: its number of runs with a verdict when ``attempts`` holds only the runs that can
    change the verdict (:meth:`~scheduler.store.Store.verdict_runs`)."""
    runs = _runs(attempts)
    if not runs:
        return Verdict(nodeid, False, 0.0, 0)
    evidence: list[Evidence] = []
    unexplained: set[int] = set()
    by_commit: dict[str, list[_Run]] = {}
    for run in runs:
        by_commit.setdefault(run.commit, []).append(run)
    for group in by_commit.values():
        if any(r.passed for r in group) and any(r.failed for r in group):
            evidence.append(Evidence("same-commit", group[0].sha, tuple(r.run_id for r in group)))
            unexplained.update(r.run_id for r in group if r.failed)
    episodes = _new_episodes(runs)
    if len(episodes) >= MIN_EPISODES:
        for episode in episodes:
            evidence.append(
                Evidence("intermittent", episode[0].sha, tuple(r.run_id for r in episode))
            )
            unexplained.update(r.run_id for r in episode)
    seen = max(total or 0, len(runs))
    return Verdict(nodeid, bool(evidence), len(unexplained) / seen, seen, tuple(evidence))


def _new_episodes(runs: Sequence[_Run]) -> list[list[_Run]]:
    """Stretches of runs that failed without passing, each begun at a never-failed commit."""
    episodes: list[list[_Run]] = []
    seen_failing: set[str] = set()
    current: list[_Run] | None = None
    for run in runs:
        clean_fail = run.failed and not run.passed
        if not clean_fail:
            current = None
            continue
        if current is None:
            current = []
            if run.commit not in seen_failing:
                episodes.append(current)
        current.append(run)
        seen_failing.add(run.commit)
    return episodes


def flip_rate(attempts: Sequence[AttemptRow]) -> float:
    """Pass/fail flips between consecutive runs (first attempts only) per pair of runs."""
    firsts: dict[int, bool] = {}
    for a in attempts:
        if a.attempt == 0 and (a.outcome in PASS or a.outcome in FAIL):
            firsts[a.run_id] = a.outcome in FAIL and a.outcome != "flaky"
    seq = [firsts[k] for k in sorted(firsts)]
    if len(seq) < 2:
        return 0.0
    flips = sum(1 for x, y in itertools.pairwise(seq) if x != y)
    return flips / (len(seq) - 1)


def flip_rate_verdict(
    attempts: Sequence[AttemptRow], threshold: float = FLIP_RATE_THRESHOLD
) -> bool:
    return flip_rate(attempts) >= threshold
