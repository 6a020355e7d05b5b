"""The audit: the marker distribution, what each tier selects and how long it is predicted to take.

A tier selects a test when the test lies under one of the tier's ``paths`` (all, when none) and
its markers satisfy the tier's ``-m`` expression. A tier's predicted duration is the sum of the
p90 durations of its tests with history; tests without history are counted apart (``unknown``),
never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from scheduler.config import Config
from scheduler.history.owners import Owners
from scheduler.history.stats import History, percentile
from scheduler.markers.collect import Collection
from scheduler.markers.expression import compile_expression
from scheduler.store import Store
from scheduler.store.coverage_data import files_by_test

PERCENTILE_SAMPLE = 100


@dataclass(frozen=True)
class TestFacts:
    """What history says about one collected test (``p90_s`` None: no history)."""

    __test__ = False

    nodeid: str
    runs: int = 0
    failed: int = 0
    flaky: bool = False
    flaky_score: float = 0.0
    p90_s: float | None = None
    recent_p90_s: float | None = None
    older_p90_s: float | None = None
    owner: str = ""
    critical: bool = False
    covers: tuple[str, ...] = ()
    """Critical modules (``markers.critical_modules``) the daily coverage report saw it run."""


@dataclass(frozen=True)
class TierPrediction:
    tier: str
    expression: str | None
    timeout_s: float
    selected: tuple[str, ...]
    known_s: float
    unknown: int

    @property
    def fits(self) -> bool:
        return self.known_s <= self.timeout_s

    def to_json(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "expression": self.expression,
            "timeout_s": self.timeout_s,
            "selected": len(self.selected),
            "predicted_s": round(self.known_s, 3),
            "unknown": self.unknown,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class DistributionRow:
    marker: str
    count: int
    percent: float


@dataclass(frozen=True)
class Distribution:
    total: int
    marked: int
    rows: tuple[DistributionRow, ...]

    @property
    def unmarked(self) -> int:
        return self.total - self.marked

    @property
    def marked_percent(self) -> float:
        return pct(self.marked, self.total)

    @property
    def unmarked_percent(self) -> float:
        return pct(self.unmarked, self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "marked": self.marked,
            "marked_percent": round(self.marked_percent, 1),
            "unmarked": self.unmarked,
            "unmarked_percent": round(self.unmarked_percent, 1),
            "markers": [
                {"marker": r.marker, "count": r.count, "percent": round(r.percent, 1)}
                for r in self.rows
            ],
        }


def pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def distribution(items: Mapping[str, Iterable[str]], registered: Iterable[str]) -> Distribution:
    """Per registered marker (and any other marker seen) its count; marked = any of them."""
    names = set(registered)
    counts: dict[str, int] = dict.fromkeys(sorted(names), 0)
    marked = 0
    for markers in items.values():
        own = set(markers)
        for name in own:
            counts[name] = counts.get(name, 0) + 1
        if own & names or (not names and own):
            marked += 1
    total = len(items)
    rows = tuple(
        DistributionRow(name, count, pct(count, total))
        for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return Distribution(total, marked, rows)


def under_paths(nodeid: str, paths: Iterable[str]) -> bool:
    found = [p.rstrip("/") for p in paths if p.strip("./")]
    if not found:
        return True
    return any(nodeid == p or nodeid.startswith((p + "::", p + "/")) for p in found)


def pytest_tiers(config: Config) -> list[str]:
    return [n for n, t in config.tiers.items() if t.kind == "pytest" and t.enabled]


def selects(config: Config, tier: str, markers: Iterable[str], nodeid: str) -> bool:
    t = config.tier(tier)
    return under_paths(nodeid, t.paths) and compile_expression(t.markers)(frozenset(markers))


def predict(
    config: Config, tier: str, items: Mapping[str, Iterable[str]], facts: Mapping[str, TestFacts]
) -> TierPrediction:
    t = config.tier(tier)
    chosen = tuple(sorted(n for n, m in items.items() if selects(config, tier, m, n)))
    known = [facts[n].p90_s for n in chosen if n in facts and facts[n].p90_s is not None]
    return TierPrediction(
        tier, t.markers, t.timeout, chosen, float(sum(k for k in known if k is not None)),
        len(chosen) - len(known),
    )  # fmt: skip


def coverage_map(config: Config, store: Store) -> tuple[int | None, dict[str, set[str]]]:
    """The newest coverage run's per-test critical files (daily tier first, else any tier with
    ``coverage: true``), and that run's id; nothing when no such run or no contexts."""
    globs = config.markers.critical_modules
    if not globs:
        return None, {}
    names = [n for n, t in config.tiers.items() if t.coverage]
    names.sort(key=lambda n: n != config.markers.daily_tier)
    for name in names:
        record = store.last_run(name, outcomes=("passed", "failed"))
        if record is None or not record.run_dir:
            continue

        def critical(path: str) -> bool:
            return any(fnmatchcase(path, g) or fnmatchcase(path, "*/" + g) for g in globs)

        found = files_by_test(Path(record.run_dir) / ".coverage", critical)
        if found:
            return record.id, found
    return None, {}


