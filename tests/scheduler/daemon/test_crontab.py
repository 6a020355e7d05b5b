"""CrontabSchedule gives APScheduler's answers, fire time for fire time, without importing it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from scheduler.daemon.cron import next_fire_times, parse_cron
from scheduler.daemon.crontab import CrontabSchedule, trigger_fields
from tests.conftest import ROOT

UTC = timezone.utc

EXPRESSIONS = [
    "15 * * * *",
    "30 2 * * *",
    "0 3 * * 0",
    "0 3 * * 7",
    "0 3 * * sun",
    "*/5 * * * *",
    "*/7 1-5 * * *",
    "0 */3 * * *",
    "0 0 1 * *",
    "0 0 1 * 1",
    "0 0 13 * fri",
    "0 0 31 * *",
    "0 0 29 2 *",
    "0 0 last * *",
    "30 1,2,3 * * *",
    "0 2 * * 1-5",
    "0 9 * * 5-7",
    "15 2-3 * 3,10 *",
    "0,30 0-3 * * *",
    "59 23 31 12 *",
    "5 4 * jan-mar *",
    "5 4 * oct *",
    "0 0 * * */2",
    "0 1 1-7 * 1",
    "* * * * *",
    "30 2 8-14 3 0",
    "0 2,3 25-31 3,10 sun",
    "45 1 * * mon-fri",
    "10-50/20 * * * *",
    "0 0 15 */2 *",
    "0 0 29 * *",
]
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/St_Johns",
    "Europe/London",
]
# Around DST changes (spring and autumn, both hemispheres), month ends, a leap day, a year end.
STARTS = [
    datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC),
    datetime(2026, 3, 28, 23, 50, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 59, 30, 500, tzinfo=UTC),
    datetime(2026, 4, 4, 14, 0, tzinfo=UTC),
    datetime(2026, 9, 5, 23, 0, tzinfo=UTC),
    datetime(2026, 10, 4, 1, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 30, 0, 1, tzinfo=UTC),
    datetime(2027, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2028, 2, 28, 22, 0, tzinfo=UTC),
]


def ours(expr: str, zone: str, now: datetime, count: int) -> list[datetime]:
    return CrontabSchedule(expr, ZoneInfo(zone)).next_fire_times(now, count)


def apschedulers(expr: str, zone: str, now: datetime, count: int) -> list[datetime]:
    return next_fire_times(parse_cron(expr, ZoneInfo(zone)), now, count)


def same(left: list[datetime], right: list[datetime]) -> bool:
    """Equal instants, and equal as printed (offset and fold, through UTC and local time)."""
    return [(t, t.isoformat(), t.utcoffset(), t.fold) for t in left] == [
        (t, t.isoformat(), t.utcoffset(), t.fold) for t in right
    ]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_same_fire_times_as_apscheduler(expr: str, zone: str) -> None:
    for now in STARTS:
        for local in (now, now.astimezone(ZoneInfo(zone))):
            expected = apschedulers(expr, zone, local, 12)
            assert expected, (expr, zone, now)  # the comparison compares something
            assert same(ours(expr, zone, local, 12), expected), (expr, zone, now)


def _random_field(rng: random.Random, low: int, high: int, names: list[str] | None) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return "*"
    if kind == 1:
        return f"*/{rng.randint(1, max(1, (high - low) // 2))}"
    a = rng.randint(low, high)
    if kind == 2:
        return str(a)
    b = rng.randint(a, high)
    if kind == 3:
        return f"{a}-{b}"
    if kind == 4 and b > a:
        return f"{a}-{b}/{rng.randint(1, b - a)}"
    if kind == 5 and names:
        return names[a - low]
    return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), 2)))


def test_random_expressions_across_dst_match_apscheduler() -> None:
    """Random expressions from every field's grammar, random instants in DST-changing zones."""
    rng = random.Random(20261202)
    months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    compared = 0
    for _ in range(400):
        expr = " ".join(
            (
                _random_field(rng, 0, 59, None),
                _random_field(rng, 0, 23, None),
                _random_field(rng, 1, 31, None),
                _random_field(rng, 1, 12, months),
                _random_field(rng, 0, 6, days),
            )
        )
        zone = rng.choice(ZONES)
        now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
        try:
            expected = apschedulers(expr, zone, now, 6)
        except ValueError:
            with pytest.raises(ValueError):
                ours(expr, zone, now, 6)
            continue
        assert same(ours(expr, zone, now, 6), expected), (expr, zone, now)
        compared += 1
    assert compared > 300


@pytest.mark.parametrize(
    "expr",
    ["* * * *", "61 * * * *", "0 3 * * 8", "0 3 * * x", "a b c d e", "0 0 32 * *", "0 24 * * *",
     "*/0 * * * *", "5-1 * * * *", "0 0 * 13 *", "0 0 * foo *", "0 0 6th mon * *"],
)  # fmt: skip
def test_invalid_expressions_fail_alike(expr: str) -> None:
    with pytest.raises(ValueError) as theirs:
        parse_cron(expr)
    with pytest.raises(ValueError) as mine:
        CrontabSchedule(expr, UTC)
    assert str(mine.value) == str(theirs.value)
    assert str(mine.value).startswith(f"invalid cron {expr!r}")


def test_trigger_fields_translate_crontab_days() -> None:
    assert trigger_fields("0 3 * * 0") == [
        {"day": "*", "day_of_week": "sun", "minute": "0", "hour": "3", "month": "*"}
    ]
    assert [sorted(f) for f in trigger_fields("0 0 1 * 1-2")] == [
        ["day", "hour", "minute", "month"],
        ["day_of_week", "hour", "minute", "month"],
    ]


def test_crontab_imports_no_apscheduler() -> None:
    code = (
        "import sys, json\nfrom datetime import datetime, timezone\n"
        "from scheduler.daemon.crontab import CrontabSchedule\n"
        "CrontabSchedule('15 * * * *', timezone.utc).next_fire_times("
        "datetime.now(timezone.utc), 3)\nprint(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert "scheduler" in loaded
    assert not loaded & {"apscheduler", "tzlocal", "asyncio"}


def _apscheduler_has_a_date(expr: str) -> bool:
    """The check ``config_validate.check_cron_fires`` made with APScheduler's own fields."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = parse_cron(expr)
    if not isinstance(trigger, CronTrigger):
        return True
    fields = {field.name: field for field in trigger.fields}
    for month in range(1, 13):
        first = datetime(2028, month, 1, tzinfo=UTC)
        if fields["month"].get_next_value(first) != month:
            continue
        if fields["day"].get_next_value(first) is not None:
            return True
    return False


@pytest.mark.parametrize(
    "expr",
    ["0 0 31 2 *", "0 0 30 2 *", "0 0 29 2 *", "0 0 31 4,6,9,11 *", "0 0 31 * *", "0 0 31 2 1",
     "0 0 last 2 *", "0 0 31 feb-apr *", "0 0 30-31 2 *", "0 0 */15 2 *", "0 0 1 * *"],
)  # fmt: skip
def test_has_a_date_as_apscheduler_fields_say(expr: str) -> None:
    expected = _apscheduler_has_a_date(expr)
    assert CrontabSchedule(expr, UTC).has_a_date() is expected
    assert expected is not (expr in {"0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *",
                                     "0 0 30-31 2 *"})  # fmt: skip
