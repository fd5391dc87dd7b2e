"""infra.moto_speedups.sqs: SQS semantics kept, on moto as released and with the speed-ups.

Each behaviour is asserted on both flavours ("stock" is moto 5.2.5 itself, "fast" the
patched one), so a test passing on both shows the speed-ups answer as moto does. Where
moto departs from SQS and the speed-ups follow SQS, the test runs on "fast" only and
cites the AWS documentation. A randomized differential test compares whole transcripts.
Time is moto's clock, frozen (``FakeClock``), except in the long-poll tests.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.sqs import models as sqs_models

from tests.infra.moto_flavours import FLAVOURS, FakeClock, client, freeze_sqs_clock, moto_as

REGION = "us-east-1"
# Random transcripts per queue kind in the suite (about 4 s each); raise it to search for
# differences (MOTO_SPEEDUPS_SEEDS=100 passed, 200 transcripts, when this was written).
SEEDS = int(os.environ.get("MOTO_SPEEDUPS_SEEDS", "4"))


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Iterator[str]:
    with moto_as(request.param):
        yield request.param


@pytest.fixture
def fast() -> Iterator[str]:
    with moto_as("fast"):
        yield "fast"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return freeze_sqs_clock(monkeypatch)


def sqs() -> Any:
    return client("sqs")


def make_queue(name: str, dlq_url: str | None = None, max_receives: int = 2, **attrs: str) -> str:
    client = sqs()
    attributes = dict(attrs)
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    if dlq_url is not None:
        arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                "maxReceiveCount": max_receives,
            }
        )
    url: str = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def receive(url: str, count: int = 10, visibility: int | None = None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "QueueUrl": url,
        "MaxNumberOfMessages": count,
        "WaitTimeSeconds": 0,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }
    if visibility is not None:
        kwargs["VisibilityTimeout"] = visibility
    messages: list[dict[str, Any]] = sqs().receive_message(**kwargs).get("Messages", [])
    return messages


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["Body"] for m in messages]


def counts(url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed), as GetQueueAttributes reports them."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    got = sqs().get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    visible, hidden, delayed = (int(got[n]) for n in names)
    return visible, hidden, delayed


def send_fifo(url: str, body: str, group: str = "g", dedup: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = sqs().send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageGroupId=group,
        MessageDeduplicationId=dedup or body,
    )
    return response


# --- visibility --------------------------------------------------------------------------


def test_a_received_message_is_hidden_until_its_visibility_timeout_ends(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q", VisibilityTimeout="30")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    assert counts(url) == (1, 0, 0)

    first = receive(url)
    assert bodies(first) == ["a"]
    assert first[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert counts(url) == (0, 1, 0)
    clock.advance(29)
    assert receive(url) == []

    clock.advance(2)
    again = receive(url)
    assert bodies(again) == ["a"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again[0]["ReceiptHandle"] != first[0]["ReceiptHandle"]


def test_change_message_visibility_extends_ends_and_checks_its_handle(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q", VisibilityTimeout="10")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    handle = receive(url)[0]["ReceiptHandle"]

    clock.advance(5)
    sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=60)
    clock.advance(30)  # past the first timeout, inside the extension
    assert receive(url) == []
    assert counts(url) == (0, 1, 0)

    sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    clock.advance(0.01)
    assert counts(url) == (1, 0, 0)
    again = receive(url, visibility=5)
    assert bodies(again) == ["a"]

    sqs().delete_message(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"])
    with pytest.raises(ClientError) as error:
        sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=5)
    assert error.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"


def test_visibility_cannot_be_extended_past_twelve_hours(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    handle = receive(url)[0]["ReceiptHandle"]
    clock.advance(3600)
    with pytest.raises(ClientError) as error:
        sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200)
    assert error.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_a_receive_with_no_visibility_timeout_leaves_the_message_visible(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    assert bodies(receive(url, visibility=0)) == ["a"]
    clock.advance(0.01)
    assert bodies(receive(url, visibility=0)) == ["a"]
    assert counts(url) == (1, 0, 0)


# --- delays -----------------------------------------------------------------------------


def test_queue_and_message_delays(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q", DelaySeconds="20")
    sqs().send_message(QueueUrl=url, MessageBody="queue-delay")
    sqs().send_message(QueueUrl=url, MessageBody="own-delay", DelaySeconds=5)
    sqs().send_message(QueueUrl=url, MessageBody="no-delay", DelaySeconds=0)
    assert counts(url) == (1, 0, 2)
    assert bodies(receive(url, visibility=300)) == ["no-delay"]

    clock.advance(6)
    assert counts(url) == (1, 1, 1)
    assert bodies(receive(url, visibility=300)) == ["own-delay"]
    clock.advance(15)
    assert bodies(receive(url, visibility=300)) == ["queue-delay"]
    assert counts(url) == (0, 3, 0)


# --- receive counts and dead letters ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["standard", "fifo"])
def test_a_message_moves_to_the_dead_letter_queue_after_max_receive_count(
    flavour: str, clock: FakeClock, kind: str
) -> None:
    suffix = ".fifo" if kind == "fifo" else ""
    dlq = make_queue("dlq" + suffix)
    url = make_queue("q" + suffix, dlq_url=dlq, max_receives=2, VisibilityTimeout="10")
    if kind == "fifo":
        send_fifo(url, "a")
        send_fifo(url, "b")
    else:
        sqs().send_message(QueueUrl=url, MessageBody="a")
        sqs().send_message(QueueUrl=url, MessageBody="b")

    seen = []
    for _ in range(2):
        got = receive(url, count=1)
        seen.append((got[0]["Body"], got[0]["Attributes"]["ApproximateReceiveCount"]))
        clock.advance(11)
    assert seen == [("a", "1"), ("a", "2")]

    # The third receive moves "a" (received twice) to the dead-letter queue and moves on.
    got = receive(url, count=1)
    assert bodies(got) == ["b"]
    dead = receive(dlq)
    assert bodies(dead) == ["a"]
    assert dead[0]["Attributes"]["ApproximateReceiveCount"] == "3"
    assert counts(url) == (0, 1, 0)


# --- attributes ---------------------------------------------------------------------------------


def test_message_and_system_attributes(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q.fifo")
    attributes = {
        "Text": {"DataType": "String", "StringValue": "hello"},
        "Count": {"DataType": "Number", "StringValue": "42"},
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        "Custom.Tag": {"DataType": "String.custom", "StringValue": "x"},
    }
    sent = sqs().send_message(
        QueueUrl=url,
        MessageBody="a",
        MessageAttributes=attributes,
        MessageGroupId="g",
        MessageDeduplicationId="d",
    )
    got = receive(url)[0]
    assert got["MessageId"] == sent["MessageId"]
    assert got["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert got["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert got["MessageAttributes"] == attributes
    system = got["Attributes"]
    assert system["MessageGroupId"] == "g"
    assert system["MessageDeduplicationId"] == "d"
    assert system["SequenceNumber"] == sent["SequenceNumber"]
    assert system["SentTimestamp"] == str(int(clock.now * 1000))
    assert system["ApproximateFirstReceiveTimestamp"] == str(int(clock.now * 1000))
    assert {"SenderId", "ApproximateReceiveCount"} <= set(system)

    # Only the attributes asked for: by name, and by prefix.
    sqs().change_message_visibility(
        QueueUrl=url, ReceiptHandle=got["ReceiptHandle"], VisibilityTimeout=0
    )
    clock.advance(1)
    some = sqs().receive_message(
        QueueUrl=url,
        MessageAttributeNames=["Text", "Custom.*"],
        MessageSystemAttributeNames=["SentTimestamp"],
    )["Messages"][0]
    assert set(some["MessageAttributes"]) == {"Text", "Custom.Tag"}
    assert set(some["Attributes"]) == {"SentTimestamp"}
    # Filtering a copy: the message itself keeps every attribute.
    sqs().change_message_visibility(
        QueueUrl=url, ReceiptHandle=some["ReceiptHandle"], VisibilityTimeout=0
    )
    clock.advance(1)
    assert receive(url)[0]["MessageAttributes"] == attributes


# --- FIFO -----------------------------------------------------------------------------------------


def test_fifo_delivers_each_group_in_order_and_holds_a_group_with_a_message_in_flight(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q.fifo", VisibilityTimeout="30")
    for body, group in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("c1", "c")]:
        send_fifo(url, body, group)

    assert bodies(receive(url, count=1)) == ["a1"]
    # Group a has a message in flight: nothing more of it until a1 is deleted.
    assert bodies(receive(url, count=1)) == ["b1"]
    assert bodies(receive(url, count=10)) == ["c1"]
    assert receive(url) == []
    assert counts(url) == (2, 3, 0)


def test_fifo_receive_takes_several_messages_of_a_free_group_in_order(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q.fifo")
    for body, group in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"), ("b2", "b")]:
        send_fifo(url, body, group)
    assert bodies(receive(url, count=4)) == ["a1", "b1", "a2", "a3"]
    assert receive(url) == []


def test_fifo_delete_frees_the_group_and_an_ended_timeout_redelivers_first(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q.fifo", VisibilityTimeout="10")
    for body in ("m1", "m2", "m3"):
        send_fifo(url, body)
    first = receive(url, count=1)
    sqs().delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    second = receive(url, count=1)
    assert bodies(second) == ["m2"]
    assert receive(url) == []

    clock.advance(11)  # m2's timeout ends: it comes back before m3
    again = receive(url, count=10)
    assert bodies(again) == ["m2", "m3"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_fifo_message_hold_extension_keeps_its_group_blocked_and_a_zero_frees_it(
    flavour: str, clock: FakeClock
) -> None:
    """The worker's message hold (docs/design.md, "The message hold"):
    ChangeMessageVisibility on the one in-flight message of the job queue's single group."""
    url = make_queue("q.fifo", VisibilityTimeout="10")
    for body in ("m1", "m2"):
        send_fifo(url, body)
    [held] = receive(url, count=1)
    sqs().change_message_visibility(
        QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=60
    )
    clock.advance(30)  # past the queue's timeout, inside the hold: the group stays blocked
    assert receive(url) == []
    assert counts(url) == (1, 1, 0)
    sqs().change_message_visibility(
        QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0
    )
    clock.advance(0.001)  # moto: visible once now > visible_at (its clock is frozen here)
    again = receive(url, count=1)  # as after a failed claim's backoff: it comes back first
    assert bodies(again) == ["m1"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_fifo_deduplicates_within_five_minutes_of_the_first_send(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q.fifo")
    send_fifo(url, "first", dedup="same")
    clock.advance(299)
    send_fifo(url, "duplicate", dedup="same")  # accepted, not delivered
    assert counts(url) == (1, 0, 0)
    clock.advance(2)
    send_fifo(url, "later", dedup="same")  # the window is over
    assert bodies(receive(url, count=10)) == ["first", "later"]


def test_fifo_content_based_deduplication(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q.fifo", ContentBasedDeduplication="true")
    for _ in range(3):
        sqs().send_message(QueueUrl=url, MessageBody="same body", MessageGroupId="g")
    sqs().send_message(QueueUrl=url, MessageBody="other body", MessageGroupId="g")
    assert bodies(receive(url, count=10)) == ["same body", "other body"]


def test_fifo_deduplication_outlives_the_deleted_message(fast: str, clock: FakeClock) -> None:
    """SQS Developer Guide, "Amazon SQS FIFO queue key terms": "Amazon SQS continues
    tracking the deduplication ID even after the message has been received and deleted."
    (moto 5.2.5 forgets the id with its message: the speed-ups follow SQS.)"""
    url = make_queue("q.fifo")
    send_fifo(url, "first", dedup="same")
    sqs().delete_message(QueueUrl=url, ReceiptHandle=receive(url)[0]["ReceiptHandle"])
    clock.advance(60)
    send_fifo(url, "retry of the same send", dedup="same")
    assert receive(url) == []
    clock.advance(241)
    send_fifo(url, "a new send", dedup="same")
    assert bodies(receive(url)) == ["a new send"]


def test_fifo_deduplication_scope_message_group(fast: str, clock: FakeClock) -> None:
    """SQS Developer Guide, "High throughput for FIFO queues": with DeduplicationScope
    messageGroup, deduplication happens within each message group."""
    url = make_queue(
        "q.fifo", DeduplicationScope="messageGroup", FifoThroughputLimit="perMessageGroupId"
    )
    send_fifo(url, "in a", group="a", dedup="same")
    send_fifo(url, "in b", group="b", dedup="same")
    send_fifo(url, "again in a", group="a", dedup="same")
    assert sorted(bodies(receive(url, count=10))) == ["in a", "in b"]


# --- deleting, purging, retention ------------------------------------------------------------


def test_delete_twice_is_fine_and_an_unknown_handle_is_invalid(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    handle = receive(url)[0]["ReceiptHandle"]
    sqs().delete_message(QueueUrl=url, ReceiptHandle=handle)
    sqs().delete_message(QueueUrl=url, ReceiptHandle=handle)
    assert counts(url) == (0, 0, 0)
    with pytest.raises(ClientError) as error:
        sqs().delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert error.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"


def test_batches_send_delete_and_change_visibility(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q")
    sent = sqs().send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    )
    assert len(sent["Successful"]) == 10
    got = receive(url, count=10, visibility=30)
    assert bodies(got) == [f"m{i}" for i in range(10)]
    changed = sqs().change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "0", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0},
            {"Id": "x", "ReceiptHandle": "nope", "VisibilityTimeout": 0},
        ],
    )
    assert [s["Id"] for s in changed["Successful"]] == ["0"]
    assert [f["Id"] for f in changed["Failed"]] == ["x"]
    deleted = sqs().delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got[1:])
        ],
    )
    assert len(deleted["Successful"]) == 9
    clock.advance(0.01)
    assert bodies(receive(url)) == ["m0"]


