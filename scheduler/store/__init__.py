"""The store: SQLAlchemy Core over SQLite; nobody outside this package writes SQL.

See :mod:`scheduler.store.engine` for the layout (one query module per concern).

The names of :mod:`.engine` are imported from it on first use (PEP 562): importing a light
module of this package (:mod:`.records`, :mod:`.reader`, :mod:`.writer`) does not import
SQLAlchemy, nor does asking this package for plain data (``RunRecord``, ``TestResultRow``,
``QuarantineRow``) or the run-row errors. A test checks that ``__all__`` here is the engine's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.store.engine import *  # noqa: F403

# __all__ names what the star import (for type checkers) and __getattr__ provide.
# ruff: noqa: F405

__all__ = [
    "ACTIVE_OUTCOMES",
    "FINAL_OUTCOMES",
    "SCHEMA_VERSION",
    "UNDELIVERED",
    "ActiveRunExists",
    "AlertStep",
    "AlertTrackRow",
    "AttemptRow",
    "ImageBuild",
    "LeaseRow",
    "OutboxEntry",
    "OutboxRow",
    "OutboxState",
    "QuarantineRow",
    "RunAlreadyFinal",
    "RunFilter",
    "RunRecord",
    "SlowTest",
    "StatsReader",
    "Store",
    "TallyRow",
    "TestResultRow",
    "TestSummaryRow",
    "TestTallyRow",
    "alert_state",
    "alerts_outbox",
    "change_range",
    "failure_streak",
    "gpu_leases",
    "is_postgres_url",
    "meta_table",
    "probe_writable",
    "runs",
    "test_results",
    "utcnow",
]


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
    if name not in __all__:  # a submodule not imported yet, or a typo
        raise AttributeError(f"module 'scheduler.store' has no attribute {name!r}")
    if name in _LIGHT:
        import importlib

        return getattr(importlib.import_module(_LIGHT[name]), name)
    from scheduler.store import engine

    return getattr(engine, name)
