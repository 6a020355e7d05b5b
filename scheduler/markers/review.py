"""The quarterly review: what drifted since the markers were last looked at, as Markdown.

- drift: tests whose p90 left their tier's budget (an hourly test slower than
  ``markers.fast_threshold``; any test above ``slow_threshold`` without ``slow``), tiers whose
  predicted duration exceeds their timeout, daily tests that never failed in the period, and
  flaky tests in the hourly tier;
- catalog entries whose tests no longer exist;
- unowned tests (no owner in config ``owners`` or CODEOWNERS);
- the distribution then (the newest audit snapshot at least ``--since`` old, else the oldest)
  vs now.

Every audit and review saves a snapshot (distribution and tier predictions, JSON) under
``<state_dir>/markers/snapshots/``; nothing here writes SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.config import Config
from scheduler.markers import catalog
from scheduler.markers.audit import Audit
from scheduler.markers.recommend import Plan
from scheduler.markers.report import escape, table
from scheduler.markers.report import secs as fmt_secs

SNAPSHOT_DIR = "markers/snapshots"
LATEST_FILE = "markers-audit.json"
"""The newest audit in short, for the web UI's Markers page: ``distribution`` (marker -> tests)
and ``recommendations`` (one line of text each)."""
LIST_LIMIT = 200


def for_period(config: Config, since_s: float) -> Config:
    """``config`` whose history window is the review period (what "in the period" means)."""
    markers = config.markers.model_copy(update={"history_window": since_s})
    return config.model_copy(update={"markers": markers})


def snapshot_dir(config: Config) -> Path:
    return config.state_dir / SNAPSHOT_DIR


def save_latest(config: Config, found: Audit, plan: Plan) -> Path:
    """Write ``<state_dir>/markers-audit.json``, the newest audit in short (see LATEST_FILE)."""
    d = found.distribution
    data = {
        "generated_at": found.generated_at.isoformat(),
        "sha": found.collection.sha,
        "distribution": {
            **{r.marker: r.count for r in d.rows},
            "(marked)": d.marked,
            "(unmarked)": d.unmarked,
        },
        "recommendations": [f"{r.action}: {r.nodeid} ({r.evidence})" for r in plan.recommendations],
    }
    path = config.state_dir / LATEST_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def save_snapshot(config: Config, found: Audit) -> Path:
    """Keep this audit's distribution and tier predictions for later reviews."""
    directory = snapshot_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = found.generated_at.strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"audit-{stamp}.json"
    data = {
        "generated_at": found.generated_at.isoformat(),
        "sha": found.collection.sha,
        "distribution": found.distribution.to_json(),
        "tiers": [p.to_json() for p in found.tiers],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def load_snapshot(config: Config, before: datetime) -> dict[str, Any] | None:
    """The newest snapshot taken at or before ``before``; else the oldest one; else None."""
    found: list[tuple[datetime, dict[str, Any]]] = []
    directory = snapshot_dir(config)
    if not directory.is_dir():
        return None
    for path in directory.glob("audit-*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            when = datetime.fromisoformat(str(data["generated_at"]))
            data["distribution"]["marked"] + 0
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append((when, data))
    if not found:
        return None
    found.sort(key=lambda pair: pair[0])
    older = [d for w, d in found if w <= before]
    return older[-1] if older else found[0][1]


@dataclass
class Review:
    markdown: str
    findings: dict[str, int]


def review(config: Config, found: Audit, since_s: float, catalog_path: Path | None) -> Review:
    settings = config.markers
    facts = found.facts
    items = found.collection.items
    tiers = {p.tier: p for p in found.tiers}
    hourly = tiers.get(settings.hourly_tier)
    daily = tiers.get(settings.daily_tier)
    drift: list[list[object]] = []
    if hourly is not None:
        for n in hourly.selected:
            p90 = facts[n].p90_s
            if p90 is not None and p90 > settings.fast_threshold:
                drift.append(
                    [n, hourly.tier, fmt_secs(p90), f"above {fmt_secs(settings.fast_threshold)}"]
                )
    for n in sorted(items):
        p90 = facts[n].p90_s
        if p90 is not None and p90 > settings.slow_threshold and "slow" not in items[n]:
            drift.append(
                [n, "-", fmt_secs(p90), f"above {fmt_secs(settings.slow_threshold)}, not `slow`"]
            )
    over = [p for p in found.tiers if not p.fits]
    flaky_fast = [n for n in (hourly.selected if hourly else ()) if facts[n].flaky]
    never_failed = [
        n for n in (daily.selected if daily else ())
        if facts[n].runs and not facts[n].failed and not facts[n].flaky
    ]  # fmt: skip
    entries = catalog.read(catalog_path) if catalog_path is not None else []
    stale = catalog.stale(entries, items)
    unowned = sorted(n for n in items if not facts[n].owner)
    then = load_snapshot(config, found.generated_at - timedelta(seconds=since_s))
    now_d = found.distribution.to_json()

    out = [
        "# Quarterly marker review",
        "",
        f"{found.generated_at:%Y-%m-%d}, {now_d['total']} tests at "
        f"{escape((found.collection.sha or 'the working tree')[:12])}, "
        f"period {since_s / 86400:.0f} days.",
        "",
        "## Drift",
        "",
        *table(("test", "tier", "p90", "why"), drift),
        "",
    ]
    for p in over:
        out.append(
            f"- Tier {escape(p.tier)} is predicted at {fmt_secs(p.known_s)} "
            f"(+{p.unknown} unknown) against its timeout {fmt_secs(p.timeout_s)}."
        )
    out += ["", f"### Flaky tests in {escape(settings.hourly_tier)} ({len(flaky_fast)})", ""]
    out += [f"- {escape(n)}" for n in flaky_fast] or ["(none)"]
    out += ["", f"### {escape(settings.daily_tier)} tests that never failed in the period "
            f"({len(never_failed)})", ""]  # fmt: skip
    out += [f"- {escape(n)}" for n in never_failed[:LIST_LIMIT]] or ["(none)"]
    if len(never_failed) > LIST_LIMIT:
        out.append(f"- … and {len(never_failed) - LIST_LIMIT} more")
    out += ["", "## Catalog entries whose tests are gone", ""]
    out += table(("match", "markers", "reason", "owner"),
                 ([e.match, " ".join(e.markers), e.reason, e.owner] for e in stale))  # fmt: skip
    out += ["", f"## Unowned tests ({len(unowned)})", ""]
    out += [f"- {escape(n)}" for n in unowned[:LIST_LIMIT]] or ["(none)"]
    if len(unowned) > LIST_LIMIT:
        out.append(f"- … and {len(unowned) - LIST_LIMIT} more")
    out += ["", "## Distribution then vs now", ""]
    then_d = then["distribution"] if then else None
    when = then["generated_at"][:10] if then else "no earlier audit"
    out.append(f"Then: {escape(when)}.")
    out.append("")
    then_counts = {m["marker"]: m["count"] for m in then_d["markers"]} if then_d else {}
    now_counts = {m["marker"]: m["count"] for m in now_d["markers"]}
    rows: list[list[object]] = []
    for name in sorted(set(then_counts) | set(now_counts)):
        rows.append([name, then_counts.get(name, "-"), now_counts.get(name, 0)])
    for key in ("marked", "unmarked", "total"):
        rows.append([f"({key})", then_d[key] if then_d else "-", now_d[key]])
    out += table(("marker", "then", "now"), rows)
    out.append("")
    findings = {
        "drift": len(drift),
        "over_timeout": len(over),
        "flaky_in_hourly": len(flaky_fast),
        "daily_never_failed": len(never_failed),
        "stale_catalog_entries": len(stale),
        "unowned": len(unowned),
    }
    return Review("\n".join(out), findings)
