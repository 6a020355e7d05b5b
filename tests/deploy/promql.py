"""Helpers shared by the deploy tests: find PromQL in dashboards and rules, name its metrics."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# Series Prometheus makes itself for every target, not exported by the daemon.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Grafana's built-in variables, replaced by what Grafana would send for a 6 h dashboard.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "6h",
    "$host": ".*",
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_NUMBER_WORD = re.compile(r"^(?:inf|nan)$", re.IGNORECASE)


def have_prometheus() -> bool:
    return bool(shutil.which("prometheus") and shutil.which("promtool"))


def have_promtool() -> bool:
    return shutil.which("promtool") is not None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_exprs(path: Path) -> list[str]:
    """Every ``expr`` of every panel target in a Grafana dashboard."""
    return [
        str(target["expr"])
        for panel in load_dashboard(path)["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def rule_exprs(path: Path = RULES) -> list[str]:
    return [str(rule["expr"]) for rule in rules(path)]


def all_exprs() -> dict[str, str]:
    """``where -> expr`` for every dashboard target and every rule."""
    out: dict[str, str] = {}
    for path in DASHBOARDS:
        for i, expr in enumerate(dashboard_exprs(path)):
            out[f"{path.name}#{i}"] = expr
    for rule in rules():
        out[f"rules.yml:{rule.get('alert') or rule.get('record')}"] = str(rule["expr"])
    return out


def substitute(expr: str) -> str:
    """Replace Grafana variables with concrete values Prometheus accepts."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and durations removed)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {
        name
        for name in _IDENT.findall(text)
        if name not in _KEYWORDS and not _NUMBER_WORD.match(name)
    }


def exported_names(exposition: str) -> set[str]:
    """Names a scrape offers: each sample name plus, per family, what its type may produce."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names
