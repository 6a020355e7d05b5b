"""The audit as JSON (schema: ``audit.schema.json`` beside this file) and as Markdown.

Node ids come from the project under test: in Markdown every cell is escaped (no markup, no
HTML, no table breaks) so a hostile name renders as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from scheduler.markers.audit import Audit, Distribution
from scheduler.markers.recommend import Plan

SCHEMA_ID = "schedctl-markers-audit/1"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
LIST_LIMIT = 1000


def audit_schema() -> dict[str, Any]:
    text = resources.files("scheduler.markers").joinpath("audit.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def to_json(found: Audit, plan: Plan) -> dict[str, Any]:
    c = found.collection
    return {
        "schema": SCHEMA_ID,
        "generated_at": found.generated_at.isoformat(),
        "ref": c.ref,
        "sha": c.sha,
        "collected_by": {"tier": c.tier, "runner": c.runner},
        "history_window_s": found.window_s,
        "coverage_run_id": found.coverage_run_id,
        "distribution": found.distribution.to_json(),
        "tiers": [{**p.to_json(), "tests": list(p.selected)} for p in found.tiers],
        "unselected": list(found.unselected),
        "multi_tier": [{"nodeid": n, "tiers": t} for n, t in found.multi.items()],
        "unknown_duration": sum(1 for f in found.facts.values() if f.p90_s is None),
        "hourly_tier": plan.hourly_tier,
        "hourly_budget_s": plan.hourly_budget_s,
        "recommendations": [r.to_json() for r in plan.recommendations],
        "predicted": {"before": plan.before, "after": plan.after},
    }


def escape(text: object) -> str:
    """One Markdown table cell: markup escaped, newlines folded, control characters dropped."""
    value = "".join(ch for ch in str(text) if ch >= " " or ch == "\n")
    return _MD_SPECIAL.sub(r"\\\1", value.replace("\r", " ").replace("\n", " "))


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(escape(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return out


def parse_tables(markdown: str) -> list[list[list[str]]]:
    """Every table of a Markdown text, as rows of unescaped cells (header first, rule dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for raw in markdown.splitlines():
        if raw.startswith("|") and raw.rstrip().endswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", raw.strip())[1:-1]]
            if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                continue
            if current is None:
                current = []
                tables.append(current)
            current.append([re.sub(r"\\(.)", r"\1", c) for c in cells])
        else:
            current = None
    return tables


def secs(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} s"


def distribution_rows(d: Distribution) -> list[list[object]]:
    rows: list[list[object]] = [[r.marker, r.count, f"{r.percent:.1f} %"] for r in d.rows]
    rows.append(["(marked)", d.marked, f"{d.marked_percent:.1f} %"])
    rows.append(["(unmarked)", d.unmarked, f"{d.unmarked_percent:.1f} %"])
    rows.append(["(total)", d.total, "100.0 %"])
    return rows


def tier_rows(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> list[list[object]]:
    rows: list[list[object]] = []
    for tier, b in before.items():
        a = after.get(tier, b)
        rows.append([
            tier, b["expression"] or "(all)", secs(b["timeout_s"]), b["selected"],
            secs(b["predicted_s"]), b["unknown"], a["selected"], secs(a["predicted_s"]),
            a["unknown"], "yes" if a["fits"] else "NO",
        ])  # fmt: skip
    return rows


TIER_HEADER = (
    "tier", "-m", "timeout", "tests", "p90 sum", "unknown",
    "tests after", "p90 sum after", "unknown after", "fits after",
)  # fmt: skip


def _bullets(values: Sequence[str]) -> list[str]:
    shown = [f"- {escape(v)}" for v in values[:LIST_LIMIT]]
    if len(values) > LIST_LIMIT:
        shown.append(f"- … and {len(values) - LIST_LIMIT} more (see --json)")
    return shown or ["(none)"]


def markdown(found: Audit, plan: Plan) -> str:
    c = found.collection
    d = found.distribution
    out = [
        "# Marker audit",
        "",
        f"Collected {d.total} tests at {escape(c.ref or 'the default ref')} "
        f"({escape((c.sha or 'no commit')[:12])}) in tier {escape(c.tier)} ({escape(c.runner)}); "
        f"history window {found.window_s / 86400:.0f} days"
        + (f", coverage of run {found.coverage_run_id}. " if found.coverage_run_id else ". ")
        + f"**{d.marked} marked ({d.marked_percent:.1f} %)**, {d.unmarked} unmarked.",
        "",
        "## Distribution",
        "",
        *table(("marker", "tests", "share"), distribution_rows(d)),
        "",
        "## Tiers",
        "",
        *table(TIER_HEADER, tier_rows(plan.before, plan.after)),
        "",
    ]
    if plan.hourly_tier:
        out += [
            f"Hourly budget: {secs(plan.hourly_budget_s)} (tier {escape(plan.hourly_tier)}).",
            "",
        ]
    out += ["## Tests no tier runs", "", f"{len(found.unselected)} tests.", ""]
    out += _bullets(found.unselected)
    out += ["", "## Tests several tiers run", "", f"{len(found.multi)} tests.", ""]
    out += table(("test", "tiers"), ([n, ", ".join(t)] for n, t in found.multi.items()))
    out += ["", "## Recommendations", ""]
    out += table(
        ("action", "test", "add", "remove", "evidence", "owner"),
        (
            [r.action, r.nodeid, " ".join(r.add), " ".join(r.remove), r.evidence, r.owner]
            for r in plan.recommendations
        ),
    )
    out.append("")
    return "\n".join(out)
