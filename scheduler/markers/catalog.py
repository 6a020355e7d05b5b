"""The marker catalog file: read it, merge accepted recommendations into it, render it.

The file format and its matching rules belong to :mod:`runners.catalog_plugin` (the plugin that
applies it at collection time, standard library + pytest only); this module reuses them, so
what ``schedctl markers`` predicts and what the plugin does cannot drift apart.
"""

from __future__ import annotations

import difflib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from runners import catalog_plugin
from runners.base import CATALOG_PLUGIN
from runners.catalog_plugin import (
    CATALOG_VERSION,
    CatalogError,
    Entry,
    entry_matches,
    markers_for,
    parse_catalog,
)
from scheduler.kernel.errors import UsageError
from scheduler.markers.recommend import Recommendation

HEADER = """\
# schedctl marker catalog: markers assigned to tests without editing them.
# Applied at collection time by the schedctl_catalog pytest plugin (beside this file), so
# `pytest -p schedctl_catalog -m hourly` selects what the hourly tier runs. Reviewed like code;
# written by `schedctl markers apply --write`. match: a node id, a path prefix, or a glob with *.
"""


def read(path: Path) -> list[Entry]:
    """The entries of the catalog at ``path`` (none when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the marker catalog: {exc.strerror}") from None
    try:
        return parse_catalog(text, str(path))
    except CatalogError as exc:
        raise UsageError(str(exc)) from None


def _quote(text: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(text)


def render(entries: Sequence[Entry]) -> str:
    out = [HEADER, f"version = {CATALOG_VERSION}\n"]
    for e in entries:
        out.append("\n[[entry]]\n")
        out.append(f"match = {_quote(e.match)}\n")
        out.append(f"markers = [{', '.join(_quote(m) for m in e.markers)}]\n")
        if e.unmark:
            out.append(f"unmark = [{', '.join(_quote(m) for m in e.unmark)}]\n")
        out.append(f"reason = {_quote(e.reason)}\n")
        out.append(f"owner = {_quote(e.owner)}\n")
    return "".join(out)


def merge(entries: Sequence[Entry], recs: Iterable[Recommendation]) -> list[Entry]:
    """The catalog with one exact entry per recommended test (replacing that test's old one).

    Existing entries for other tests, and path/glob entries, stay as they are.
    """
    by_test: dict[str, Entry] = {e.match: e for e in entries}
    order = [e.match for e in entries]
    for r in recs:
        old = by_test.get(r.nodeid)
        markers = dict.fromkeys(old.markers if old else ())
        unmark = dict.fromkeys(old.unmark if old else ())
        for name in r.add:
            markers[name] = None
            unmark.pop(name, None)
        for name in r.remove:
            markers.pop(name, None)
            unmark[name] = None
        reason = f"{r.action}: {r.evidence}"
        if old and old.reason and r.action not in old.reason:
            reason = f"{old.reason}; {reason}"
        by_test[r.nodeid] = Entry(
            r.nodeid, tuple(markers), reason, r.owner or (old.owner if old else ""), tuple(unmark)
        )
        if r.nodeid not in order:
            order.append(r.nodeid)
    return [by_test[m] for m in order]


def diff(path: Path, old_text: str, new_text: str) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"a/{path.name}",
            tofile=f"b/{path.name}",
        )
    )


def write(path: Path, text: str) -> Path:
    """Write the catalog and copy its plugin beside it (``-p schedctl_catalog``); return the
    plugin's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    plugin = path.parent / CATALOG_PLUGIN
    shutil.copyfile(Path(catalog_plugin.__file__), plugin)
    return plugin


def stale(entries: Sequence[Entry], nodeids: Iterable[str]) -> list[Entry]:
    """Entries that match no collected test (their tests are gone or renamed)."""
    ids = list(nodeids)
    return [e for e in entries if not any(entry_matches(e.match, n) for n in ids)]


__all__ = ["Entry", "diff", "markers_for", "merge", "read", "render", "stale", "write"]
