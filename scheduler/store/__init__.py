"""The store: SQLAlchemy Core over SQLite; nobody outside this package writes SQL.

See :mod:`scheduler.store.engine` for the layout (one query module per concern).

The names of :mod:`.engine` are imported from it on first use (PEP 562): importing a light
module of this package (:mod:`.records`, :mod:`.reader`, :mod:`.writer`) does not import
SQLAlchemy, nor does asking this package for plain data (``RunRecord``, ``TestResultRow``,
``QuarantineRow``) or the run-row errors. ``__all__`` is the engine's: a star import of this
package imports SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.store.engine import *  # noqa: F403
    from scheduler.store.engine import __all__ as __all__

# The names are the engine's (its ``__all__``, listed once, next to their imports). At run time
# they are looked up on first use, so this module has to tell "not the engine's" without
# importing the engine: private names and this package's modules (importlib probes
# ``from scheduler.store import records`` with getattr before importing the submodule).

# Plain data and errors come from their light modules (the same objects the engine re-exports):
# `from scheduler.store import RunRecord` imports no SQLAlchemy.
_LIGHT = {
    "ActiveRunExists": "scheduler.store.base",
    "QuarantineRow": "scheduler.store.records",
    "RunAlreadyFinal": "scheduler.store.base",
    "RunRecord": "scheduler.store.records",
    "TestResultRow": "scheduler.store.records",
    "change_range": "scheduler.store.records",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHT:
        import importlib

        return getattr(importlib.import_module(_LIGHT[name]), name)
    if not _may_be_the_engines(name):
        raise AttributeError(f"module 'scheduler.store' has no attribute {name!r}")
    from scheduler.store import engine

    return getattr(engine, name)


def _may_be_the_engines(name: str) -> bool:
    """False for what the engine never exports: private names and non-identifiers, and this
    package's modules (importlib asks for one before importing it)."""
    import importlib.util

    if name == "__all__":
        return True
    if name.startswith("_") or not name.isidentifier():
        return False
    return importlib.util.find_spec(f"{__name__}.{name}") is None