def send_batch(url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    for index, entry in enumerate(entries):
        entry.setdefault("Id", str(index))
    response: dict[str, Any] = sqs().send_message_batch(QueueUrl=url, Entries=entries)
    return response


def fifo_entry(body: str, group: str, dedup: str | None = None) -> dict[str, Any]:
    return {"MessageBody": body, "MessageGroupId": group, "MessageDeduplicationId": dedup or body}


def test_fifo_batches_keep_each_groups_order_across_batches(flavour: str, clock: FakeClock) -> None:
    """SQS API Reference, "SendMessageBatch": in a FIFO queue the messages of a batch are
    enqueued in the order of its entries; each entry names its own message group."""
    url = make_queue("q.fifo")
    first = send_batch(url, [fifo_entry("a1", "a"), fifo_entry("b1", "b"), fifo_entry("a2", "a")])
    second = send_batch(url, [fifo_entry("b2", "b"), fifo_entry("a3", "a"), fifo_entry("b3", "b")])
    assert [s["Id"] for s in first["Successful"] + second["Successful"]] == ["0", "1", "2"] * 2
    sequence = [int(s["SequenceNumber"]) for s in first["Successful"] + second["Successful"]]
    assert len(set(sequence)) == 6
    got = receive(url, count=10)
    assert bodies(got) == ["a1", "b1", "a2", "b2", "a3", "b3"]
    assert [m["Attributes"]["MessageGroupId"] for m in got] == ["a", "b", "a", "b", "a", "b"]


def test_fifo_batches_deduplicate_within_five_minutes(flavour: str, clock: FakeClock) -> None:
    """A duplicate (within the batch, or of an earlier send in the last 5 minutes) is
    accepted, reported sent, and never delivered (SQS API Reference, "SendMessageBatch":
    MessageDeduplicationId)."""
    url = make_queue("q.fifo")
    sent = send_batch(url, [fifo_entry("first", "g", "d1"), fifo_entry("copy", "g", "d1")])
    assert len(sent["Successful"]) == 2 and not sent.get("Failed")
    clock.advance(299)
    send_batch(url, [fifo_entry("retry", "g", "d1"), fifo_entry("new", "g", "d2")])
    assert counts(url) == (2, 0, 0)
    clock.advance(2)
    send_batch(url, [fifo_entry("after the window", "g", "d1")])
    assert bodies(receive(url, count=10)) == ["first", "new", "after the window"]


def test_a_batch_reports_each_refused_entry_in_failed_and_sends_the_rest(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q")
    sent = send_batch(
        url,
        [
            {"MessageBody": "now"},
            {"MessageBody": "too late", "DelaySeconds": 901},
            {"MessageBody": "delayed", "DelaySeconds": 60},
        ],
    )
    assert [s["Id"] for s in sent["Successful"]] == ["0", "2"]
    [failed] = sent["Failed"]
    assert failed["Id"] == "1" and failed["SenderFault"]
    assert failed["Code"] == "InvalidParameterValue"
    assert counts(url) == (1, 0, 1)
    assert bodies(receive(url, count=10, visibility=600)) == ["now"]
    clock.advance(61)
    assert bodies(receive(url, count=10)) == ["delayed"]


def test_a_batch_converts_each_queue_attribute_name_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto reads the whole ``Queue.attributes`` five times per entry of a FIFO batch, and
    each read turns every attribute's name into a Python name character by character
    (1 to 2 ms an entry); the speed-ups remember each name's conversion."""
    converted: list[str] = []
    original = sqs_models.camelcase_to_underscores

    def counting(name: str) -> str:
        converted.append(name)
        return original(name)

    monkeypatch.setattr(sqs_models, "camelcase_to_underscores", counting)
    with moto_as("fast"):
        url = make_queue("q.fifo")
        send_batch(url, [fifo_entry(f"m{n}", "g") for n in range(10)])
        assert converted and len(converted) == len(set(converted))
        before = len(converted)
        send_batch(url, [fifo_entry(f"n{n}", "g") for n in range(10)])
        assert len(converted) == before


def test_purge_empties_the_queue(flavour: str, clock: FakeClock) -> None:
    url = make_queue("q")
    for body in ("a", "b", "c"):
        sqs().send_message(QueueUrl=url, MessageBody=body)
    receive(url, count=1)
    sqs().purge_queue(QueueUrl=url)
    assert counts(url) == (0, 0, 0)
    assert receive(url) == []
    sqs().send_message(QueueUrl=url, MessageBody="after")
    assert bodies(receive(url)) == ["after"]


def test_a_message_past_the_retention_period_is_never_delivered(
    flavour: str, clock: FakeClock
) -> None:
    url = make_queue("q", MessageRetentionPeriod="60")
    sqs().send_message(QueueUrl=url, MessageBody="old")
    clock.advance(61)
    sqs().send_message(QueueUrl=url, MessageBody="new")
    # moto ends the first receive at the expired message; the speed-ups drop it (as SQS
    # deletes it): either way it is never delivered.
    delivered = bodies(receive(url, count=10)) + bodies(receive(url, count=10))
    assert delivered == ["new"]


# --- long polls (moto's real clock) ------------------------------------------------------------


def _long_poll(url: str, wait: int, out: list[Any]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        got = (
            sqs()
            .receive_message(
                QueueUrl=url, WaitTimeSeconds=wait, MessageSystemAttributeNames=["All"]
            )
            .get("Messages", [])
        )
        out.append((got, time.monotonic() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_long_poll_returns_when_a_message_is_sent(flavour: str) -> None:
    url = make_queue("q")
    out: list[Any] = []
    thread = _long_poll(url, wait=20, out=out)
    sqs().send_message(QueueUrl=url, MessageBody="a")
    thread.join(30)
    got, elapsed = out[0]
    assert bodies(got) == ["a"]
    assert elapsed < 20  # woken by the send, not by the end of its wait


def test_a_long_poll_returns_when_a_visibility_timeout_ends(flavour: str) -> None:
    url = make_queue("q", VisibilityTimeout="1")
    sqs().send_message(QueueUrl=url, MessageBody="a")
    assert bodies(sqs().receive_message(QueueUrl=url).get("Messages", [])) == ["a"]
    out: list[Any] = []
    _long_poll(url, wait=20, out=out).join(30)
    got, elapsed = out[0]
    assert bodies(got) == ["a"]
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert elapsed < 20


def test_a_long_poll_with_nothing_to_receive_waits_its_time_then_returns_nothing(
    flavour: str,
) -> None:
    url = make_queue("q")
    out: list[Any] = []
    _long_poll(url, wait=1, out=out).join(30)
    got, elapsed = out[0]
    assert got == []
    assert elapsed >= 1


def _queue_model(url: str) -> Any:
    from moto.sqs.models import sqs_backends

    return sqs_backends["123456789012"][REGION].queues[url.rsplit("/", 1)[-1]]


def test_a_fifo_group_in_flight_blocks_receives_but_not_moto_s_long_poll_wake_up(
    flavour: str,
) -> None:
    """Why stock moto spins: its long poll sleeps only while ``Queue.messages`` (every
    visible message) is empty, so a visible message behind an in-flight one of its FIFO
    group wakes it again at once, with nothing to receive; the local event source's extra
    pollers in aws mode sit in that loop while the worker runs a job."""
    url = make_queue("q.fifo", VisibilityTimeout="60")
    send_fifo(url, "a")
    send_fifo(url, "b")
    assert bodies(receive(url, count=1)) == ["a"]
    assert receive(url, count=10) == []  # b waits behind a, on both
    if flavour == "stock":
        assert _queue_model(url).messages  # moto's wake-up condition holds: it spins


def test_a_fifo_long_poll_sleeps_while_its_only_group_is_in_flight_and_wakes_on_delete(
    fast: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fix: the long poll waits once, for its whole time (or until the in-flight
    message's visibility ends), and is woken by the delete that frees the group."""
    url = make_queue("q.fifo", VisibilityTimeout="60")
    send_fifo(url, "a")
    send_fifo(url, "b")
    [held] = receive(url, count=1)
    lock = _queue_model(url)._messages_lock
    real_wait = lock.wait
    entered: list[float] = []
    woken: list[bool] = []

    def recording_wait(timeout: float | None = None) -> bool:
        entered.append(timeout if timeout is not None else float("inf"))
        notified: bool = real_wait(timeout)
        woken.append(notified)
        return notified

    monkeypatch.setattr(lock, "wait", recording_wait)
    out: list[Any] = []
    thread = _long_poll(url, wait=20, out=out)
    deadline = time.monotonic() + 30
    while not entered and time.monotonic() < deadline:
        thread.join(0.01)  # until the poll is asleep (it holds the lock until it waits)
    assert entered, "the long poll never waited"
    sqs().delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"])
    thread.join(30)
    got, _ = out[0]
    assert bodies(got) == ["b"]
    # One sleep, for (about) the poll's whole 20 s, not a slice of it; ended by a notify.
    assert len(entered) == 1 and entered[0] > 10
    assert woken == [True]


def test_a_fifo_long_poll_wakes_when_the_held_message_is_made_visible(fast: str) -> None:
    url = make_queue("q.fifo", VisibilityTimeout="60")
    send_fifo(url, "a")
    [held] = receive(url, count=1)
    out: list[Any] = []
    thread = _long_poll(url, wait=20, out=out)
    lock = _queue_model(url)._messages_lock
    deadline = time.monotonic() + 30
    while not lock._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        thread.join(0.01)
    sqs().change_message_visibility(
        QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0
    )
    thread.join(30)
    got, elapsed = out[0]
    assert bodies(got) == ["a"] and got[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert elapsed < 20  # woken by the change, not by the end of its wait


def test_concurrent_receivers_never_hold_the_same_message_or_group(fast: str) -> None:
    """Receives run in server threads; the index changes under the queue's lock. Rounds
    of four concurrent receivers, no deletes until all come back empty: each round must
    hand out exactly the head of each group, once."""
    url = make_queue("q.fifo", VisibilityTimeout="600")
    groups, per_group = 5, 8
    for n in range(groups * per_group):
        send_fifo(url, f"m{n}", group=f"g{n % groups}")

    def worker(delivered: list[dict[str, Any]], lock: threading.Lock) -> None:
        client = sqs()
        while got := client.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get(
            "Messages", []
        ):
            with lock:
                delivered.extend(got)

    for round_ in range(per_group):
        delivered: list[dict[str, Any]] = []
        lock = threading.Lock()
        threads = [
            threading.Thread(target=worker, args=(delivered, lock), daemon=True) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        expected = [f"m{round_ * groups + g}" for g in range(groups)]
        assert sorted(bodies(delivered)) == sorted(expected)
        for message in delivered:
            sqs().delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert counts(url) == (0, 0, 0)


# --- whole transcripts, stock against fast ----------------------------------------------------


def _transcript(seed: int, fifo: bool, clock: FakeClock) -> list[Any]:
    """A random mix of sends, receives, deletes, visibility changes, dead-lettering and
    the passing of time, and everything the queues answered (ids left out: they differ).

    FIFO receives take one message at a time: with several, moto blocks a group it has
    just taken from once it meets an expired in-flight message later in the same pass, a
    quirk the speed-ups do not copy (both orders are FIFO; the project's worker receives
    one at a time).
    """
    rng = random.Random(seed)
    suffix = ".fifo" if fifo else ""
    dlq = make_queue("dlq" + suffix)
    url = make_queue("q" + suffix, dlq_url=dlq, max_receives=3, VisibilityTimeout="20")
    transcript: list[Any] = []
    held: dict[str, tuple[str, float]] = {}  # body -> (latest handle, in flight until)
    sent = 0

    def entry(body: str) -> dict[str, Any]:
        item: dict[str, Any] = {"MessageBody": body}
        if fifo:
            item["MessageGroupId"] = f"g{rng.randrange(3)}"
            item["MessageDeduplicationId"] = body
        else:
            item["DelaySeconds"] = rng.choice([0, 0, 0, 3])
        if rng.random() < 0.3:
            item["MessageAttributes"] = {"n": {"DataType": "Number", "StringValue": body[1:]}}
        return item

    operations = ["send", "batch", "receive", "delete", "change", "time", "counts", "dlq"]
    for _ in range(300):
        op = rng.choices(operations, weights=[6, 2, 8, 4, 3, 4, 2, 1])[0]
        if op in ("send", "batch"):
            entries = [
                entry(f"m{sent + i}") for i in range(1 if op == "send" else rng.randint(1, 10))
            ]
            sent += len(entries)
            if op == "send":
                sqs().send_message(QueueUrl=url, **entries[0])
            else:
                sqs().send_message_batch(
                    QueueUrl=url, Entries=[{"Id": str(i), **e} for i, e in enumerate(entries)]
                )
            transcript.append((op, [(e["MessageBody"], e.get("MessageGroupId")) for e in entries]))
        elif op == "receive":
            count = 1 if fifo else rng.randint(1, 10)
            visibility = rng.choice([None, 0, 5, 30])
            got = receive(url, count=count, visibility=visibility)
            until = clock.now + (20 if visibility is None else visibility)
            for m in got:
                held[m["Body"]] = (m["ReceiptHandle"], until)
            transcript.append(
                (op, [(m["Body"], m["Attributes"]["ApproximateReceiveCount"],
                       m.get("MessageAttributes")) for m in got])
            )  # fmt: skip
        elif op == "delete" and held:
            body = rng.choice(sorted(held))
            handle, _ = held.pop(body)
            try:
                sqs().delete_message(QueueUrl=url, ReceiptHandle=handle)
                transcript.append((op, body, "ok"))
            except ClientError as error:
                transcript.append((op, body, error.response["Error"]["Code"]))
        elif op == "change":
            # Only messages surely in flight: a stale handle of a visible message is a
            # corner where moto and the speed-ups differ (see the module's docstring).
            in_flight = sorted(b for b, (_, until) in held.items() if until > clock.now)
            if in_flight:
                body = rng.choice(in_flight)
                timeout = rng.choice([0, 10, 60])
                sqs().change_message_visibility(
                    QueueUrl=url, ReceiptHandle=held[body][0], VisibilityTimeout=timeout
                )
                held[body] = (held[body][0], clock.now + timeout)
                transcript.append((op, body, timeout))
        elif op == "time":
            clock.advance(rng.choice([0.5, 1, 4, 21, 60]))
        elif op == "counts":
            transcript.append((op, counts(url), counts(dlq)))
        elif op == "dlq":
            got = receive(dlq, count=1 if fifo else 10, visibility=600)
            transcript.append((op, bodies(got)))
    transcript.append(("end", counts(url), counts(dlq)))
    return transcript


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_operations_get_the_same_answers_from_stock_and_fast_moto(
    monkeypatch: pytest.MonkeyPatch, seed: int, fifo: bool
) -> None:
    transcripts = {}
    for flavour in FLAVOURS:
        clock = freeze_sqs_clock(monkeypatch)
        with moto_as(flavour):
            transcripts[flavour] = _transcript(seed, fifo, clock)
    stock, fast = transcripts["stock"], transcripts["fast"]
    assert len(stock) > 100
    for i, (expected, got) in enumerate(zip(stock, fast, strict=True)):
        assert got == expected, f"step {i}"
