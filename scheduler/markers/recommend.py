"""Recommendations, each with its evidence, and the tier durations they predict.

- **hourly**: the hourly set is chosen to fit ``markers.hourly_budget`` (default half the hourly
  tier's timeout) by value per second: a test's value is 1, plus 2 when it matches a
  ``critical_paths`` glob, plus 1 when the daily coverage report shows it covering a
  ``critical_modules`` file (an extra signal: without the report nothing else changes), plus 1
  when the hourly tier already runs it; divided by its p90. Only fast (p90 <=
  ``fast_threshold``), stable (no failure and not flaky in the window) tests with at least
  ``min_runs`` results are candidates: a flaky test is never recommended for hourly.
- **demote**: a flaky test in hourly, an hourly test whose recent p90 grew by ``growth_ratio``, and
  current hourly tests that no longer fit the budget (the current set is kept first; only when it
  alone overflows the budget do its lowest value per second go).
- **daily**: tests that no tier runs after the hourly changes (demoted ones included), while the
  daily tier's known duration stays within its timeout; tests without history are included and
  counted as unknown.
- **slow**: p90 above ``slow_threshold`` without a ``slow`` marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.config import Config
from scheduler.markers.audit import Audit, TestFacts, predict, selects
from scheduler.markers.expression import tokens

HOURLY_SHARE = 0.5
CRITICAL_VALUE = 2.0
COVERAGE_VALUE = 1.0
KEEP_VALUE = 1.0
MIN_SECONDS = 0.01
GROWTH_MIN_S = 0.5


@dataclass(frozen=True)
class Recommendation:
    nodeid: str
    action: str  # "hourly", "daily", "slow", "demote"
    add: tuple[str, ...]
    remove: tuple[str, ...]
    evidence: str
    owner: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "nodeid": self.nodeid,
            "action": self.action,
            "add": list(self.add),
            "remove": list(self.remove),
            "evidence": self.evidence,
            "owner": self.owner or None,
        }


@dataclass
class Plan:
    hourly_tier: str | None
    hourly_budget_s: float | None
    recommendations: list[Recommendation] = field(default_factory=list)
    before: dict[str, dict[str, object]] = field(default_factory=dict)
    after: dict[str, dict[str, object]] = field(default_factory=dict)

    def of(self, action: str) -> list[Recommendation]:
        return [r for r in self.recommendations if r.action == action]


def tier_marker(config: Config, tier: str) -> str:
    """The marker that puts a test in ``tier``: its expression when that is one name, else the
    tier's name."""
    expression = config.tier(tier).markers
    found = tokens(expression) if expression else []
    if len(found) == 1 and found[0] not in ("not", "and", "or", "(", ")"):
        return found[0]
    return tier


def _secs(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} s"


def _evidence(f: TestFacts) -> str:
    parts = [f"p90 {_secs(f.p90_s)}", f"{f.runs} runs", f"{f.failed} failed"]
    if f.flaky:
        parts.append(f"flaky (score {f.flaky_score:.0%})")
    if f.critical:
        parts.append("critical path")
    if f.covers:
        parts.append("covers " + " ".join(f.covers[:3]) + (" …" if len(f.covers) > 3 else ""))
    return ", ".join(parts)


def hourly_budget(config: Config, tier: str) -> float:
    budget = config.markers.hourly_budget
    return budget if budget is not None else config.tier(tier).timeout * HOURLY_SHARE


