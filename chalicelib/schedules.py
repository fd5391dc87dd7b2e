"""Recurring schedules: EventBridge Scheduler's expressions, their next fire times in a
time zone, and a schedule's record.

The expressions are EventBridge Scheduler's ("Schedule types in EventBridge Scheduler",
EventBridge Scheduler User Guide): ``rate(value unit)`` (unit minute(s), hour(s) or
day(s); singular for 1) and ``cron(minutes hours day-of-month month day-of-week year)``
with ``*``, ``,``, ``-``, ``/``, ``?``, numbers and the names JAN-DEC and SUN-SAT (day of
week 1 is Sunday). One of day-of-month and day-of-week must be ``?``. ``L``, ``W`` and
``#`` are refused (400 invalid_schedule): the docs name the subset.

Time zones and daylight saving, as the same page documents for EventBridge Scheduler: a
cron expression is evaluated in the schedule's IANA time zone; a local time that does not
exist (the hour skipped in spring) fires nothing, and a local time that occurs twice (the
hour repeated in autumn) fires once, at its first occurrence. A rate is a fixed duration
(a day is 24 hours), counted from the schedule's start whatever the clock shows.

On AWS, EventBridge Scheduler fires each schedule, at least once per fire time (a failed
invocation is retried: chalicelib/scheduler.py); ``chalicelib.schedule_service.fire`` makes
each fire time submit one job whatever arrives. The local stack's emulation
(infra/event_source/scheduler.py) computes fire times with this module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.errors import InvalidRequest
from chalicelib.jobs import iso_utc

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# A schedule's name: unique per client (EventBridge Scheduler's own names are derived).
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_TIMEZONE = "UTC"
ENABLED = "enabled"
PAUSED = "paused"
STATES = (ENABLED, PAUSED)
# EventBridge Scheduler's year range for a cron expression.
FIRST_YEAR, LAST_YEAR = 1970, 2199
# The longest an expression and a time zone name may be (EventBridge Scheduler's limits:
# ScheduleExpression up to 256 characters, ScheduleExpressionTimezone up to 50).
MAX_EXPRESSION_LENGTH = 256
MAX_TIMEZONE_LENGTH = 50

_RATE = re.compile(r"rate\((\d{1,9}) ([a-z]+)\)")
_CRON = re.compile(r"cron\(([^()]*)\)")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_DAYS = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)
}


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int]
    question_mark: bool = False


_FIELDS = (
    _FieldSpec("minutes", 0, 59, {}),
    _FieldSpec("hours", 0, 23, {}),
    _FieldSpec("day-of-month", 1, 31, {}, question_mark=True),
    _FieldSpec("month", 1, 12, _MONTHS),
    _FieldSpec("day-of-week", 1, 7, _DAYS, question_mark=True),
    _FieldSpec("year", FIRST_YEAR, LAST_YEAR, {}),
)


@dataclass(frozen=True)
class Rate:
    """``rate(value unit)``: a fire every ``seconds``, from the schedule's start."""

    seconds: int


@dataclass(frozen=True)
class Cron:
    """``cron(...)``: the local wall-clock times whose fields are all in these sets (a day
    field that was ``?`` is None: any day)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # 1 = Sunday
    years: frozenset[int]

    def matches_day(self, day: date) -> bool:
        if day.year not in self.years or day.month not in self.months:
            return False
        if self.days_of_month is not None and day.day not in self.days_of_month:
            return False
        weekday = day.isoweekday() % 7 + 1  # Sunday 1 ... Saturday 7
        return self.days_of_week is None or weekday in self.days_of_week


Expression = Rate | Cron


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest("invalid_schedule", f"/schedule: {message}.")


def parse_expression(text: Any) -> Expression:
    """The expression ``text`` names; 400 invalid_schedule saying what is wrong."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_LENGTH:
        raise _invalid(
            f"must be a string of at most {MAX_EXPRESSION_LENGTH} characters like "
            "'rate(1 hour)' or 'cron(0 9 * * ? *)'"
        )
    rate = _RATE.fullmatch(text)
    if rate:
        return _rate(int(rate.group(1)), rate.group(2))
    cron = _CRON.fullmatch(text)
    if cron:
        return _cron(cron.group(1))
    raise _invalid(
        "must be 'rate(value unit)' or 'cron(minutes hours day-of-month month day-of-week year)'"
    )


def _rate(value: int, unit: str) -> Rate:
    singular = unit.removesuffix("s")
    if singular not in _UNITS or value < 1:
        raise _invalid("a rate is a positive whole number of minutes, hours or days")
    if (value == 1) != (unit == singular):
        raise _invalid("a rate's unit is singular for 1 ('rate(1 hour)') and plural otherwise")
    return Rate(value * _UNITS[singular])


def _cron(body: str) -> Cron:
    parts = body.split(" ")
    if len(parts) != len(_FIELDS) or not all(parts):
        raise _invalid(
            "a cron expression has six fields separated by single spaces: minutes hours "
            "day-of-month month day-of-week year"
        )
    values = [_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)]
    if (values[2] is None) == (values[4] is None):
        raise _invalid("exactly one of day-of-month and day-of-week must be '?'")
    minutes, hours, days_of_month, months, days_of_week, years = values
    assert minutes is not None and hours is not None and months is not None and years
    return Cron(minutes, hours, days_of_month, months, days_of_week, years)


