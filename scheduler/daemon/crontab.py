"""Crontab expressions as APScheduler reads them, and their fire times without APScheduler.

Two things live here, both standard library only:

- :func:`trigger_fields`: a 5-field crontab(5) expression as the keyword arguments of one or two
  APScheduler ``CronTrigger``\\ s (Sunday is 0 and 7; both day fields restricted means either
  one fires). :func:`scheduler.daemon.cron.parse_cron` builds the daemon's triggers from it.
- :class:`CrontabSchedule`: the next fire times of such an expression, computed the way
  APScheduler 3.x's ``CronTrigger.get_next_fire_time`` and ``OrTrigger`` compute them -- the
  same fields and expressions, the same walk, the same wall-clock arithmetic in UTC across DST
  changes (a port of APScheduler 3.11's ``triggers/cron``, MIT licence, Alex Grönholm). The read
  commands (``schedctl schedule``, ``status``) use it: importing APScheduler costs a command
  ~0.1 s (its package reads its version through importlib.metadata, its util module imports
  asyncio, its cron trigger tzlocal). The daemon still fires with APScheduler's own triggers;
  ``tests/scheduler/daemon/test_crontab.py`` compares both over many expressions, time zones
  and DST changes.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

__all__ = ["CrontabSchedule", "fire_times_after", "trigger_fields"]

UTC = timezone.utc
_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


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


def trigger_fields(expr: str) -> list[dict[str, str | None]]:
    """The ``CronTrigger`` keyword arguments (without ``timezone``) for a 5-field crontab
    expression: one trigger, or two to OR when both day fields are restricted.

    Raises ``ValueError`` (``invalid cron ...``) for a wrong number of fields or day of week;
    the other fields are checked where they are compiled (APScheduler, :class:`CrontabSchedule`).
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron {expr!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    minute, hour, dom, month, dow = fields
    common: dict[str, str | None] = {"minute": minute, "hour": hour, "month": month}
    try:
        dow_names = None if dow == "*" else ",".join(_expand_dow(dow))
    except ValueError as exc:
        raise ValueError(f"invalid cron {expr!r}: {exc}") from None
    if not dom.startswith("*") and not dow.startswith("*"):
        return [{"day": dom, **common}, {"day_of_week": dow_names, **common}]
    return [{"day": dom, "day_of_week": dow_names, **common}]


# --- APScheduler 3.x's cron fields and expressions (apscheduler/triggers/cron/*.py) ---

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
FIELD_NAMES = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
MIN_VALUES = {
    "year": 1970,
    "month": 1,
    "day": 1,
    "week": 1,
    "day_of_week": 0,
    "hour": 0,
    "minute": 0,
    "second": 0,
}
MAX_VALUES = {
    "year": 9999,
    "month": 12,
    "day": 31,
    "week": 53,
    "day_of_week": 6,
    "hour": 23,
    "minute": 59,
    "second": 59,
}
DEFAULT_VALUES: dict[str, str | int] = {
    "year": "*",
    "month": 1,
    "day": 1,
    "week": "*",
    "day_of_week": "*",
    "hour": 0,
    "minute": 0,
    "second": 0,
}
_SEPARATOR = re.compile(" *, *")


class _All:
    """``*`` and ``*/step``."""

    value_re = re.compile(r"\*(?:/(?P<step>\d+))?$")

    def __init__(self, step: str | int | None = None) -> None:
        self.step = None if step is None else int(step)
        if self.step == 0:
            raise ValueError("Increment must be higher than 0")

    def validate_range(self, name: str) -> None:
        value_range = MAX_VALUES[name] - MIN_VALUES[name]
        if self.step and self.step > value_range:
            raise ValueError(
                f"the step value ({self.step}) is higher than the total range of the "
                f"expression ({value_range})"
            )

    def next_value(self, date: datetime, field: _Field) -> int | None:
        start = field.value(date)
        minval = field.min(date)
        maxval = field.max(date)
        start = max(start, minval)
        nxt = start + (self.step - (start - minval)) % self.step if self.step else start
        return nxt if nxt <= maxval else None


class _Range(_All):
    """``N``, ``N-M``, ``N/step``, ``N-M/step``."""

    value_re = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$")

    def __init__(
        self, first: str | int, last: str | int | None = None, step: str | int | None = None
    ) -> None:
        super().__init__(step)
        low = int(first)
        high = None if last is None else int(last)
        if high is None and step is None:
            high = low
        if high is not None and low > high:
            raise ValueError("The minimum value in a range must not be higher than the maximum")
        self.first = low
        self.last = high

    def validate_range(self, name: str) -> None:
        super().validate_range(name)
        if self.first < MIN_VALUES[name]:
            raise ValueError(
                f"the first value ({self.first}) is lower than the minimum value "
                f"({MIN_VALUES[name]})"
            )
        if self.last is not None and self.last > MAX_VALUES[name]:
            raise ValueError(
                f"the last value ({self.last}) is higher than the maximum value "
                f"({MAX_VALUES[name]})"
            )
        value_range = (self.last or MAX_VALUES[name]) - self.first
        if self.step and self.step > value_range:
            raise ValueError(
                f"the step value ({self.step}) is higher than the total range of the "
                f"expression ({value_range})"
            )

    def next_value(self, date: datetime, field: _Field) -> int | None:
        startval = field.value(date)
        minval = max(field.min(date), self.first)
        maxval = field.max(date)
        maxval = min(maxval, self.last) if self.last is not None else maxval
        nextval = max(minval, startval)
        if self.step:
            nextval += (self.step - (nextval - minval)) % self.step
        return nextval if nextval <= maxval else None


def _named(names: list[str], what: str, offset: int) -> Callable[..., _Range]:
    """A month or weekday name range (``jan-mar``, ``mon``) as a :class:`_Range`."""

    def build(first: str, last: str | None = None) -> _Range:
        try:
            low = names.index(first.lower()) + offset
        except ValueError:
            raise ValueError(f'Invalid {what} name "{first}"') from None
        high = None
        if last:
            try:
                high = names.index(last.lower()) + offset
            except ValueError:
                raise ValueError(f'Invalid {what} name "{last}"') from None
        return _Range(low, high)

    return build


_NAME_RANGE_RE = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE)


