"""What every query mixin of :class:`scheduler.store.engine.Store` may rely on.

A query module defines one mixin per concern (runs, GPU leases, alerts, stats); ``Store``
combines them with the connection handling of :mod:`.engine`. The mixins only ever reach the
database through :meth:`QueryBase.begin`, so every statement runs in a transaction whose errors
name the file.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.kernel.errors import StoreError

if TYPE_CHECKING:  # records.py and reader.py import this module without SQLAlchemy
    from sqlalchemy.engine import Connection


class QueryBase:
    """The part of the Store a query mixin uses; :class:`~.engine.Store` provides it."""

    path: Path
    location: str  # the file, or the database URL without its password

    def begin(
        self, *, immediate: bool = False, write: bool = False
    ) -> AbstractContextManager[Connection]:
        raise NotImplementedError


def aware(value: Any) -> Any:
    """SQLite drops tzinfo; everything schedctl stores is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class ActiveRunExists(StoreError):
    """A tier already has a queued or running run (one active run per tier, across processes)."""


class RunAlreadyFinal(StoreError):
    """``finish_run`` of a run that another process (or thread) finished first: nothing written."""
