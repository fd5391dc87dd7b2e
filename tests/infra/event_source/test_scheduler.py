"""The local EventBridge Scheduler (infra/event_source/scheduler.py), against moto's
Scheduler API with an injected clock: which fires are due when, in the schedule's time
zone, each once, none for a disabled schedule, none made up after a pause, and a failed
invocation retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.event_source.scheduler import SchedulerEventSource
from infra.event_source.settlement import InvocationResult, InvocationStatus

FUNCTION = "heavy-jobs-local-fire_schedule"
ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"
INPUT = json.dumps({"schedule": "nightly", "scheduled_time": "<aws.scheduler.scheduled-time>"})


class FakeRuntime:
    def __init__(self, results: list[InvocationStatus] | None = None) -> None:
        self.function = SimpleNamespace(function_name=FUNCTION, name="fire", timeout_seconds=5)
        self.events: list[Any] = []
        self._results = list(results or [])

    def reserve(self, timeout: float) -> bool:
        return True

    def release(self) -> None:
        pass

    def invoke(self, event: Any) -> Any:
        self.events.append(event)
        status = self._results.pop(0) if self._results else InvocationStatus.RETURNED
        return SimpleNamespace(request_id="r", result=InvocationResult(status, error=""))


@pytest.fixture
def scheduler() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("scheduler", region_name="us-east-1")
        client.create_schedule_group(Name="group")
        yield client


def create(scheduler: Any, expression: str, timezone: str = "UTC", **extra: Any) -> None:
    scheduler.create_schedule(
        Name="s",
        GroupName="group",
        ScheduleExpression=expression,
        ScheduleExpressionTimezone=timezone,
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": ARN, "RoleArn": "arn:aws:iam::123456789012:role/r", "Input": INPUT},
        **extra,
    )


def times(due: list[Any]) -> list[str]:
    return [event["scheduled_time"] for _, (_, event) in due]


def test_a_cron_fires_at_each_local_time_once(scheduler: Any) -> None:
    create(scheduler, "cron(0/2 * * * ? *)", "Europe/Paris")
    runtime = FakeRuntime()
    source = SchedulerEventSource(scheduler, {FUNCTION: runtime})  # type: ignore[dict-item]
    now = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if now.minute % 2:
        now += timedelta(minutes=1)
    assert times(source.due(now - timedelta(seconds=1))) == []
    first = source.due(now + timedelta(seconds=1))
    assert times(first) == [now.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert first[0][1][1]["schedule"] == "nightly"
    assert times(source.due(now + timedelta(seconds=2))) == []  # each fire once
    later = source.due(now + timedelta(minutes=4, seconds=1))
    assert times(later) == [
        (now + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in (2, 4)
    ]


def test_a_cron_in_a_time_zone_fires_at_its_local_time(scheduler: Any) -> None:
    # 09:00 in Tokyo (UTC+9, no daylight saving) is 00:00 UTC.
    create(scheduler, "cron(0 9 * * ? *)", "Asia/Tokyo")
    source = SchedulerEventSource(scheduler, {FUNCTION: FakeRuntime()})  # type: ignore[dict-item]
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    source.due(midnight - timedelta(seconds=5))
    assert times(source.due(midnight + timedelta(seconds=1))) == [
        midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
    ]


def test_a_rate_fires_at_its_start_then_every_interval(scheduler: Any) -> None:
    create(scheduler, "rate(1 minute)")
    source = SchedulerEventSource(scheduler, {FUNCTION: FakeRuntime()})  # type: ignore[dict-item]
    now = datetime.now(UTC)
    assert len(source.due(now + timedelta(seconds=1))) == 1  # at once, as without StartDate
    assert len(source.due(now + timedelta(seconds=2))) == 0
    assert len(source.due(now + timedelta(seconds=62))) == 1


def test_disabled_fires_nothing_and_missed_fires_are_not_made_up(scheduler: Any) -> None:
    create(scheduler, "cron(* * * * ? *)", State="DISABLED")
    source = SchedulerEventSource(scheduler, {FUNCTION: FakeRuntime()})  # type: ignore[dict-item]
    now = datetime.now(UTC)
    assert source.due(now + timedelta(minutes=5)) == []
    schedule = scheduler.get_schedule(Name="s", GroupName="group")
    scheduler.update_schedule(
        Name="s",
        GroupName="group",
        ScheduleExpression=schedule["ScheduleExpression"],
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=schedule["Target"],
        State="ENABLED",
    )
    # Enabled again ten minutes on: the minutes missed meanwhile are not fired.
    assert len(source.due(now + timedelta(minutes=10))) <= 1


def test_a_failed_invocation_is_retried(scheduler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    create(scheduler, "rate(1 hour)")
    runtime = FakeRuntime([InvocationStatus.RAISED, InvocationStatus.RETURNED])
    source = SchedulerEventSource(scheduler, {FUNCTION: runtime})  # type: ignore[dict-item]
    monkeypatch.setattr("infra.event_source.scheduler.time.sleep", lambda seconds: None)
    (fire,) = source.due(datetime.now(UTC) + timedelta(seconds=1))
    source._deliver(*fire)
    assert len(runtime.events) == 2 and runtime.events[0] == runtime.events[1]
