"""Inline SVG geometry for the pages: numbers in, coordinate strings out (nothing to escape).

Templates draw the ``<svg>`` elements; this module only scales values into the box, so a chart
is plain markup with no script and no external asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Chart", "StripCell", "line_chart", "outcome_class", "strip"]

PASSING = frozenset({"passed", "xfailed", "xpassed"})
FAILING = frozenset({"failed", "error"})


@dataclass(frozen=True)
class Chart:
    """A polyline scaled into ``width`` x ``height``, with its value range for the labels."""

    points: str
    width: int
    height: int
    low: float
    high: float
    count: int

    @property
    def empty(self) -> bool:
        return self.count == 0


def line_chart(values: Sequence[float], width: int = 120, height: int = 24, pad: int = 2) -> Chart:
    """Scale ``values`` (oldest first) to a polyline; a single value draws a flat line."""
    if not values:
        return Chart("", width, height, 0.0, 0.0, 0)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (width - 2 * pad) / max(1, len(values) - 1)
    inner = height - 2 * pad
    coords = []
    for i, value in enumerate(values):
        x = pad + i * step
        y = pad + inner - (value - low) / span * inner
        coords.append(f"{x:.1f},{y:.1f}")
    if len(coords) == 1:
        coords.append(f"{width - pad:.1f},{coords[0].split(',')[1]}")
    return Chart(" ".join(coords), width, height, low, high, len(values))


def outcome_class(outcome: str) -> str:
    """The CSS class of an outcome's colour: ok, bad, flaky, skip or infra."""
    if outcome in PASSING:
        return "ok"
    if outcome in FAILING:
        return "bad"
    if outcome == "flaky":
        return "flaky"
    if outcome in ("skipped", "no-tests", "cancelled", "skipped-overlap", "missed"):
        return "skip"
    if outcome in ("running", "queued"):
        return "live"
    return "infra"


@dataclass(frozen=True)
class StripCell:
    x: int
    css: str
    title: str
    href: str


def strip(items: Sequence[tuple[str, str, str]], cell: int = 10) -> list[StripCell]:
    """``(outcome, tooltip, link)`` oldest first -> one coloured cell each."""
    return [
        StripCell(i * cell, outcome_class(outcome), title, href)
        for i, (outcome, title, href) in enumerate(items)
    ]
