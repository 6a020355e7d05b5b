"""schedctl marker catalog plugin: adds the markers a reviewed catalog file assigns to tests.

Loaded with ``-p schedctl_catalog``; it imports nothing but the standard library and pytest (it is
copied into each run's plugin directory, and ``schedctl markers apply --write`` copies it into the
project beside the catalog, so a developer's plain ``pytest -m hourly -p schedctl_catalog``
selects exactly what the hourly tier runs). No test file is edited.

The catalog is ``$SCHEDCTL_MARKERS_CATALOG`` if set, else ``tests/schedctl-markers.toml``; a
relative path is looked up from the invocation directory, then from pytest's rootdir. A missing
catalog does nothing. The file (TOML)::

    version = 1

    [[entry]]
    match = "tests/test_io.py::test_roundtrip"   # a node id; a file path or directory
    markers = ["hourly"]                          # prefix ("tests/unit/"); or a glob with "*"
    unmark = []                                   # markers to take away (a demotion)
    reason = "p90 0.2 s, 40 runs, never failed"
    owner = "@lab/io"

Markers are added (and ``unmark`` ones hidden, wherever the test, its class or module set them)
in ``pytest_collection_modifyitems`` before pytest's own ``-m`` deselection, so ``-m`` sees the
result; each assigned marker is also registered (``--strict-markers`` stays happy).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import pytest
except ImportError:  # pragma: no cover - schedctl imports the parser where pytest is absent
    pytest = None  # type: ignore[assignment]

CATALOG_ENV = "SCHEDCTL_MARKERS_CATALOG"
DEFAULT_CATALOG = "tests/schedctl-markers.toml"
PLUGIN_MODULE = "schedctl_catalog"
CATALOG_VERSION = 1


class CatalogError(ValueError):
    """The catalog file is malformed; the message names the file and the entry."""


def _tryfirst(function: Any) -> Any:
    return pytest.hookimpl(tryfirst=True)(function) if pytest is not None else function


@dataclass(frozen=True)
class Entry:
    match: str
    markers: tuple[str, ...]
    reason: str = ""
    owner: str = ""
    unmark: tuple[str, ...] = ()

    def matches(self, nodeid: str) -> bool:
        return entry_matches(self.match, nodeid)


def entry_matches(pattern: str, nodeid: str) -> bool:
    """A node id equal to ``pattern``; under it (a file or directory prefix); or a ``*`` glob."""
    if "*" in pattern:
        return fnmatch.fnmatchcase(nodeid, pattern)
    if nodeid == pattern:
        return True
    if pattern.endswith("/"):
        return nodeid.startswith(pattern)
    return nodeid.startswith(pattern + "::") or nodeid.startswith(pattern + "/")


def _toml() -> Any:
    """tomllib (3.11+), else tomli when installed."""
    import importlib

    try:
        return importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    except ImportError as exc:  # pragma: no cover - Python 3.10 without tomli
        raise CatalogError("schedctl_catalog needs Python >= 3.11 or tomli") from exc


def parse_catalog(text: str, where: str) -> list[Entry]:
    """The entries of a catalog; a malformed file is a usage error naming the file and entry."""
    try:
        data = _toml().loads(text)
    except ValueError as exc:
        raise CatalogError(f"{where}: invalid TOML: {exc}") from None
    version = data.get("version", CATALOG_VERSION)
    if version != CATALOG_VERSION:
        raise CatalogError(f"{where}: version: expected {CATALOG_VERSION}, got {version!r}")
    raw = data.get("entry", [])
    if not isinstance(raw, list):
        raise CatalogError(f"{where}: entry: expected [[entry]] tables")
    entries = []
    for i, item in enumerate(raw):
        key = f"{where}: entry[{i}]"
        if not isinstance(item, dict):
            raise CatalogError(f"{key}: expected a table")
        match = item.get("match")
        if not isinstance(match, str) or not match:
            raise CatalogError(f"{key}.match: expected a node id, path or glob")
        names = {}
        for field_name in ("markers", "unmark"):
            value = item.get(field_name, [])
            if not isinstance(value, list) or not all(
                isinstance(m, str) and m.isidentifier() for m in value
            ):
                raise CatalogError(f"{key}.{field_name}: expected a list of marker names")
            names[field_name] = tuple(value)
        entries.append(
            Entry(
                match,
                names["markers"],
                str(item.get("reason", "")),
                str(item.get("owner", "")),
                names["unmark"],
            )
        )
    return entries


def catalog_path(invocation_dir: str, rootdir: str) -> str | None:
    name = os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG
    if os.path.isabs(name):
        return name if os.path.isfile(name) else None
    for base in (invocation_dir, rootdir):
        path = os.path.join(base, name)
        if os.path.isfile(path):
            return path
    return None


def markers_for(entries: Sequence[Entry], nodeid: str) -> tuple[list[str], set[str]]:
    """The markers the catalog adds to ``nodeid`` and those it takes away (later entries win)."""
    added: dict[str, None] = {}
    removed: set[str] = set()
    for entry in entries:
        if entry.matches(nodeid):
            for name in entry.markers:
                added[name] = None
                removed.discard(name)
            for name in entry.unmark:
                added.pop(name, None)
                removed.add(name)
    return list(added), removed


def _hide(item: pytest.Item, names: set[str]) -> None:
    """Make ``item`` (only it, not its siblings) stop reporting the marks ``names``."""
    original = item.iter_markers_with_node

    def iter_markers_with_node(name: str | None = None) -> Iterator[tuple[Any, Any]]:
        for node, mark in original(name=name):
            if mark.name not in names:
                yield node, mark

    item.iter_markers_with_node = iter_markers_with_node  # type: ignore[method-assign]
    item.own_markers[:] = [m for m in item.own_markers if m.name not in names]


class CatalogMarkers:
    """Adds (and hides) the catalog's markers on the collected items."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)

    @_tryfirst
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            added, removed = markers_for(self.entries, item.nodeid)
            if removed:
                _hide(item, removed)
            have = {mark.name for mark in item.iter_markers()}
            for name in added:
                if name not in have:
                    item.add_marker(name)


def pytest_configure(config: pytest.Config) -> None:
    path = catalog_path(str(config.invocation_params.dir), str(config.rootpath))
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as fh:
            entries = parse_catalog(fh.read(), path)
    except (OSError, CatalogError) as exc:
        raise pytest.UsageError(str(exc)) from None
    for name in sorted({m for e in entries for m in e.markers}):
        config.addinivalue_line("markers", f"{name}: assigned by the schedctl marker catalog")
    config.pluginmanager.register(CatalogMarkers(entries), "schedctl-catalog-markers")
