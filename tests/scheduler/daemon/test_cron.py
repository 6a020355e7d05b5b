"""Cron semantics follow crontab(5): Sunday is 0 and 7; day fields OR when both are set."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.daemon.cron import latest_slot, next_fire_times, parse_cron, slots_between

UTC = timezone.utc
FRIDAY = datetime(2026, 11, 27, 0, 40, tzinfo=UTC)


def nxt(expr: str, now: datetime = FRIDAY, count: int = 3) -> list[datetime]:
    return next_fire_times(parse_cron(expr, "UTC"), now, count)


def test_hourly_at_minute_15() -> None:
    """'15 * * * *' fires at :15 of every hour."""
    assert nxt("15 * * * *") == [datetime(2026, 11, 27, h, 15, tzinfo=UTC) for h in (1, 2, 3)]


def test_daily_at_0230() -> None:
    """'30 2 * * *' fires once a day at 02:30 UTC."""
    assert nxt("30 2 * * *", count=2) == [
        datetime(2026, 11, 27, 2, 30, tzinfo=UTC),
        datetime(2026, 11, 28, 2, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN"])
def test_weekly_is_sunday(dow: str) -> None:
    """Day-of-week 0, 7 and 'sun' all mean Sunday (APScheduler alone would say Monday)."""
    times = nxt(f"0 3 * * {dow}", count=2)
    assert times == [
        datetime(2026, 11, 29, 3, 0, tzinfo=UTC),
        datetime(2026, 12, 6, 3, 0, tzinfo=UTC),
    ]
    assert all(t.weekday() == 6 for t in times)


def test_weekday_range_and_wraparound() -> None:
    """'1-5' is Monday..Friday; '5-7' is Friday..Sunday."""
    assert {t.weekday() for t in nxt("0 9 * * 1-5", count=10)} == {0, 1, 2, 3, 4}
    assert {t.weekday() for t in nxt("0 9 * * 5-7", count=6)} == {4, 5, 6}


def test_dom_and_dow_are_ored() -> None:
    """With both day fields restricted, a day matching either one fires (crontab(5))."""
    times = nxt("0 0 1 * 1", now=datetime(2026, 11, 27, tzinfo=UTC), count=3)
    assert times == [
        datetime(2026, 11, 30, tzinfo=UTC),  # a Monday
        datetime(2026, 12, 1, tzinfo=UTC),  # the 1st
        datetime(2026, 12, 7, tzinfo=UTC),  # the next Monday
    ]


def test_timezone_applies() -> None:
    """A tier in Europe/Berlin fires at local 02:30, i.e. 01:30 UTC in winter."""
    trigger = parse_cron("30 2 * * *", "Europe/Berlin")
    (first,) = next_fire_times(trigger, FRIDAY, 1)
    assert first.astimezone(UTC) == datetime(2026, 11, 27, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "0 3 * * 8", "0 3 * * x", "a b c d e"])
def test_invalid(expr: str) -> None:
    """Malformed expressions raise ValueError naming the expression."""
    with pytest.raises(ValueError, match="invalid"):
        parse_cron(expr)


def test_latest_slot_and_slots_between() -> None:
    """The slot due at a fire time and every slot in a window are found."""
    trigger = parse_cron("15 * * * *", "UTC")
    now = datetime(2026, 11, 27, 5, 15, 0, 3000, tzinfo=UTC)
    assert latest_slot(trigger, now, lookback=__import__("datetime").timedelta(hours=1)) == (
        datetime(2026, 11, 27, 5, 15, tzinfo=UTC)
    )
    window = slots_between(trigger, datetime(2026, 11, 27, 1, 0, tzinfo=UTC), now)
    assert [s.hour for s in window] == [1, 2, 3, 4, 5]
