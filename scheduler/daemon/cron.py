"""Cron expressions with crontab(5) semantics, on top of APScheduler's triggers.

APScheduler 3.x numbers weekdays from Monday (0 = mon) and ANDs day-of-month with day-of-week;
crontab(5) (and GitHub Actions' ``schedule``) numbers from Sunday (0 and 7 = sun) and ORs the two
day fields when both are restricted. :func:`scheduler.daemon.crontab.trigger_fields` translates, so
``0 3 * * 0`` is Sunday 03:00. (:class:`scheduler.daemon.crontab.CrontabSchedule` computes the same
fire times without importing APScheduler, for the read commands.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from scheduler.daemon.crontab import fire_times_after, trigger_fields


def parse_cron(expr: str, timezone: tzinfo | str = "UTC") -> Any:
    """Build an APScheduler trigger for a 5-field crontab expression; ``ValueError`` if invalid."""
    parts = trigger_fields(expr)
    try:
        triggers = [CronTrigger(**fields, timezone=timezone) for fields in parts]
    except ValueError as exc:
        raise ValueError(f"invalid cron {expr!r}: {exc}") from None
    return triggers[0] if len(triggers) == 1 else OrTrigger(triggers)


def next_fire_times(trigger: Any, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``now``."""
    return fire_times_after(trigger.get_next_fire_time, now, count)


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
