"""EventBridge Scheduler's expressions (chalicelib/schedules.py): what is accepted and
refused, and the fire times they give in a time zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chalicelib.errors import InvalidRequest
from chalicelib.schedules import (
    ENABLED,
    PAUSED,
    Cron,
    Rate,
    Schedule,
    next_fire,
    parse_expression,
    parse_timezone,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def fires(expression: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    parsed, times = parse_expression(expression), []
    for _ in range(count):
        moment = next_fire(parsed, zone, after, after)
        assert moment is not None
        times.append(moment)
        after = moment
    return times


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(2 days)", 172800),
    ],
)
def test_rates(text: str, seconds: int) -> None:
    assert parse_expression(text) == Rate(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(1 second)",
        "rate(1  hour)",
        "cron(0 9 * * * *)",  # neither day field is '?'
        "cron(0 9 ? * ? *)",  # both are
        "cron(0 9 * * ?)",  # five fields
        "cron(60 9 * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 9 32 * ? *)",
        "cron(0 9 ? * 8 *)",
        "cron(0 9 * 13 ? 2200)",
        "cron(0 9 L * ? *)",
        "cron(0 9 15W * ? *)",
        "cron(0 9 ? * 6#3 *)",
        "cron(0 9 ? * 6L *)",
        "cron(0 ? * * * *)",
        "cron(5-1 * * * ? *)",
        "cron(0/0 * * * ? *)",
        "cron(0 9 * FOO ? *)",
        "every day",
        "",
        42,
    ],
)
def test_refused_expressions(text: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_expression(text)
    assert refused.value.code == "invalid_schedule"
    assert refused.value.message.startswith("/schedule: ")


def test_l_w_and_hash_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="'L', 'W' and '#' are not supported"):
        parse_expression("cron(0 9 ? * 6#3 *)")


def test_cron_fields_names_and_steps() -> None:
    cron = parse_expression("cron(0/15 8-10,20 ? JAN-MAR,jul MON-FRI 2026-2030/2)")
    assert isinstance(cron, Cron)
    assert cron.minutes == {0, 15, 30, 45}
    assert cron.hours == {8, 9, 10, 20}
    assert cron.days_of_month is None
    assert cron.months == {1, 2, 3, 7}
    assert cron.days_of_week == {2, 3, 4, 5, 6}  # 1 is Sunday
    assert cron.years == {2026, 2028, 2030}


def test_cron_fires_in_its_time_zone() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert fires("cron(0 9 * * ? *)", PARIS, utc(2026, 1, 10, 12), 2) == [
        utc(2026, 1, 11, 8),
        utc(2026, 1, 12, 8),
    ]
    assert fires("cron(0 9 * * ? *)", PARIS, utc(2026, 7, 10, 12), 1) == [utc(2026, 7, 11, 7)]


def test_day_of_week_one_is_sunday() -> None:
    # 2026-03-01 is a Sunday.
    assert fires("cron(30 6 ? * 1 *)", ZoneInfo("UTC"), utc(2026, 2, 25), 1) == [
        utc(2026, 3, 1, 6, 30)
    ]
    assert fires("cron(30 6 ? * SUN *)", ZoneInfo("UTC"), utc(2026, 2, 25), 1) == [
        utc(2026, 3, 1, 6, 30)
    ]


def test_a_skipped_local_time_fires_nothing() -> None:
    # New York skips 02:00-03:00 on 2026-03-08: the 02:30 fire of that day is skipped.
    assert fires("cron(30 2 * * ? *)", NEW_YORK, utc(2026, 3, 7, 12), 2) == [
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT on the 9th; the 8th has no 02:30
        utc(2026, 3, 10, 6, 30),
    ]


def test_a_repeated_local_time_fires_once() -> None:
    # New York repeats 01:00-02:00 on 2026-11-01: 01:30 fires at its first occurrence only.
    assert fires("cron(30 1 * * ? *)", NEW_YORK, utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 2, 6, 30),  # 01:30 EST the next day, not 01:30 EST on the 1st
    ]


def test_every_quarter_hour_across_the_repeated_hour() -> None:
    times = fires("cron(0/30 * * * ? *)", NEW_YORK, utc(2026, 11, 1, 4, 45), 5)
    # 01:00 EDT, 01:30 EDT, then 02:00 EST: the repeated 01:00 and 01:30 EST do not fire.
    assert times == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 7),
        utc(2026, 11, 1, 7, 30),
        utc(2026, 11, 1, 8),
    ]


def test_a_rate_is_a_fixed_duration_from_its_start() -> None:
    start = utc(2026, 3, 7, 12)
    rate = parse_expression("rate(1 day)")
    assert next_fire(rate, NEW_YORK, start - timedelta(seconds=1), start) == start
    # A day is 24 hours, across New York's spring change too.
    assert next_fire(rate, NEW_YORK, start, start) == utc(2026, 3, 8, 12)
    assert next_fire(rate, NEW_YORK, utc(2026, 3, 8, 12), start) == utc(2026, 3, 9, 12)


def test_a_cron_that_never_fires_again() -> None:
    assert (
        next_fire(parse_expression("cron(0 0 1 1 ? 1970)"), PARIS, utc(2026, 1, 1), utc(2026, 1, 1))
        is None
    )


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/passwd", "UTC\x00", 3])
def test_refused_time_zones(name: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_timezone(name)
    assert refused.value.code == "invalid_timezone"


def test_paused_schedule_has_no_next_fire_and_resume_skips_the_missed() -> None:
    created = utc(2026, 1, 1)
    schedule = Schedule(
        "nightly", "alice", "heavyLoad", {"n": 1}, "rate(1 hour)", "UTC", PAUSED, created, created
    )
    assert schedule.next_fire_at(utc(2026, 1, 1, 5, 30)) is None
    resumed = schedule.with_(state=ENABLED, resumed_at=utc(2026, 1, 1, 5, 30))
    # The fires of 01:00 to 05:00 were missed while paused: the next is 06:00.
    assert resumed.next_fire_at(utc(2026, 1, 1, 5, 30)) == utc(2026, 1, 1, 6)