def _short(path: str, globs: Iterable[str]) -> str:
    """``path`` from where a critical-module glob starts matching (host paths stay private)."""
    parts = path.split("/")
    for i in range(len(parts)):
        tail = "/".join(parts[i:])
        if any(fnmatchcase(tail, g) for g in globs):
            return tail
    return parts[-1]


def load_facts(
    config: Config,
    store: Store,
    nodeids: Iterable[str],
    now: datetime,
    owners: Owners,
    covering: dict[str, set[str]] | None = None,
) -> dict[str, TestFacts]:
    """History of the collected tests in ``markers.history_window`` (all tiers)."""
    wanted = set(nodeids)
    history = History(store, owners)
    window = config.markers.history_window
    stats = history.tests(now, since_s=window, sort="duration", limit=10**9)
    _, first_run = history.window(now, window)
    known = [s for s in stats if s.nodeid in wanted]
    durations = store.recent_durations(
        [s.nodeid for s in known], tier=None, from_run_id=first_run, limit=PERCENTILE_SAMPLE
    )
    critical = config.markers.critical_paths
    globs = config.markers.critical_modules
    covers = {
        n: tuple(sorted({_short(p, globs) for p in paths})) for n, paths in (covering or {}).items()
    }
    facts: dict[str, TestFacts] = {}
    for s in known:
        newest = durations.get(s.nodeid, [])  # newest first
        half = len(newest) // 2
        facts[s.nodeid] = TestFacts(
            nodeid=s.nodeid,
            runs=s.verdicts,
            failed=s.summary.failed,
            flaky=bool(s.verdict and s.verdict.flaky),
            flaky_score=s.flaky_score,
            p90_s=s.p90_s,
            recent_p90_s=percentile(newest[:half], 90) if half else None,
            older_p90_s=percentile(newest[half:], 90) if half else None,
            owner=s.owner,
            critical=any(fnmatchcase(s.nodeid, g) for g in critical),
            covers=covers.get(s.nodeid, ()),
        )
    for nodeid in wanted - facts.keys():
        facts[nodeid] = TestFacts(
            nodeid=nodeid,
            owner=" ".join(owners.of_test(nodeid)),
            critical=any(fnmatchcase(nodeid, g) for g in critical),
            covers=covers.get(nodeid, ()),
        )
    return facts


@dataclass
class Audit:
    """Everything ``schedctl markers audit`` reports (recommendations: :mod:`.recommend`)."""

    collection: Collection
    facts: dict[str, TestFacts]
    distribution: Distribution
    tiers: list[TierPrediction]
    unselected: list[str]
    multi: dict[str, list[str]]
    generated_at: datetime
    window_s: float
    coverage_run_id: int | None = None


def audit(config: Config, store: Store, collection: Collection, now: datetime) -> Audit:
    owners = Owners.load(collection.workdir or config.project.path, config.owners)
    items = collection.items
    coverage_run, covering = coverage_map(config, store)
    facts = load_facts(config, store, items, now, owners, covering)
    tiers = [predict(config, t, items, facts) for t in pytest_tiers(config)]
    runs_in: dict[str, list[str]] = {n: [] for n in items}
    for p in tiers:
        for n in p.selected:
            runs_in[n].append(p.tier)
    return Audit(
        collection=collection,
        facts=facts,
        distribution=distribution(items, collection.registered),
        tiers=tiers,
        unselected=sorted(n for n, t in runs_in.items() if not t),
        multi={n: t for n, t in sorted(runs_in.items()) if len(t) > 1},
        generated_at=now,
        window_s=config.markers.history_window,
        coverage_run_id=coverage_run,
    )


def window_start(now: datetime, window_s: float) -> datetime:
    return now - timedelta(seconds=window_s)
