"""Adapters: the SQS queues.

- ``JobQueue``: the FIFO job queue. Each lane is one message group (``message_group``;
  one lane by default), so the worker's event source mapping has at most one batch in
  flight per lane and delivers each lane in send order: with reserved concurrency equal to
  the lanes, no batch is received that the worker cannot run, so none is throttled, and a
  receive count rises only on a real failure. (Lambda Developer Guide, "Configuring
  scaling behavior for SQS event source mappings": for FIFO queues, concurrent
  invocations are capped at the number of message group IDs, and Lambda retries a
  failed message before it receives more of the same group.) A lane that stalls (a
  message hidden after a failure) holds only its own jobs; the other lanes go on.
- ``DelayQueue``: a standard queue that holds a message for a delay (FIFO queues have no
  per-message DelaySeconds), after which ``forward_delayed`` puts it on the job queue.

A job message is dead-lettered only after MAX_RECEIVE_COUNT receives, derived from the
worker's claim backoff (``claim_backoff``) so that an outage of up to
OUTAGE_TOLERANCE_SECONDS, during which every claim fails, dead-letters nothing: the head
job's message keeps coming back, at most a backoff cap apart, and keeps its place, so the
jobs behind it wait out the outage plus at most the cap (tests/chalicelib/test_lane_bounds.py).

Every send carries the current X-Ray trace header, when there is one, in the
``AWSTraceHeader`` system attribute (see chalicelib.observability), so one trace follows a
job from its submission through every message of its life.

Only these adapters know SQS; they turn botocore errors into StoreUnavailable (StoreRefused
when SQS refused the request itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import Settings
from chalicelib.errors import PoisonMessage, StoreRefused, StoreUnavailable
from chalicelib.jobs import parse_message
from chalicelib.observability import TRACE_ATTRIBUTE, trace_header

# Error codes of throttling (botocore/retries/standard.py): a 4xx answer that may pass.
_THROTTLED = frozenset(["RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled"])
# The message group of lane 0 (the one lane of a stage with one): lane i > 0's is
# "jobs-<i>", so a stage going from 1 lane to more keeps its queued messages in order.
MESSAGE_GROUP = "jobs"
# SendMessageBatch's limit on entries a call (Amazon SQS Developer Guide, "Amazon SQS batch
# actions"; a job message is a few hundred bytes, so ten stay far below a call's 1 MiB).
SEND_BATCH_LIMIT = 10
# SQS's longest per-message delay.
MAX_DELAY_SECONDS = 900
# An outage of DynamoDB (or SQS) this long dead-letters no job message: the claim backoff
# below keeps the head job's message coming back, in order, until the outage ends.
OUTAGE_TOLERANCE_SECONDS = 900
# Receives of a job message that may be used before an outage starts, beyond those the
# outage's backoffs need: each run that dies without settling its message (a crash, out of
# memory, a timeout, a stopped local worker) costs one receive, and a job is taken over at
# most max_attempts (3 by default) times before it is failed, so three is enough.
SPARE_RECEIVES = 3


def message_group(body: str) -> str:
    """The message group a job message goes to: its lane's (``lane_group``), read from
    the message (chalicelib.jobs.to_message). Every send of a job message asks this, so
    the group is chosen in one place. A body that is no job message goes to lane 0's
    group, where the worker drops it as poison."""
    try:
        return lane_group(parse_message(body).lane)
    except PoisonMessage:
        return MESSAGE_GROUP


def lane_group(lane: int) -> str:
    """The message group of ``lane``: MESSAGE_GROUP for lane 0, as before lanes."""
    return MESSAGE_GROUP if lane == 0 else f"{MESSAGE_GROUP}-{lane}"


def claim_backoff(receive_count: int, cap_seconds: int) -> int:
    """How long a message whose handling failed before its run started stays hidden before
    it comes back: 2^receive count seconds (2, 4, 8, ...), at most ``cap_seconds``
    (Settings.claim_backoff_cap_seconds). The worker's backoff and MAX_RECEIVE_COUNT's
    derivation both use this curve."""
    return int(min(2 ** min(receive_count, 30), cap_seconds))


def _receives_to_outlast(seconds: int, cap_seconds: int) -> int:
    """The fewest receives whose backoffs add up to at least ``seconds``."""
    receives = total = 0
    while total < seconds:
        receives += 1
        total += claim_backoff(receives, cap_seconds)
    return receives


# Receives of a job message before SQS moves it to the dead-letter queue (the job queue's
# maxReceiveCount), rendered into the template's MaxReceiveCount by infra/stack.py.
# Derived from the claim backoff at its default cap: the backoffs of MAX_RECEIVE_COUNT - 1
# receives add up to OUTAGE_TOLERANCE_SECONDS plus SPARE_RECEIVES, so the receive after
# them (the last one SQS allows) comes after the outage. 19 + 3 + 1 = 23 at a 60 s cap:
# 19 backoffs (2 + 4 + 8 + 16 + 32 + 14 x 60 = 902 s) outlast 15 minutes.
MAX_RECEIVE_COUNT = (
    _receives_to_outlast(OUTAGE_TOLERANCE_SECONDS, Settings.claim_backoff_cap_seconds)
    + SPARE_RECEIVES
    + 1
)


def tolerated_outage_seconds(cap_seconds: int) -> int:
    """The longest outage of DynamoDB during which a job message, claimed in vain at every
    receive, is still not dead-lettered with the claim backoff capped at ``cap_seconds``
    (SPARE_RECEIVES kept aside): OUTAGE_TOLERANCE_SECONDS or a little more at the default
    cap; a smaller cap shrinks it about proportionally, to about 19 x the cap (a 6 s cap:
    108 s)."""
    receives = MAX_RECEIVE_COUNT - 1 - SPARE_RECEIVES
    return sum(claim_backoff(k, cap_seconds) for k in range(1, receives + 1))


class _Queue:
    def __init__(self, client: Any, queue_name: str, url: str | None = None) -> None:
        self._client = client
        self.queue_name = queue_name
        self._url = url

    @property
    def url(self) -> str:
        """The queue's URL, looked up once per process (one GetQueueUrl per cold start)
        unless given."""
        if self._url is None:
            response = self._call("get_queue_url", QueueName=self.queue_name)
            self._url = response["QueueUrl"]
        return self._url

    def _send(self, **kwargs: Any) -> str:
        header = trace_header()
        if header is not None:
            # A system attribute, not a message attribute: X-Ray reads only this one, and
            # it counts towards neither the message's size nor its attribute quota.
            kwargs["MessageSystemAttributes"] = {
                TRACE_ATTRIBUTE: {"DataType": "String", "StringValue": header}
            }
        response = self._call("send_message", QueueUrl=self.url, **kwargs)
        return str(response["MessageId"])

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as error:
            if _refused(error):
                raise StoreRefused(f"SQS {operation} refused: {error}") from error
            raise StoreUnavailable(f"SQS {operation} failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"SQS {operation} failed: {error}") from error


def _refused(error: ClientError) -> bool:
    """Whether SQS answered with an error of the request itself (a 4xx, not throttling),
    which repeating the request will not change."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    code = error.response.get("Error", {}).get("Code", "")
    return 400 <= int(status) < 500 and status != 429 and code not in _THROTTLED


