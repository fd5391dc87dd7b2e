"""X-Ray trace propagation: every SendMessage of a job's life carries a trace header in the
AWSTraceHeader system attribute when one is known, and none when none is.

Through the real handlers against moto, which stores the attribute and returns it on
ReceiveMessage, as SQS does; the events are built from received messages by the local
event source's own builder, so the header reaches the handlers as Lambda hands it over."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, kinds
from chalicelib.jobs import Job, epoch_ms, parse_message, to_message, utc_now
from chalicelib.kinds import Context, heavy_load
from chalicelib.observability import TRACE_ATTRIBUTE, TRACE_HEADER_VARIABLE
from chalicelib.queue import MESSAGE_GROUP
from infra.event_source import sqs_event
from tests.fake_kinds import kind_running

Receive = Callable[..., list[dict[str, Any]]]

# Two headers in X-Ray's format: the job's trace (from the API), and the worker's own.
JOB_TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
OWN_TRACE = "Root=1-6759e988-0d862e3fe1be46a994272794;Parent=63995c3f42cd8ad9;Sampled=1"


@pytest.fixture(autouse=True)
def _no_invocation_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACE_HEADER_VARIABLE, raising=False)


def header_of(message: dict[str, Any]) -> str | None:
    value = message.get("Attributes", {}).get(TRACE_ATTRIBUTE)
    return None if value is None else str(value)


def put(queue_url: str, body: str, header: str | None, fifo: bool = True) -> None:
    """Send ``body`` as a traced producer would (or an untraced one, with no header)."""
    kwargs: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": body}
    if fifo:
        kwargs.update(MessageGroupId=MESSAGE_GROUP, MessageDeduplicationId=uuid.uuid4().hex)
    if header is not None:
        kwargs["MessageSystemAttributes"] = {
            TRACE_ATTRIBUTE: {"DataType": "String", "StringValue": header}
        }
    boto3.client("sqs").send_message(**kwargs)


def delivered(receive: Receive, queue_url: str, queue_arn: str) -> dict[str, Any]:
    """Lambda's event for the one message waiting on the queue, acknowledged (deleted) as
    the event source does after a successful invocation, so the FIFO group moves on."""
    messages = receive(queue_url)
    assert len(messages) == 1
    for message in messages:
        boto3.client("sqs").delete_message(
            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
    return sqs_event(messages, queue_arn, "us-east-1")


def _broken(input: Any, ctx: Context) -> int:
    raise ValueError("counting went wrong")


broken = kind_running(_broken)


@pytest.mark.parametrize("header", [JOB_TRACE, None])
def test_a_submission_carries_the_api_invocations_trace_header(
    client: Client, receive: Receive, monkeypatch: pytest.MonkeyPatch, header: str | None
) -> None:
    if header is not None:
        monkeypatch.setenv(TRACE_HEADER_VARIABLE, header)

    response = client.http.post(
        "/heavy", headers={"Content-Type": "application/json"}, body='{"n": 10}'
    )

    assert response.status_code == 202
    (message,) = receive()
    assert parse_message(message["Body"]).job_id == response.json_body["job_id"]
    assert header_of(message) == header


@pytest.mark.parametrize("header", [JOB_TRACE, None])
def test_a_retry_and_its_forward_stay_on_the_trace_the_job_came_with(
    client: Client,
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    header: str | None,
) -> None:
    monkeypatch.setenv("JOBS_RETRY_BASE_SECONDS", "0")
    connections.reset()
    monkeypatch.setitem(kinds.KINDS, "explode", broken)
    job = make_job(n=10, kind="explode")
    put(aws["QueueUrl"], to_message(job), header)

    client.lambda_.invoke("process_job", delivered(receive, aws["QueueUrl"], aws["QueueArn"]))
    retry = delivered(receive, aws["DelayQueueUrl"], aws["DelayQueueArn"])
    assert retry["Records"][0]["attributes"].get(TRACE_ATTRIBUTE) == header
    client.lambda_.invoke("forward_delayed", retry)

    (forwarded,) = receive()
    assert parse_message(forwarded["Body"]).job_id == job.job_id
    assert header_of(forwarded) == header


@pytest.mark.parametrize(
    ("received", "own", "expected"),
    [
        (JOB_TRACE, OWN_TRACE, JOB_TRACE),  # the job's trace wins over the invocation's
        (None, OWN_TRACE, OWN_TRACE),  # none came with the message: the invocation's
        (None, None, None),  # tracing off: no attribute at all
    ],
)
def test_a_continuation_carries_the_header_its_message_came_with(
    client: Client,
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    received: str | None,
    own: str | None,
    expected: str | None,
) -> None:
    # A margin longer than any Lambda timeout (900 s at most): the run ends at its first
    # checkpoint, which then continues in a new invocation.
    monkeypatch.setenv("JOBS_TIMEOUT_MARGIN_SECONDS", "1000")
    connections.reset()
    monkeypatch.setattr(heavy_load, "CHUNK", 1000)
    job = make_job(n=10_000)
    put(aws["QueueUrl"], to_message(job), received)
    event = delivered(receive, aws["QueueUrl"], aws["QueueArn"])
    if own is not None:
        monkeypatch.setenv(TRACE_HEADER_VARIABLE, own)

    client.lambda_.invoke("process_job", event)

    (continuation,) = receive()
    assert parse_message(continuation["Body"]).resume is True
    assert header_of(continuation) == expected


@pytest.mark.parametrize("header", [JOB_TRACE, None])
def test_a_dead_letter_redrive_carries_the_dead_letters_header(
    client: Client,
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    header: str | None,
) -> None:
    job = make_job(n=10)  # never started: the DLQ consumer sends it again
    put(aws["DeadLetterQueueUrl"], to_message(job), header)
    event = delivered(receive, aws["DeadLetterQueueUrl"], aws["DeadLetterQueueArn"])

    client.lambda_.invoke("process_dead_letters", event)

    (redriven,) = receive()
    assert parse_message(redriven["Body"]).job_id == job.job_id
    assert header_of(redriven) == header


@pytest.mark.parametrize("header", [OWN_TRACE, None])
def test_a_sweep_redrive_carries_the_sweeps_own_header(
    make_job: Callable[..., Job],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
    header: str | None,
) -> None:
    """A lost message's header is gone with it: the re-drive is traced from the sweep."""
    settings = connections.worker().settings
    lost = make_job(
        n=10, pending_at=epoch_ms(utc_now()) - (settings.lost_after_seconds + 60) * 1000
    )
    if header is not None:
        monkeypatch.setenv(TRACE_HEADER_VARIABLE, header)

    assert connections.worker().recover_stalled() == [lost.job_id]

    (message,) = receive()
    assert header_of(message) == header


def test_a_header_received_is_not_kept_after_its_record(
    client: Client,
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
) -> None:
    """The received header is bound to the record's handling only: a later send in the
    same process (here the sweep's) does not inherit it."""
    settings = connections.worker().settings
    job = make_job(n=10)
    put(aws["DeadLetterQueueUrl"], to_message(job), JOB_TRACE)
    client.lambda_.invoke(
        "process_dead_letters",
        delivered(receive, aws["DeadLetterQueueUrl"], aws["DeadLetterQueueArn"]),
    )
    delivered(receive, aws["QueueUrl"], aws["QueueArn"])  # its re-drive, traced, taken off
    lost = make_job(
        n=10, pending_at=epoch_ms(utc_now()) - (settings.lost_after_seconds + 60) * 1000
    )

    assert lost.job_id in connections.worker().recover_stalled()

    assert all(header_of(m) is None for m in receive())
