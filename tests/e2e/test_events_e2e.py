"""Job events on the local stack: the local event source reads the job table's stream and
runs publish_job_events as Lambda's DynamoDB event source would; a rule on the stage's bus
sends what it matches to a queue."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.events import EVENT_SOURCE
from tests.e2e.conftest import Stack
from tests.waiting import wait_for


def test_a_jobs_life_reaches_a_rule_on_the_stages_bus(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    sqs, events = stack.client("sqs"), stack.client("events")
    url = sqs.create_queue(QueueName="job-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    bus = stack.outputs["JobEventBusName"]
    events.put_rule(
        Name="jobs", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
    )
    events.put_targets(Rule="jobs", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn["QueueArn"]}])

    job_id = stack.submit(1000)["job_id"]
    heard: list[dict[str, Any]] = []

    def finished() -> bool:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in messages.get("Messages", []):
            heard.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        types = [e["detail-type"] for e in heard if e["detail"]["job_id"] == job_id]
        return "job.succeeded" in types

    wait_for(finished, 60, lambda: f"heard {heard}; the stack's log ends:\n{stack.log[-4000:]}")
    mine = [e for e in heard if e["detail"]["job_id"] == job_id]
    types = [e["detail-type"] for e in mine]
    assert types[:2] == ["job.queued", "job.running"] and types[-1] == "job.succeeded"
    assert len({e["detail"]["event_id"] for e in mine}) == len(mine)  # one id per change
    assert mine[-1]["detail"]["status"] == "succeeded"
