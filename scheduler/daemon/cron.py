"""Cron expressions with crontab(5) semantics, on top of APScheduler's triggers.

APScheduler 3.x numbers weekdays from Monday (0 = mon) and ANDs day-of-month with day-of-week;
crontab(5) (and GitHub Actions' ``schedule``) numbers from Sunday (0 and 7 = sun) and ORs the two
day fields when both are restricted. This module translates, so ``0 3 * * 0`` is Sunday 03:00.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = ("minute", "hour", "day", "month", "day_of_week")


def _dow_number(token: str) -> int:
    token = token.strip().lower()
    if token in _DOW_NAMES:
        return _DOW_NAMES.index(token)
    if not token.isdigit() or int(token) > 7:
        raise ValueError(f"invalid day of week {token!r} (0-7 or sun-sat)")
    return int(token) % 7


def _expand_dow(field: str) -> list[str]:
    """Expand a crontab day-of-week field into APScheduler weekday names."""
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"invalid step in day of week {part!r}")
        if body == "*":
            lo, hi = 0, 6
        elif "-" in body:
            a, b = body.split("-", 1)
            lo, hi = _dow_number(a), _dow_number(b)
            if b.strip() == "7":
                hi = 7
            if hi < lo:
                raise ValueError(f"invalid day-of-week range {body!r}")
        else:
            lo = hi = _dow_number(body)
            if step_text:
                hi = 6
        days.update(d % 7 for d in range(lo, hi + 1, step))
    # APScheduler's names; order does not matter to it but keep them stable for repr/tests.
    return [_DOW_NAMES[d] for d in sorted(days)]


def parse_cron(expr: str, timezone: tzinfo | str = "UTC") -> Any:
    """Build an APScheduler trigger for a 5-field crontab expression; ``ValueError`` if invalid."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron {expr!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    minute, hour, dom, month, dow = fields
    common: dict[str, Any] = {"minute": minute, "hour": hour, "month": month, "timezone": timezone}
    try:
        dow_names = None if dow == "*" else ",".join(_expand_dow(dow))
        dom_restricted = not dom.startswith("*")
        dow_restricted = not dow.startswith("*")
        if dom_restricted and dow_restricted:
            return OrTrigger(
                [
                    CronTrigger(day=dom, **common),
                    CronTrigger(day_of_week=dow_names, **common),
                ]
            )
        return CronTrigger(day=dom, day_of_week=dow_names, **common)
    except ValueError as exc:
        raise ValueError(f"invalid cron {expr!r}: {exc}") from None


def next_fire_times(trigger: Any, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``now``."""
    times: list[datetime] = []
    previous = None
    cursor = now + timedelta(microseconds=1)
    while len(times) < count:
        nxt = trigger.get_next_fire_time(previous, cursor)
        if nxt is None:
            break
        times.append(nxt)
        previous = nxt
        cursor = nxt + timedelta(microseconds=1)
    return times


def latest_slot(trigger: Any, now: datetime, lookback: timedelta) -> datetime | None:
    """The last fire time at or before ``now`` (searching back ``lookback``), or ``None``."""
    cursor = now - lookback
    last = None
    while True:
        nxt = trigger.get_next_fire_time(None, cursor)
        if nxt is None or nxt > now:
            return last
        last = nxt
        cursor = nxt + timedelta(microseconds=1)


def slots_between(
    trigger: Any, start: datetime, end: datetime, limit: int = 10_000
) -> list[datetime]:
    """Every fire time in ``(start, end]``."""
    out: list[datetime] = []
    cursor = start + timedelta(microseconds=1)
    while len(out) < limit:
        nxt = trigger.get_next_fire_time(None, cursor)
        if nxt is None or nxt > end:
            break
        out.append(nxt)
        cursor = nxt + timedelta(microseconds=1)
    return out
