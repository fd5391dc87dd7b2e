"""Tests for infra.event_source, the local stand-in for Lambda's SQS event source mapping.

Unit tests hold the pure pieces to AWS's documented behaviour (the event against AWS's
sample event, the batch outcome against the partial-batch-response rules).
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.event_source import (
    DEFAULT_CONCURRENCY,
    InvocationResult,
    InvocationStatus,
    Outcome,
    collect_batch,
    effective_concurrency,
    settle_batch,
    sqs_event,
    sqs_message_to_record,
)

FIXTURES = Path(__file__).parent / "fixtures"


def docs_event(name: str) -> dict[str, Any]:
    """A sample event from AWS's documentation (see the fixture's "source")."""
    event: dict[str, Any] = json.loads((FIXTURES / name).read_text())["event"]
    return event


def shape(value: Any) -> Any:
    """The structure of a JSON value: same keys, value types in place of values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


# --------------------------------------------------------------------------------------
# Unit: Lambda's SQS event


def test_record_builder_reproduces_aws_sample_standard_event() -> None:
    expected = docs_event("aws_docs_sqs_event_standard.json")
    # What boto3's ReceiveMessage returned for the two messages of AWS's sample.
    received = [
        {
            "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": "Test message.",
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185",
            },
        },
        {
            "MessageId": "2e1424d4-f796-459a-8184-9c92662be6da",
            "ReceiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": "Test message.",
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082650636",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082650649",
            },
        },
    ]

    event = sqs_event(received, "arn:aws:sqs:us-east-2:123456789012:my-queue", "us-east-2")

    assert event == expected
    assert shape(event) == shape(expected)  # `==` alone would let 1 == 1.0 through
    assert json.dumps(event) == json.dumps(expected)  # key order too


def test_record_builder_reproduces_aws_sample_fifo_event() -> None:
    expected = docs_event("aws_docs_sqs_event_fifo.json")["Records"][0]
    received = {
        "MessageId": "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
        "ReceiptHandle": "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": "Test message.",
        "Attributes": dict(expected["attributes"]),  # SQS's system attributes pass as-is
    }

    record = sqs_message_to_record(
        received, "arn:aws:sqs:us-east-2:123456789012:fifo.fifo", "us-east-2"
    )

    assert record == expected
    assert shape(record) == shape(expected)


