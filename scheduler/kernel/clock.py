"""The wall clock, in one place: every timestamp schedctl stores is timezone-aware UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]
"""Injectable source of "now" (tests pass a fake)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