def _field(spec: _FieldSpec, text: str) -> frozenset[int] | None:
    if text == "?":
        if not spec.question_mark:
            raise _invalid(f"'?' is only for day-of-month or day-of-week, not {spec.name}")
        return None
    if "#" in text or {"L", "W", "LW"} & set(re.findall(r"[A-Z]+", text.upper())):
        raise _invalid(
            f"{spec.name} {text!r}: 'L', 'W' and '#' are not supported here (the supported "
            "subset: numbers, names, '*', ',', '-', '/' and '?')"
        )
    chosen: set[int] = set()
    for item in text.split(","):
        chosen.update(_item(spec, item))
    return frozenset(chosen)


def _item(spec: _FieldSpec, item: str) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or not 1 <= int(step_text) <= spec.high:
            raise _invalid(f"{spec.name} {item!r}: the step after '/' must be 1 to {spec.high}")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _number(spec, first), _number(spec, last)
        if low > high:
            raise _invalid(f"{spec.name} {item!r}: a range must go from low to high")
    else:
        low = _number(spec, base)
        high = spec.high if slash else low  # "0/15": from 0, every 15
    return range(low, high + 1, step)


def _number(spec: _FieldSpec, text: str) -> int:
    named = spec.names.get(text.upper())
    if named is not None:
        return named
    if not text.isdigit() or not text.isascii() or not spec.low <= int(text) <= spec.high:
        raise _invalid(
            f"{spec.name} {text!r} must be {spec.low} to {spec.high}"
            + (" or a name" if spec.names else "")
        )
    return int(text)


def parse_timezone(name: Any) -> ZoneInfo:
    """The IANA time zone ``name`` names; 400 invalid_timezone otherwise."""
    # zoneinfo is imported here, on a schedule's first use: the API's OpenAPI document reads
    # this module's names, and no function's cold start pays for the time zones (figure 6).
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if isinstance(name, str) and 0 < len(name) <= MAX_TIMEZONE_LENGTH and name.isascii():
        try:
            # A path-like key ("../x") is refused by zoneinfo itself with ValueError.
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidRequest(
        "invalid_timezone", "/timezone: must be an IANA time zone name like 'Europe/Paris'."
    )


def next_fire(
    expression: Expression, zone: ZoneInfo, after: datetime, start: datetime
) -> datetime | None:
    """The first fire time strictly after ``after`` (UTC), or None if there is none before
    the end of LAST_YEAR. A rate fires at ``start`` and every interval after it; a cron
    expression at each matching local time of ``zone`` that exists, once."""
    if isinstance(expression, Rate):
        if after < start:
            return start
        periods = int((after - start).total_seconds() // expression.seconds) + 1
        return start + timedelta(seconds=periods * expression.seconds)
    return _next_cron(expression, zone, after)


def _next_cron(cron: Cron, zone: ZoneInfo, after: datetime) -> datetime | None:
    local_after = after.astimezone(zone)
    day = local_after.date() - timedelta(days=1)  # a fold can put a match before it
    while day.year <= LAST_YEAR:
        if day.month not in cron.months or day.year not in cron.years:
            day = _first_of_next_month(day)
            continue
        if cron.matches_day(day):
            for hour in sorted(cron.hours):
                for minute in sorted(cron.minutes):
                    moment = _existing(day, hour, minute, zone)
                    if moment is not None and moment > after:
                        return moment
        day += timedelta(days=1)
    return None


def _first_of_next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _existing(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of local ``day hour:minute`` in ``zone``: None for a time the clock
    skips; the first of the two instants of a time it repeats."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)  # fold=0: first
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # in a gap: no such local time
    return instant


# --- the schedule record ------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A client's recurring schedule. ``resumed_at``: fires scheduled before it are skipped
    (the ones missed while paused); ``last_error`` says why the last fire made no job."""

    name: str
    client: str
    kind: str
    input: dict[str, Any]
    expression: str
    timezone: str
    state: str
    created_at: datetime
    resumed_at: datetime
    last_error: str | None = None

    @property
    def parsed(self) -> Expression:
        return parse_expression(self.expression)

    @property
    def zone(self) -> ZoneInfo:
        return parse_timezone(self.timezone)

    def next_fire_at(self, now: datetime) -> datetime | None:
        """When it fires next after ``now`` (None while paused, or never again). A rate
        counts from its creation, so a resume keeps its cadence and skips what was missed."""
        if self.state != ENABLED:
            return None
        after = max(now, self.resumed_at - timedelta(microseconds=1))
        return next_fire(self.parsed, self.zone, after, self.created_at)

    def with_(self, **changes: Any) -> Schedule:
        return replace(self, **changes)

    def definition(self) -> str:
        """What a repeated create must match to be the same request (JSON text)."""
        return json.dumps([self.kind, self.input, self.expression, self.timezone], sort_keys=True)

    def to_api(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "input": self.input,
            "schedule": self.expression,
            "timezone": self.timezone,
            "state": self.state,
            "client": self.client,
            "created_at": iso_utc(self.created_at),
            "next_fire_at": iso_utc(self.next_fire_at(now)),
            "last_error": self.last_error,
        }
