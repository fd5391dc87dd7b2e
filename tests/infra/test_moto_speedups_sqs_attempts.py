"""infra.moto_speedups.sqs: a FIFO queue's ReceiveRequestAttemptId, which moto 5.2.5 ignores.

The rules, from the SQS API Reference (ReceiveMessage, ``ReceiveRequestAttemptId``): a
retry with the same id within 5 minutes returns the same messages and receipt handles,
even while they are hidden, and resets their visibility timeout; it is possible only if
none of the messages has been modified (deleted or had its visibility changed); the
parameter applies only to FIFO queues. Time is moto's clock, frozen.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.infra.moto_flavours import FakeClock, client, freeze_sqs_clock, moto_as

VISIBILITY = 30


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return freeze_sqs_clock(monkeypatch)


@pytest.fixture
def fifo() -> Iterator[str]:
    with moto_as("fast"):
        yield make_queue("jobs.fifo")


def make_queue(name: str) -> str:
    attributes = {"VisibilityTimeout": str(VISIBILITY)}
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    url: str = client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def send(url: str, *bodies: str) -> None:
    for body in bodies:
        extra = {"MessageGroupId": "g", "MessageDeduplicationId": body} if ".fifo" in url else {}
        client("sqs").send_message(QueueUrl=url, MessageBody=body, **extra)


def receive(url: str, attempt: str | None = None, count: int = 10) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "QueueUrl": url,
        "MaxNumberOfMessages": count,
        "WaitTimeSeconds": 0,
        "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
    }
    if attempt is not None:
        kwargs["ReceiveRequestAttemptId"] = attempt
    messages: list[dict[str, Any]] = client("sqs").receive_message(**kwargs).get("Messages", [])
    return messages


def handles(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["Body"], m["ReceiptHandle"]) for m in messages]


def test_a_retry_returns_the_same_hidden_messages_and_resets_their_visibility(
    fifo: str, clock: FakeClock
) -> None:
    send(fifo, "a", "b", "c")
    attempt = uuid.uuid4().hex
    first = receive(fifo, attempt, count=2)
    assert [m["Body"] for m in first] == ["a", "b"]
    assert receive(fifo) == []  # the group is blocked: they are hidden

    clock.advance(20)
    again = receive(fifo, attempt, count=2)

    assert handles(again) == handles(first)
    # A retry is the same receive, not another one.
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again] == ["1", "1"]
    # Its visibility timeout starts again at the retry: still hidden 29 s after it.
    clock.advance(VISIBILITY - 1)
    assert receive(fifo) == []
    clock.advance(2)
    assert [m["Body"] for m in receive(fifo)] == ["a", "b", "c"]


def test_what_a_retry_returns_can_be_released_with_its_receipt_handles(
    fifo: str, clock: FakeClock
) -> None:
    send(fifo, "a")
    attempt = uuid.uuid4().hex
    receive(fifo, attempt)
    for message in receive(fifo, attempt):
        client("sqs").change_message_visibility(
            QueueUrl=fifo, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    clock.advance(0.001)  # moto: visible once its clock has passed visible_at
    assert [m["Body"] for m in receive(fifo)] == ["a"]


def test_an_attempt_that_returned_nothing_returns_nothing_again(
    fifo: str, clock: FakeClock
) -> None:
    attempt = uuid.uuid4().hex
    assert receive(fifo, attempt) == []
    send(fifo, "a")
    assert receive(fifo, attempt) == []
    assert [m["Body"] for m in receive(fifo)] == ["a"]


@pytest.mark.parametrize("change", ["delete", "visibility", "received again"])
def test_a_retry_is_refused_once_a_message_was_modified(
    fifo: str, clock: FakeClock, change: str
) -> None:
    send(fifo, "a", "b")
    attempt = uuid.uuid4().hex
    first = receive(fifo, attempt)
    handle = first[1]["ReceiptHandle"]
    if change == "delete":
        client("sqs").delete_message(QueueUrl=fifo, ReceiptHandle=handle)
    elif change == "visibility":
        client("sqs").change_message_visibility(
            QueueUrl=fifo, ReceiptHandle=handle, VisibilityTimeout=60
        )
    else:
        clock.advance(VISIBILITY + 1)
        assert len(receive(fifo)) == 2

    with pytest.raises(ClientError) as raised:
        receive(fifo, attempt)
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "ReceiveRequestAttemptId" in raised.value.response["Error"]["Message"]


def test_after_five_minutes_the_id_is_forgotten_and_a_retry_is_a_new_receive(
    fifo: str, clock: FakeClock
) -> None:
    send(fifo, "a")
    attempt = uuid.uuid4().hex
    receive(fifo, attempt, count=1)
    clock.advance(VISIBILITY + 1)
    send(fifo, "b")
    clock.advance(300 - VISIBILITY)

    again = receive(fifo, attempt)

    assert [m["Body"] for m in again] == ["a", "b"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again] == ["2", "1"]


def test_a_standard_queue_ignores_the_id(clock: FakeClock) -> None:
    with moto_as("fast"):
        url = make_queue("plain")
        send(url, "a")
        attempt = uuid.uuid4().hex
        assert [m["Body"] for m in receive(url, attempt)] == ["a"]
        assert receive(url, attempt) == []


def test_moto_as_released_ignores_the_id_which_is_why_it_is_patched(clock: FakeClock) -> None:
    with moto_as("stock"):
        url = make_queue("jobs.fifo")
        send(url, "a")
        attempt = uuid.uuid4().hex
        assert len(receive(url, attempt)) == 1
        assert receive(url, attempt) == []