def test_message_attributes_take_lambdas_shape() -> None:
    received = {
        "MessageId": "m1",
        "ReceiptHandle": "r1",
        "MD5OfBody": "b",
        "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": "1", "AWSTraceHeader": "Root=1-abc"},
        "MD5OfMessageAttributes": "a",
        "MessageAttributes": {
            "myAttribute": {"StringValue": "myValue", "DataType": "String"},
            "count": {"StringValue": "3", "DataType": "Number.int"},
            "blob": {"BinaryValue": b"\x00\x01\xff", "DataType": "Binary"},
        },
    }

    record = sqs_message_to_record(received, "arn:aws:sqs:us-east-1:1:q", "us-east-1")

    # As in the current AWS sample: lowercase keys, both list keys always present,
    # binary values as base64 text.
    assert record["messageAttributes"] == {
        "myAttribute": {
            "stringValue": "myValue",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number.int",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert record["md5OfMessageAttributes"] == "a"
    assert record["attributes"]["AWSTraceHeader"] == "Root=1-abc"


# --------------------------------------------------------------------------------------
# Unit: settling a batch

IDS = ("m1", "m2", "m3")


def returned(response: Any) -> InvocationResult:
    return InvocationResult(InvocationStatus.RETURNED, response=response)


@pytest.mark.parametrize(
    "response",
    [None, {}, "done", [1, 2], {"batchItemFailures": None}, {"batchItemFailures": []}],
    ids=["null", "empty-object", "string", "list", "null-list", "empty-list"],
)
def test_a_response_without_item_failures_deletes_the_whole_batch(response: Any) -> None:
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.SUCCEEDED
    assert settlement.delete == IDS


def test_batch_item_failures_delete_only_the_other_records() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.PARTIAL
    assert settlement.delete == ("m1", "m3")


def test_every_record_reported_failed_deletes_nothing() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": i} for i in IDS]}
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.PARTIAL
    assert settlement.delete == ()


@pytest.mark.parametrize(
    "failures",
    [
        "m2",
        {"itemIdentifier": "m2"},
        ["m2"],
        [{"ItemIdentifier": "m2"}],
        [{"itemIdentifier": None}],
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": "not-in-batch"}],
        [{"itemIdentifier": "m1"}, {"itemIdentifier": 2}],
    ],
    ids=[
        "string",
        "object",
        "bare-ids",
        "wrong-key-case",
        "null-id",
        "empty-id",
        "unknown-id",
        "one-bad-entry",
    ],
)
def test_a_malformed_batch_response_fails_the_whole_batch(failures: Any) -> None:
    settlement = settle_batch(returned({"batchItemFailures": failures}), IDS)
    assert settlement.outcome is Outcome.FAILED
    assert settlement.delete == ()
    assert "malformed" in settlement.reason


@pytest.mark.parametrize(
    "status", [InvocationStatus.RAISED, InvocationStatus.TIMED_OUT, InvocationStatus.DIED]
)
def test_an_invocation_that_did_not_return_deletes_nothing(status: InvocationStatus) -> None:
    settlement = settle_batch(InvocationResult(status, error="why"), IDS)
    assert settlement.outcome is Outcome.FAILED
    assert settlement.delete == ()
    assert settlement.reason == "why"


# --------------------------------------------------------------------------------------
# Unit: concurrency and batching


@pytest.mark.parametrize(
    ("reserved", "maximum", "expected"),
    [(None, None, DEFAULT_CONCURRENCY), (1, None, 1), (0, None, 0), (5, 2, 2), (None, 3, 3)],
)
def test_effective_concurrency(reserved: int | None, maximum: int | None, expected: int) -> None:
    assert effective_concurrency(reserved, maximum) == expected


class FakeQueue:
    """receive() answers from a script; the clock advances by each call's wait."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, int]] = []
        self.now = 0.0

    def receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        self.calls.append((max_messages, wait_seconds))
        count = min(self.answers.pop(0) if self.answers else 0, max_messages)
        if not count:
            self.now += wait_seconds  # an empty long poll waits it out
        return [{"MessageId": str(uuid.uuid4())} for _ in range(count)]

    def clock(self) -> float:
        return self.now


def test_without_window_the_first_answer_is_the_batch() -> None:
    queue = FakeQueue([3, 5])
    batch = collect_batch(queue.receive, 10, 0, 20, queue.clock)
    assert len(batch) == 3
    assert queue.calls == [(10, 20)]


def test_window_collects_until_the_batch_is_full() -> None:
    queue = FakeQueue([4, 4, 4])
    batch = collect_batch(queue.receive, 10, 5, 20, queue.clock)
    assert len(batch) == 10
    assert queue.calls == [(10, 20), (6, 5), (2, 5)]  # never asks for more than is missing


def test_window_stops_collecting_when_it_elapses() -> None:
    queue = FakeQueue([2])
    batch = collect_batch(queue.receive, 10, 3, 20, queue.clock)
    assert len(batch) == 2
    assert queue.calls == [(10, 20), (8, 3)]


def test_no_receive_asks_for_more_than_ten() -> None:
    queue = FakeQueue([10, 10, 10])
    batch = collect_batch(queue.receive, 25, 5, 20, queue.clock)
    assert len(batch) == 25
    assert [c[0] for c in queue.calls] == [10, 10, 5]


def test_an_empty_poll_is_an_empty_batch() -> None:
    queue = FakeQueue([0])
    assert collect_batch(queue.receive, 10, 5, 20, queue.clock) == []