class Delivery(NamedTuple):
    """What the event source says about one received message, beside its body."""

    receipt_handle: str
    # How many times SQS has delivered it (1 on the first delivery).
    receive_count: int
    # When SQS accepted it (epoch milliseconds, SQS's clock).
    sent_at_ms: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Delivery:
        """From one record of Lambda's SQS event (its JSON form)."""
        attributes = record["attributes"]
        return cls(
            receipt_handle=record["receiptHandle"],
            receive_count=int(attributes["ApproximateReceiveCount"]),
            sent_at_ms=int(attributes["SentTimestamp"]),
        )


class QueueCounts(NamedTuple):
    """The queue's approximate message counts (eventually consistent, as SQS reports them)."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def empty(self) -> bool:
        return self.visible + self.in_flight + self.delayed == 0


class JobQueue(_Queue):
    """The FIFO job queue."""

    def send(self, body: str, deduplication_id: str) -> str:
        """Put one message at the tail of its lane's message group (``message_group``).

        ``deduplication_id`` names the logical send: SQS drops a second message with the same
        id within its five-minute deduplication window, so an SDK retry of this call is
        harmless, while a new logical send (a continuation, a re-drive) needs a new id.
        """
        return self._send(
            MessageBody=body,
            MessageGroupId=message_group(body),
            MessageDeduplicationId=deduplication_id,
        )

    def send_batch(self, messages: Sequence[tuple[str, str]]) -> list[str | None]:
        """Put ``messages`` (body, deduplication id) at the tail of their message groups,
        in order, SEND_BATCH_LIMIT a SendMessageBatch call; one entry per message: None if
        it was sent, else why not.

        The calls are made one after the other, so messages of one group keep the order
        given (in a FIFO queue, the messages of one SendMessageBatch call are enqueued
        in the order of its entries: Amazon SQS API Reference, "SendMessageBatch"). SQS
        answers a call with a result per entry, so one entry it refused does not stop the
        others. A call
        that fails whole (StoreUnavailable: SQS unavailable) sends no further call: that
        call's entries and the rest are reported unsent. Each message's deduplication id
        makes an SDK retry of a call harmless, as for ``send``.
        """
        outcomes: list[str | None] = []
        header = trace_header()
        for start in range(0, len(messages), SEND_BATCH_LIMIT):
            chunk = messages[start : start + SEND_BATCH_LIMIT]
            entries = []
            for index, (body, deduplication_id) in enumerate(chunk):
                entry: dict[str, Any] = {
                    "Id": str(index),
                    "MessageBody": body,
                    "MessageGroupId": message_group(body),
                    "MessageDeduplicationId": deduplication_id,
                }
                if header is not None:  # as in _send
                    entry["MessageSystemAttributes"] = {
                        TRACE_ATTRIBUTE: {"DataType": "String", "StringValue": header}
                    }
                entries.append(entry)
            try:
                response = self._call("send_message_batch", QueueUrl=self.url, Entries=entries)
            except StoreUnavailable as error:
                return outcomes + [str(error)] * (len(messages) - start)
            failed = {
                failure["Id"]: f"SQS refused the message: {failure.get('Code')}: "
                f"{failure.get('Message', '')}"
                for failure in response.get("Failed", [])
            }
            outcomes.extend(failed.get(str(index)) for index in range(len(chunk)))
        return outcomes

    def hold(self, receipt_handle: str, seconds: int) -> None:
        """Keep a received message hidden for ``seconds`` from now (ChangeMessageVisibility).

        Only the function's own code can do this: Lambda's event source never extends a
        message's visibility. StoreUnavailable if SQS refuses (e.g. a stale handle).
        """
        self._call(
            "change_message_visibility",
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=seconds,
        )

    def delete(self, receipt_handle: str) -> None:
        """Delete a received message (DeleteMessage), before the event source would: the
        run watchdog's way to let the next message of the group through at once.
        StoreUnavailable if SQS refuses."""
        self._call("delete_message", QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def counts(self) -> QueueCounts:
        """Approximately how many messages are visible, in flight and delayed."""
        attributes = self._call(
            "get_queue_attributes",
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )


def delay_until(run_at_ms: int, now_ms: int) -> int:
    """The DelaySeconds that makes a message visible at ``run_at_ms`` or up to a second
    before it (whole seconds: SQS's unit), at most MAX_DELAY_SECONDS: a message of a job
    due later comes back early, and its forwarder waits out the rest (Worker.forward)."""
    return max(0, min((run_at_ms - now_ms) // 1000, MAX_DELAY_SECONDS))


class DelayQueue(_Queue):
    """The standard queue in which a retry waits out its backoff."""

    def send(self, body: str, delay_seconds: int) -> str:
        """Put one message on the queue, visible after ``delay_seconds`` (at most 900)."""
        return self._send(MessageBody=body, DelaySeconds=min(delay_seconds, MAX_DELAY_SECONDS))
