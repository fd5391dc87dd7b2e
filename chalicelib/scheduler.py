"""EventBridge Scheduler: one AWS schedule per user schedule, in the stage's schedule group.

Each AWS schedule evaluates the user's expression in its time zone
(``ScheduleExpressionTimezone``), with the flexible time window OFF, ENABLED or DISABLED
(pause, resume), and invokes the app's firing function (``fire_schedule`` in app.py) with
an Input naming the client, the schedule and ``<aws.scheduler.scheduled-time>``, the fire
time EventBridge Scheduler substitutes. The target has a retry policy and a dead-letter
queue: EventBridge Scheduler retries a failed invocation within the policy, then sends it
to the queue ("Managing a schedule in EventBridge Scheduler", "Configuring a schedule's
dead-letter queue in EventBridge Scheduler", EventBridge Scheduler User Guide). It
promises no exactly-once delivery, and a firing function that made the job and then
failed is invoked again for the same fire, so delivery is taken as at least once: the
firing function makes each fire time submit one job whatever arrives
(chalicelib.schedule_service.fire).

AWS schedule names are derived (``aws_name``): a client's name and a schedule's name
together can exceed EventBridge Scheduler's 64 characters. Every call is safe to repeat:
creating one that exists updates it, deleting one that is gone succeeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.schedules import ENABLED, Schedule

# What EventBridge Scheduler substitutes with the fire's scheduled time (RFC 3339 UTC).
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
# The Input's fields (the firing function reads them; the local emulation writes them).
INPUT_CLIENT, INPUT_NAME, INPUT_TIME = "client", "schedule", "scheduled_time"
# The target's retry policy: a fire is retried for up to an hour, then dead-lettered.
MAXIMUM_EVENT_AGE_SECONDS = 3600
MAXIMUM_RETRY_ATTEMPTS = 10


@dataclass(frozen=True)
class SchedulerTarget:
    """Where the stage's schedules send their fires (the stack's outputs)."""

    group_name: str
    function_arn: str
    role_arn: str
    dead_letter_arn: str


def aws_name(client: str, name: str) -> str:
    """The AWS schedule's name of ``client``'s schedule ``name`` (64 characters at most)."""
    return "s-" + hashlib.sha256(f"{client}\0{name}".encode()).hexdigest()[:60]


def target_input(client: str, name: str, scheduled_time: str = SCHEDULED_TIME) -> str:
    """The Input of a schedule's target (the firing function's event)."""
    return json.dumps({INPUT_CLIENT: client, INPUT_NAME: name, INPUT_TIME: scheduled_time})


class Scheduler:
    def __init__(self, client: Any, target: SchedulerTarget) -> None:
        self._client = client
        self.target = target

    def put(self, schedule: Schedule) -> None:
        """Create the AWS schedule of ``schedule``, or update it to match if it exists.
        StoreUnavailable if EventBridge Scheduler fails."""
        request = self._request(schedule)
        try:
            self._client.create_schedule(**request)
            return
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConflictException":
                raise StoreUnavailable(f"EventBridge Scheduler failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"EventBridge Scheduler failed: {error}") from error
        self._call("update_schedule", **request)

    def update(self, schedule: Schedule) -> None:
        """Update the AWS schedule (its state) to match ``schedule``."""
        self._call("update_schedule", **self._request(schedule))

    def delete(self, client: str, name: str) -> None:
        """Delete the AWS schedule; one already gone is not an error."""
        try:
            self._client.delete_schedule(
                Name=aws_name(client, name), GroupName=self.target.group_name
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise StoreUnavailable(f"EventBridge Scheduler failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"EventBridge Scheduler failed: {error}") from error

    def _request(self, schedule: Schedule) -> dict[str, Any]:
        request: dict[str, Any] = {
            "Name": aws_name(schedule.client, schedule.name),
            "GroupName": self.target.group_name,
            "ScheduleExpression": schedule.expression,
            "ScheduleExpressionTimezone": schedule.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED" if schedule.state == ENABLED else "DISABLED",
            "Target": {
                "Arn": self.target.function_arn,
                "RoleArn": self.target.role_arn,
                "Input": target_input(schedule.client, schedule.name),
                "RetryPolicy": {
                    "MaximumEventAgeInSeconds": MAXIMUM_EVENT_AGE_SECONDS,
                    "MaximumRetryAttempts": MAXIMUM_RETRY_ATTEMPTS,
                },
                "DeadLetterConfig": {"Arn": self.target.dead_letter_arn},
            },
        }
        resumed = schedule.resumed_at > schedule.created_at
        next_fire = schedule.next_fire_at(schedule.resumed_at)
        if resumed and schedule.expression.startswith("rate(") and next_fire is not None:
            # Without a start date a rate fires at once, then every interval; a resumed
            # one keeps the cadence it had from its creation, skipping what was missed.
            request["StartDate"] = next_fire
        return request

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"EventBridge Scheduler {operation} failed: {error}") from error