def plan(config: Config, found: Audit) -> Plan:
    settings = config.markers
    items = found.collection.items
    facts = found.facts
    tiers = {p.tier: p for p in found.tiers}
    hourly = settings.hourly_tier if settings.hourly_tier in tiers else None
    daily = settings.daily_tier if settings.daily_tier in tiers else None
    result = Plan(hourly, hourly_budget(config, hourly) if hourly else None)
    result.before = {p.tier: p.to_json() for p in found.tiers}
    add: dict[str, set[str]] = {n: set() for n in items}
    remove: dict[str, set[str]] = {n: set() for n in items}
    recs: list[Recommendation] = []

    def owner(n: str) -> str:
        return facts[n].owner if n in facts else ""

    chosen: set[str] = set()
    if hourly is not None:
        marker = tier_marker(config, hourly)
        current = set(tiers[hourly].selected)
        budget = result.hourly_budget_s or 0.0

        def stable(f: TestFacts) -> bool:
            return (
                f.p90_s is not None
                and f.runs >= settings.min_runs
                and f.failed == 0
                and not f.flaky
                and f.p90_s <= settings.fast_threshold
            )

        demoted: dict[str, str] = {}
        for n in sorted(current):
            f = facts[n]
            if f.flaky:
                demoted[n] = f"flaky in hourly: {_evidence(f)}"
            elif (
                f.recent_p90_s is not None
                and f.older_p90_s is not None
                and f.recent_p90_s >= f.older_p90_s * settings.growth_ratio
                and f.recent_p90_s - f.older_p90_s >= GROWTH_MIN_S
            ):
                demoted[n] = (
                    f"p90 grew from {_secs(f.older_p90_s)} to {_secs(f.recent_p90_s)}: "
                    + _evidence(f)
                )

        def value_per_s(n: str) -> float:
            f = facts[n]
            value = 1.0 + (CRITICAL_VALUE if f.critical else 0.0)
            value += COVERAGE_VALUE if f.covers else 0.0
            value += KEEP_VALUE if n in current else 0.0
            return value / max(f.p90_s or 0.0, MIN_SECONDS)

        # The hourly tests people chose stay first (those without history too: nothing says
        # otherwise, their time is unknown); only when they alone overflow the budget do the
        # lowest value per second go. Then the best value per second fills what is left.
        kept = [n for n in current if n not in demoted]
        kept.sort(key=lambda n: (-value_per_s(n), n))
        spent = 0.0
        for n in kept:
            cost = facts[n].p90_s or 0.0
            if spent + cost <= budget:
                chosen.add(n)
                spent += cost
        pool = [n for n in items if n not in current and stable(facts[n])]
        pool.sort(key=lambda n: (-value_per_s(n), n))
        for n in pool:
            cost = facts[n].p90_s or 0.0
            if spent + cost <= budget:
                chosen.add(n)
                spent += cost
        for n in sorted(current - chosen):
            reason = demoted.get(n) or (
                f"does not fit the hourly budget {_secs(budget)} by value per second: "
                + _evidence(facts[n])
            )
            demoted.setdefault(n, reason)
        for n, reason in sorted(demoted.items()):
            remove[n].add(marker)
            recs.append(Recommendation(n, "demote", (), (marker,), reason, owner(n)))
        for n in sorted(chosen - current):
            add[n].add(marker)
            recs.append(
                Recommendation(
                    n,
                    "hourly",
                    (marker,),
                    (),
                    f"{_evidence(facts[n])}; value/s {value_per_s(n):.1f}",
                    owner(n),
                )
            )

    if daily is not None:
        marker = tier_marker(config, daily)
        timeout = config.tier(daily).timeout
        spent = tiers[daily].known_s
        # Tests no tier runs once the hourly changes are made (a demoted test lands here too).
        hourly_after = {n: (set(m) | add[n]) - remove[n] for n, m in items.items()}
        nowhere = [
            n for n in sorted(items)
            if not any(selects(config, t, hourly_after[n], n) for t in tiers)
        ]  # fmt: skip
        for n in nowhere:
            f = facts[n]
            after = hourly_after[n] | {marker}
            if not selects(config, daily, after, n):
                continue
            cost = f.p90_s or 0.0
            if spent + cost > timeout:
                continue
            spent += cost
            add[n].add(marker)
            recs.append(
                Recommendation(
                    n, "daily", (marker,), (), f"no tier runs it; {_evidence(f)}", owner(n)
                )
            )

    for n in sorted(items):
        f = facts[n]
        if f.p90_s is not None and f.p90_s > settings.slow_threshold and "slow" not in items[n]:
            add[n].add("slow")
            recs.append(
                Recommendation(
                    n,
                    "slow",
                    ("slow",),
                    (),
                    f"p90 {_secs(f.p90_s)} > {_secs(settings.slow_threshold)}",
                    owner(n),
                )
            )

    after_items = {n: (set(m) | add[n]) - remove[n] for n, m in items.items()}
    result.after = {t: predict(config, t, after_items, facts).to_json() for t in tiers}
    result.recommendations = recs
    return result


def markers_after(
    items: Mapping[str, frozenset[str]], recs: list[Recommendation]
) -> dict[str, set[str]]:
    out = {n: set(m) for n, m in items.items()}
    for r in recs:
        if r.nodeid in out:
            out[r.nodeid] |= set(r.add)
            out[r.nodeid] -= set(r.remove)
    return out
