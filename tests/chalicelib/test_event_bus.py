"""The bus adapter and the stream batch's publication (chalicelib/event_bus.py): on the
stack's own bus under moto, a rule to an SQS queue receives what was put; a stub client
stands in for EventBridge's per-entry failures (PutEvents answers 200 with
FailedEntryCount), which moto never produces."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.event_bus import PUT_EVENTS_LIMIT, EventBus, publish_records
from chalicelib.events import EVENT_SOURCE, EventType, JobEvent, UnreadableChange
from chalicelib.jobs import Job, JobStatus, to_item
from tests.chalicelib.test_events import NOW, stream_record


def job_event(number: int) -> JobEvent:
    return JobEvent(EventType.QUEUED, f"e-{number}", Job.new(n=number, now=NOW))


class StubEvents:
    """An ``events`` client whose PutEvents refuses the entries at the given positions
    (counted over every call), as EventBridge does when it throttles some of them."""

    def __init__(self, refused: set[int] = frozenset(), error: Exception | None = None) -> None:
        self.refused = refused
        self.error = error
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        offset = sum(len(call) for call in self.calls)
        self.calls.append(Entries)
        results = [
            {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}
            if offset + i in self.refused
            else {"EventId": f"id-{offset + i}"}
            for i in range(len(Entries))
        ]
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedEntryCount": failed, "Entries": results}


def test_events_reach_a_rule_on_the_stacks_bus(aws: dict[str, str]) -> None:
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="listener")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    bus = aws["JobEventBusName"]
    events.put_rule(
        Name="all-jobs", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
    )
    events.put_targets(
        Rule="all-jobs",
        EventBusName=bus,
        Targets=[{"Id": "q", "Arn": queue_arn["Attributes"]["QueueArn"]}],
    )
    sent = [job_event(n) for n in range(PUT_EVENTS_LIMIT + 3)]
    assert EventBus(events, bus).put(sent) == []
    received: list[dict[str, Any]] = []
    while len(received) < len(sent):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        received.extend(json.loads(m["Body"]) for m in messages.get("Messages", []))
    assert sorted(m["detail"]["event_id"] for m in received) == sorted(e.event_id for e in sent)
    assert {m["detail-type"] for m in received} == {"job.queued"}


def test_puts_in_batches_of_ten() -> None:
    stub = StubEvents()
    assert EventBus(stub, "bus").put([job_event(n) for n in range(23)]) == []
    assert [len(call) for call in stub.calls] == [10, 10, 3]
    assert {entry["EventBusName"] for call in stub.calls for entry in call} == {"bus"}


def test_refused_entries_are_returned_and_later_batches_not_sent() -> None:
    stub = StubEvents(refused={3, 5})
    failed = EventBus(stub, "bus").put([job_event(n) for n in range(15)])
    assert len(stub.calls) == 1  # the second batch waits for the retry
    assert [f.position for f in failed] == [3, 5, *range(10, 15)]
    assert failed[0].error_code == "ThrottlingException"
    assert {f.error_code for f in failed[2:]} == {"NotSent"}


def test_a_failed_call_is_store_unavailable() -> None:
    from botocore.exceptions import EndpointConnectionError

    stub = StubEvents(error=EndpointConnectionError(endpoint_url="http://events"))
    with pytest.raises(StoreUnavailable, match="PutEvents"):
        EventBus(stub, "bus").put([job_event(1)])


def records_of_a_run() -> list[dict[str, Any]]:
    """A job's queued, running and succeeded changes, sequence numbers 1, 2, 3."""
    job = Job.new(n=5, now=NOW)
    started = job.with_(status=JobStatus.RUNNING, owner="o", attempts=1, lease_until=1)
    done = started.with_(status=JobStatus.SUCCEEDED, owner=None, result=1, finished_at=NOW)
    records = [
        stream_record(None, to_item(job), "e-1"),
        stream_record(to_item(job), to_item(started), "e-2"),
        stream_record(to_item(started), to_item(done), "e-3"),
    ]
    for sequence, record in enumerate(records, start=1):
        record["dynamodb"]["SequenceNumber"] = str(sequence)
    return records


def test_a_batch_publishes_each_change_in_order() -> None:
    stub = StubEvents()
    assert publish_records(records_of_a_run(), EventBus(stub, "bus")) == []
    (call,) = stub.calls
    assert [entry["DetailType"] for entry in call] == ["job.queued", "job.running", "job.succeeded"]


def test_the_first_refused_event_is_the_batch_item_failure() -> None:
    stub = StubEvents(refused={1, 2})
    assert publish_records(records_of_a_run(), EventBus(stub, "bus")) == ["2"]


def test_an_unreadable_record_is_the_failure_after_the_ones_before_it_are_sent() -> None:
    records = records_of_a_run()
    records[1]["dynamodb"]["NewImage"]["status"] = {"S": "exploded"}
    stub = StubEvents()
    assert publish_records(records, EventBus(stub, "bus")) == ["2"]
    assert [[entry["DetailType"] for entry in call] for call in stub.calls] == [["job.queued"]]


def test_an_unreadable_first_record_fails_the_invocation_for_bisection() -> None:
    records = records_of_a_run()[1:]
    records[0]["dynamodb"]["NewImage"]["status"] = {"S": "exploded"}
    stub = StubEvents()
    with pytest.raises(UnreadableChange):
        publish_records(records, EventBus(stub, "bus"))
    assert stub.calls == []
