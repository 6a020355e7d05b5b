"""The Markers page's data: the marker audit's result, when ``schedctl markers audit`` exists.

The audit itself (``scheduler.markers``, the "categorization campaign" issue) is built apart from
the web pages. This view only reads what it left: ``<state_dir>/markers-audit.json`` with a
``distribution`` (marker -> test count) and ``recommendations`` (lines of text). Without the
package, or before the audit ran, the page says so. Everything in the file is untrusted text.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIT_FILE = "markers-audit.json"
MAX_BYTES = 1 << 20
MAX_ROWS = 500


@dataclass(frozen=True)
class MarkersView:
    state: str
    """``not-installed``, ``not-run``, ``unreadable`` or ``ok``."""
    detail: str = ""
    distribution: list[tuple[str, int]] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)


def audit_installed() -> bool:
    return importlib.util.find_spec("scheduler.markers") is not None


def markers_view(state_dir: Path | None, *, installed: bool | None = None) -> MarkersView:
    if not (audit_installed() if installed is None else installed):
        return MarkersView("not-installed", "schedctl markers audit is not part of this install")
    path = state_dir / AUDIT_FILE if state_dir is not None else None
    if path is None or not path.is_file():
        return MarkersView("not-run", "the marker audit has not been run (schedctl markers audit)")
    try:
        with path.open("rb") as fh:
            data: Any = json.loads(fh.read(MAX_BYTES))
    except (OSError, ValueError, RecursionError) as exc:
        return MarkersView("unreadable", f"{path.name}: {str(exc)[:200]}")
    if not isinstance(data, dict):
        return MarkersView("unreadable", f"{path.name}: not a JSON object")
    raw = data.get("distribution")
    distribution = [
        (str(k)[:200], int(v))
        for k, v in (raw.items() if isinstance(raw, dict) else ())
        if isinstance(v, int) and not isinstance(v, bool)
    ][:MAX_ROWS]
    distribution.sort(key=lambda kv: (-kv[1], kv[0]))
    recs = data.get("recommendations")
    recommendations = [str(r)[:1000] for r in (recs if isinstance(recs, list) else [])][:MAX_ROWS]
    return MarkersView("ok", "", distribution, recommendations)
