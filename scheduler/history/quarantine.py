"""Quarantine: a known-bad test keeps running and being recorded, but cannot fail its tier.

Quarantines live in the store (``schedctl quarantine add|list|remove``). A run reads the active
ones when it starts; its failing quarantined tests are passed to
:func:`scheduler.kernel.outcome.decide`, which lets the run pass when nothing else failed. A
quarantine with ``expires`` alerts its owner once when it runs out (see
:mod:`scheduler.alerts.quarantine`), and from then on the test fails its tier again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from scheduler.config import parse_duration
from scheduler.kernel.errors import UsageError
from scheduler.store.records import QuarantineRow

MAX_REASON = 2000


def active_quarantines(rows: Iterable[QuarantineRow], now: datetime) -> frozenset[str]:
    """Node ids whose quarantine has not expired at ``now``."""
    return frozenset(r.nodeid for r in rows if r.expires_at is None or r.expires_at > now)


def new_quarantine(
    nodeid: str, reason: str, owner: str | None, expires: str | None, now: datetime
) -> QuarantineRow:
    """A quarantine row from the command line's words; :class:`UsageError` for bad ones."""
    nodeid = nodeid.strip()
    if not nodeid or "\n" in nodeid:
        raise UsageError("quarantine: NODEID must be one pytest node id, e.g. tests/x.py::test_y")
    if not reason.strip():
        raise UsageError("quarantine add: --reason must say why the test is quarantined")
    expires_at = None
    if expires is not None:
        try:
            expires_at = now + timedelta(seconds=parse_duration(expires))
        except ValueError as exc:
            raise UsageError(f"quarantine add: --expires: {exc}") from None
    return QuarantineRow(
        nodeid=nodeid,
        reason=reason.strip()[:MAX_REASON],
        created_at=now,
        owner=owner.strip() if owner else None,
        expires_at=expires_at,
    )
