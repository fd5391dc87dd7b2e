"""Delivering job events to webhook endpoints, at least once, signed as Standard Webhooks
specifies (webhook-id, webhook-timestamp, webhook-signature; the ``standardwebhooks``
package signs).

Two kinds of message travel on the webhooks queue:

- an **event**, as the stage's EventBridge rule puts it there (``detail-type`` one of
  chalicelib.events.EVENT_TYPES, ``detail`` the job's representation with its
  ``client`` and ``event_id``): ``fan_out`` turns it into one delivery per endpoint of the
  event's client that asks for its type, so one endpoint never waits for another;
- a **delivery** (``Delivery``): one event for one endpoint, its attempt number and when
  it is due. ``deliver`` makes the attempt and, when it fails, sends the next attempt
  back to the queue, due after ``RETRY_DELAYS[attempt - 1]``. SQS delays a message by 15
  minutes at most (Amazon SQS Developer Guide, "Amazon SQS delay queues"), so a longer
  wait is several hops: a delivery that arrives before it is due is sent back with the
  remaining delay, capped at 15 minutes, and nothing else is done. The attempts span
  ``sum(RETRY_DELAYS)`` (more than 24 hours), far inside SQS's 4-day default retention
  of each hop's message.

The function sends to the queue it consumes, hop after hop, for more than a day: an
SQS -> Lambda -> SQS loop that Lambda's recursive loop detection would stop; the deploy
allows recursion for every function that sends to its own queue (infra/deploy, derived
from the policy's SendMessage grant).

Every attempt of one event carries the same webhook-id (the event's id, the table
stream's eventID), so a receiver drops duplicates. A delivery whose endpoint was deleted
is dropped. After the last attempt the event is dropped for that endpoint and a warning
logged; ``GET /webhooks/{id}/deliveries`` shows the recent attempts.

Failure costs: a slow endpoint holds one delivery function invocation for at most
``REQUEST_TIMEOUT`` per attempt (the whole request, however it trickles); the function
has reserved concurrency of its own, so no job waits for it, and another endpoint only
when such attempts hold every instance at once. When SQS or
DynamoDB fails, the handler raises and the message comes back after its visibility
timeout (at least once: a receiver may see an attempt twice, with the same webhook-id).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from standardwebhooks import Webhook

from chalicelib.events import EVENT_TYPES
from chalicelib.jobs import _parse_iso, iso_utc, utc_now
from chalicelib.observability import logger
from chalicelib.queue import MAX_DELAY_SECONDS, DelayQueue
from chalicelib.webhooks.endpoints import Attempt
from chalicelib.webhooks.store import WebhookTable
from chalicelib.webhooks.urls import Resolver, Target, UnsafeUrl, check, post, resolve

# The wait before each retry, in seconds: attempt n + 1 comes RETRY_DELAYS[n - 1] after
# attempt n fails. Growing, and summing to more than 24 hours (25.7 h: 11 attempts).
RETRY_DELAYS = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 36000)
# One attempt, whole: from connecting to the answer's last byte, in seconds.
REQUEST_TIMEOUT = 10.0
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


class Sender(Protocol):
    def send(self, body: Mapping[str, Any], delay_seconds: int) -> None:
        """Put ``body`` on the webhooks queue, visible after ``delay_seconds``."""


class WebhookQueue:
    """The webhooks queue: a standard queue, sent to as the delay queue is (the same
    adapter, chalicelib.queue.DelayQueue, which caps a delay at SQS's 15 minutes)."""

    def __init__(self, queue: DelayQueue) -> None:
        self._queue = queue

    def send(self, body: Mapping[str, Any], delay_seconds: int) -> None:
        self._queue.send(json.dumps(body, separators=(",", ":")), delay_seconds)


Poster = Callable[[Target, bytes, Mapping[str, str], float], int]


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint: what the queue carries between attempts."""

    endpoint_id: str
    # The event's id: webhook-id on every attempt.
    event_id: str
    event_type: str
    # The Standard Webhooks payload, as sent: {"type", "timestamp", "data"}.
    payload: str
    # When the event happened (its timestamp in the payload).
    occurred_at: str
    # The attempt this message is for (1: the first) and when it is due.
    attempt: int
    due_at: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Delivery:
        return cls(**{name: body[name] for name in cls.__dataclass_fields__})

    def to_body(self) -> dict[str, Any]:
        return {"delivery": asdict(self)}


def payload_of(event: Mapping[str, Any]) -> str:
    """The body every endpoint gets for ``event``: Standard Webhooks' ``type``,
    ``timestamp`` and ``data`` (the job's representation, with its client)."""
    data = {k: v for k, v in event["detail"].items() if k != "event_id"}
    return json.dumps(
        {"type": event["detail-type"], "timestamp": event["time"], "data": data},
        separators=(",", ":"),
    )


def fan_out(
    event: Mapping[str, Any],
    table: WebhookTable,
    queue: Sender,
    now: Callable[[], datetime] = utc_now,
) -> int:
    """Send one delivery of ``event`` per endpoint of its client that asks for its type;
    how many. An event of no known type is dropped (logged)."""
    event_type = event.get("detail-type")
    if event_type not in EVENT_TYPES:
        logger.warning("Event of no webhook type dropped", detail_type=str(event_type))
        return 0
    detail = event["detail"]
    payload = payload_of(event)
    endpoints = [e for e in table.listing(detail["client"]) if e.wants(event_type)]
    for endpoint in endpoints:
        delivery = Delivery(
            endpoint.endpoint_id,
            detail["event_id"],
            event_type,
            payload,
            event["time"],
            attempt=1,
            due_at=iso_utc(now()),
        )
        queue.send(delivery.to_body(), 0)
    return len(endpoints)


def signature_headers(
    event_id: str, payload: str, secrets: list[str], moment: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: one v1 signature per secret (two
    during a rotation's overlap), space-separated."""
    signatures = [Webhook(secret).sign(event_id, moment, payload) for secret in secrets]
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def deliver(
    delivery: Delivery,
    table: WebhookTable,
    queue: Sender,
    stage: str,
    now: Callable[[], datetime] = utc_now,
    resolver: Resolver = resolve,
    poster: Poster = post,
) -> bool | None:
    """Make ``delivery``'s attempt if it is due; True delivered, False failed (the next
    attempt is queued, unless this was the last), None not attempted (not yet due: sent
    back; or its endpoint is gone: dropped)."""
    moment = now()
    wait = (_parse_iso(delivery.due_at) - moment).total_seconds()
    if wait > 0:
        queue.send(delivery.to_body(), min(MAX_DELAY_SECONDS, int(wait + 0.999)))
        return None
    endpoint = table.get(delivery.endpoint_id)
    if endpoint is None:
        return None
    status: int | None = None
    error: str | None = None
    try:
        target = check(endpoint.url, stage, resolver)
        headers = signature_headers(
            delivery.event_id, delivery.payload, endpoint.signing_secrets(moment), moment
        )
        status = poster(target, delivery.payload.encode(), headers, REQUEST_TIMEOUT)
    except UnsafeUrl as refused:
        error = f"refused: {refused}"
    except OSError as failure:
        error = f"no answer: {type(failure).__name__}"
    delivered = status is not None and 200 <= status < 300
    if status is not None and not delivered:
        error = f"answered {status}"
    table.record_attempt(
        endpoint.endpoint_id,
        Attempt(
            delivery.event_id,
            delivery.event_type,
            moment,
            delivery.attempt,
            status,
            delivered,
            None if delivered else error,
        ),
    )
    if delivered:
        return True
    if delivery.attempt >= MAX_ATTEMPTS:
        logger.warning(
            "Webhook delivery abandoned after its last attempt",
            webhook_id=endpoint.endpoint_id,
            event_id=delivery.event_id,
            attempts=delivery.attempt,
        )
        return False
    delay = RETRY_DELAYS[delivery.attempt - 1]
    retry = Delivery(
        **{
            **asdict(delivery),
            "attempt": delivery.attempt + 1,
            "due_at": iso_utc(moment + timedelta(seconds=delay)),
        }
    )
    queue.send(retry.to_body(), min(MAX_DELAY_SECONDS, delay))
    return False


def handle_message(
    body: Mapping[str, Any],
    table: WebhookTable,
    queue: Sender,
    stage: str,
    now: Callable[[], datetime] = utc_now,
    resolver: Resolver = resolve,
    poster: Poster = post,
) -> None:
    """One message of the webhooks queue: a delivery, or an event to fan out."""
    if "delivery" in body:
        deliver(Delivery.from_body(body["delivery"]), table, queue, stage, now, resolver, poster)
    else:
        fan_out(body, table, queue, now)