class _WeekdayPosition(_All):
    """``1st mon`` ... ``5th fri``, ``last sun`` (day of month)."""

    options = ("1st", "2nd", "3rd", "4th", "5th", "last")
    value_re = re.compile(
        r"(?P<option_name>{}) +(?P<weekday_name>(?:\d+|\w+))".format("|".join(options)),
        re.IGNORECASE,
    )

    def __init__(self, option_name: str, weekday_name: str) -> None:
        super().__init__(None)
        try:
            self.option_num = self.options.index(option_name.lower())
        except ValueError:
            raise ValueError(f'Invalid weekday position "{option_name}"') from None
        try:
            self.weekday = WEEKDAYS.index(weekday_name.lower())
        except ValueError:
            raise ValueError(f'Invalid weekday name "{weekday_name}"') from None

    def next_value(self, date: datetime, field: _Field) -> int | None:
        first_day_wday, last_day = monthrange(date.year, date.month)
        first_hit_day = self.weekday - first_day_wday + 1
        if first_hit_day <= 0:
            first_hit_day += 7
        if self.option_num < 5:
            target_day = first_hit_day + self.option_num * 7
        else:
            target_day = first_hit_day + ((last_day - first_hit_day) // 7) * 7
        if date.day <= target_day <= last_day:
            return target_day
        return None


class _LastDay(_All):
    """``last`` (day of month)."""

    value_re = re.compile(r"last", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__(None)

    def next_value(self, date: datetime, field: _Field) -> int | None:
        return monthrange(date.year, date.month)[1]


_Compiler = tuple[re.Pattern[str], Callable[..., _All]]
_BASE: list[_Compiler] = [(_All.value_re, _All), (_Range.value_re, _Range)]
_COMPILERS: dict[str, list[_Compiler]] = {
    "month": [*_BASE, (_NAME_RANGE_RE, _named(MONTHS, "month", 1))],
    "day": [*_BASE, (_WeekdayPosition.value_re, _WeekdayPosition), (_LastDay.value_re, _LastDay)],
    "day_of_week": [*_BASE, (_NAME_RANGE_RE, _named(WEEKDAYS, "weekday", 0))],
}


class _Field:
    """One of a trigger's eight fields, as APScheduler's ``BaseField`` and its subclasses."""

    def __init__(self, name: str, exprs: str | int) -> None:
        self.name = name
        self.real = name not in ("week", "day_of_week")
        self.expressions: list[_All] = []
        for expr in _SEPARATOR.split(str(exprs).strip()):
            self._compile(expr)

    def _compile(self, expr: str) -> None:
        for value_re, build in _COMPILERS.get(self.name, _BASE):
            match = value_re.match(expr)
            if match:
                compiled = build(**match.groupdict())
                try:
                    compiled.validate_range(self.name)
                except ValueError as exc:
                    raise ValueError(f"Error validating expression {expr!r}: {exc}") from None
                self.expressions.append(compiled)
                return
        raise ValueError(f'Unrecognized expression "{expr}" for field "{self.name}"')

    def min(self, date: datetime) -> int:
        return MIN_VALUES[self.name]

    def max(self, date: datetime) -> int:
        if self.name == "day":
            return monthrange(date.year, date.month)[1]
        return MAX_VALUES[self.name]

    def value(self, date: datetime) -> int:
        if self.name == "week":
            return date.isocalendar()[1]
        if self.name == "day_of_week":
            return date.weekday()
        value: int = getattr(date, self.name)
        return value

    def next_value(self, date: datetime) -> int | None:
        smallest = None
        for expr in self.expressions:
            value = expr.next_value(date, self)
            if smallest is None or (value is not None and value < smallest):
                smallest = value
        return smallest


def _utc_add(value: datetime, delta: timedelta) -> datetime:
    return (value.astimezone(UTC) + delta).astimezone(value.tzinfo)


def _ceil(value: datetime) -> datetime:
    if value.microsecond > 0:
        return _utc_add(value, timedelta(seconds=1, microseconds=-value.microsecond))
    return value


class _Trigger:
    """APScheduler's ``CronTrigger`` without start/end dates or jitter."""

    def __init__(self, tz: tzinfo, values: dict[str, Any]) -> None:
        self.timezone = tz
        values = {k: v for k, v in values.items() if v is not None}
        self.fields: list[_Field] = []
        assign_defaults = False
        for name in FIELD_NAMES:
            if name in values:
                exprs = values.pop(name)
                assign_defaults = not values
            elif assign_defaults:
                exprs = DEFAULT_VALUES[name]
            else:
                exprs = "*"
            self.fields.append(_Field(name, exprs))

    def _increment(self, date: datetime, fieldnum: int) -> tuple[datetime, int]:
        values: dict[str, Any] = {}
        i = 0
        while i < len(self.fields):
            field = self.fields[i]
            if not field.real:
                if i == fieldnum:
                    fieldnum -= 1
                    i -= 1
                else:
                    i += 1
                continue
            if i < fieldnum:
                values[field.name] = field.value(date)
                i += 1
            elif i > fieldnum:
                values[field.name] = field.min(date)
                i += 1
            else:
                value = field.value(date)
                if value == field.max(date):
                    fieldnum -= 1
                    i -= 1
                else:
                    values[field.name] = value + 1
                    i += 1
        difference = datetime(**values) - date.replace(tzinfo=None)
        return _utc_add(date, difference), fieldnum

    def _set(self, date: datetime, fieldnum: int, new_value: int) -> datetime:
        values: dict[str, int] = {}
        for i, field in enumerate(self.fields):
            if field.real:
                if i < fieldnum:
                    values[field.name] = field.value(date)
                elif i > fieldnum:
                    values[field.name] = field.min(date)
                else:
                    values[field.name] = new_value
        return datetime(**values, tzinfo=self.timezone, fold=date.fold)

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous:
            start = min(
                now.astimezone(UTC), _utc_add(previous, timedelta(microseconds=1)).astimezone(UTC)
            ).astimezone(self.timezone)
            if start == previous:
                start = _utc_add(start, timedelta(microseconds=1))
        else:
            start = now
        fieldnum = 0
        date = _ceil(start).astimezone(self.timezone)
        while 0 <= fieldnum < len(self.fields):
            field = self.fields[fieldnum]
            current = field.value(date)
            nxt = field.next_value(date)
            if nxt is None:
                date, fieldnum = self._increment(date, fieldnum - 1)
            elif nxt > current:
                if field.real:
                    date = self._set(date, fieldnum, nxt)
                    fieldnum += 1
                else:
                    date, fieldnum = self._increment(date, fieldnum)
            else:
                fieldnum += 1
        return date if fieldnum >= 0 else None


class CrontabSchedule:
    """A crontab expression in a time zone: its fire times as APScheduler computes them."""

    def __init__(self, expr: str, tz: tzinfo) -> None:
        self.expr = expr
        self._triggers = []
        for values in trigger_fields(expr):
            try:
                self._triggers.append(_Trigger(tz, values))
            except ValueError as exc:
                raise ValueError(f"invalid cron {expr!r}: {exc}") from None

    def has_a_date(self, leap_year: int = 2028) -> bool:
        """Whether some date matches the month and day-of-month fields, checked per month of
        ``leap_year`` (``0 0 31 2 *`` has none; APScheduler would search up to year 9999
        before saying so). With both day fields restricted, some weekday comes every week."""
        if len(self._triggers) > 1:
            return True
        fields = {field.name: field for field in self._triggers[0].fields}
        for month in range(1, 13):
            first = datetime(leap_year, month, 1, tzinfo=UTC)
            if fields["month"].next_value(first) != month:
                continue
            if fields["day"].next_value(first) is not None:
                return True
        return False

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        """As ``get_next_fire_time`` of the trigger :func:`~scheduler.daemon.cron.parse_cron`
        builds (a ``CronTrigger``, or an ``OrTrigger`` of two)."""
        times = [t.next_fire_time(previous, now) for t in self._triggers]
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def next_fire_times(self, now: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``now``, as
        :func:`scheduler.daemon.cron.next_fire_times`."""
        return fire_times_after(self.next_fire_time, now, count)


def fire_times_after(
    next_fire_time: Callable[[datetime | None, datetime], datetime | None],
    now: datetime,
    count: int,
) -> list[datetime]:
    """The next ``count`` fire times strictly after ``now`` of a trigger's
    ``next_fire_time(previous, now)`` (this module's or APScheduler's ``get_next_fire_time``)."""
    times: list[datetime] = []
    previous = None
    cursor = now + timedelta(microseconds=1)
    while len(times) < count:
        nxt = next_fire_time(previous, cursor)
        if nxt is None:
            break
        times.append(nxt)
        previous = nxt
        cursor = nxt + timedelta(microseconds=1)
    return times
