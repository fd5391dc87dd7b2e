"""Adapters: the SQS queues.

- ``JobQueue``: the FIFO job queue. Every message shares one message group, so the worker's
  event source mapping has one batch in flight at a time and delivers in send order: no
  batch is received that reserved concurrency 1 cannot run, so none is throttled, and a
  receive count rises only on a real failure. (Lambda Developer Guide, "Configuring
  scaling behavior for SQS event source mappings": for FIFO queues, concurrent
  invocations are capped at the number of message group IDs, and Lambda retries a
  failed message before it receives more of the same group.)
- ``DelayQueue``: a standard queue that holds a message for a delay (FIFO queues have no
  per-message DelaySeconds), after which ``forward_delayed`` puts it on the job queue.

Every send carries the current X-Ray trace header, when there is one, in the
``AWSTraceHeader`` system attribute (see chalicelib.observability), so one trace follows a
job from its submission through every message of its life.

Only these adapters know SQS; they turn botocore errors into StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.observability import TRACE_ATTRIBUTE, trace_header

# The one message group of the job queue.
MESSAGE_GROUP = "jobs"
# SQS's longest per-message delay.
MAX_DELAY_SECONDS = 900
# Receives of a job message before SQS moves it to the dead-letter queue (the job queue's
# maxReceiveCount): declared here, next to the worker's claim backoff that it must outlast,
# and rendered into the template's MaxReceiveCount by infra/stack.py.
MAX_RECEIVE_COUNT = 5


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
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"SQS {operation} failed: {error}") from error


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
        """Put one message at the tail of the message group.

        ``deduplication_id`` names the logical send: SQS drops a second message with the same
        id within its five-minute deduplication window, so an SDK retry of this call is
        harmless, while a new logical send (a continuation, a re-drive) needs a new id.
        """
        return self._send(
            MessageBody=body,
            MessageGroupId=MESSAGE_GROUP,
            MessageDeduplicationId=deduplication_id,
        )

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


class DelayQueue(_Queue):
    """The standard queue in which a retry waits out its backoff."""

    def send(self, body: str, delay_seconds: int) -> str:
        """Put one message on the queue, visible after ``delay_seconds`` (at most 900)."""
        return self._send(MessageBody=body, DelaySeconds=min(delay_seconds, MAX_DELAY_SECONDS))
