"""Delivering events to endpoints (chalicelib.webhooks.delivery), against moto's DynamoDB
and a queue twin that keeps each message's delay: fan-out per endpoint, Standard Webhooks
signatures, the retry schedule over more than 24 hours on an injected clock, and a
receiver that fails half of its requests still getting every event."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import boto3
import pytest
from standardwebhooks import Webhook

from chalicelib import connections
from chalicelib.queue import MAX_DELAY_SECONDS, DelayQueue
from chalicelib.webhooks.delivery import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    WebhookQueue,
    handle_message,
    signature_headers,
)
from chalicelib.webhooks.endpoints import Endpoint, new_id, new_secret
from chalicelib.webhooks.store import WebhookTable
from chalicelib.webhooks.urls import Target
from infra.stack import PROJECT_DIR

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PUBLIC = "93.184.215.14"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Queue:
    """The webhooks queue's twin: a message is received once its delay has passed."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waiting: list[tuple[datetime, int, dict[str, Any]]] = []
        self.delays: list[int] = []
        self._order = itertools.count()

    def send(self, body: Mapping[str, Any], delay_seconds: int) -> None:
        self.delays.append(delay_seconds)
        visible = self.clock.at + timedelta(seconds=delay_seconds)
        # The body as SQS would carry it: JSON text.
        heapq.heappush(self.waiting, (visible, next(self._order), json.loads(json.dumps(body))))

    def drain(self, table: WebhookTable, poster: Any, stage: str = "prod") -> None:
        """Receive every message in the order it becomes visible, moving the clock."""
        while self.waiting:
            visible, _, body = heapq.heappop(self.waiting)
            self.clock.at = max(self.clock.at, visible)
            handle_message(body, table, self, stage, self.clock, public_resolver, poster)


def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC]


class Receiver:
    """A poster twin: records each request, answers from ``answers`` in turn."""

    def __init__(self, clock: Clock, *answers: int) -> None:
        self.clock = clock
        self.answers = itertools.cycle(answers)
        self.got: list[tuple[datetime, dict[str, str], bytes]] = []

    def __call__(
        self, target: Target, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int:
        assert target.address == PUBLIC and timeout > 0
        self.got.append((self.clock.at, dict(headers), body))
        return next(self.answers)


@pytest.fixture
def table(aws: dict[str, str]) -> WebhookTable:
    return connections.webhook_table()


def endpoint(
    table: WebhookTable, client: str = "alice", events: tuple[str, ...] = ("job.succeeded",)
) -> Endpoint:
    made = Endpoint(new_id(), client, "https://hooks.example.com/in", events, new_secret(), START)
    table.create(made, 10)
    return made


def event(n: int = 0, client: str = "alice", kind: str = "job.succeeded") -> dict[str, Any]:
    """An event as the stage's EventBridge rule puts it on the queue."""
    return {
        "version": "0",
        "id": f"eventbridge-{n}",
        "source": "heavy-jobs",
        "detail-type": kind,
        "time": "2026-03-01T12:00:00Z",
        "detail": {
            "job_id": f"job-{n}",
            "status": "succeeded",
            "client": client,
            "event_id": f"stream-{n}",
        },
    }


def test_an_event_goes_to_each_endpoint_of_its_client_that_asks_for_its_type(
    table: WebhookTable,
) -> None:
    clock = Clock(START)
    queue = Queue(clock)
    wanted = [endpoint(table), endpoint(table, events=("job.succeeded", "job.failed"))]
    endpoint(table, events=("job.failed",))
    endpoint(table, client="bob")
    receiver = Receiver(clock, 204)

    queue.send(event(), 0)
    queue.drain(table, receiver)

    assert len(receiver.got) == 2
    for _, headers, body in receiver.got:
        assert headers["webhook-id"] == "stream-0"
        assert json.loads(body) == {
            "type": "job.succeeded",
            "timestamp": "2026-03-01T12:00:00Z",
            "data": {"job_id": "job-0", "status": "succeeded", "client": "alice"},
        }
    ids = {a.endpoint_id for a in wanted}
    assert {e for e in ids if table.attempts(e)[0].delivered} == ids


def test_a_delivery_verifies_with_standardwebhooks_under_both_secrets_of_a_rotation(
    table: WebhookTable,
) -> None:
    now = datetime.now(UTC)  # verify() checks the timestamp against the real clock
    clock = Clock(now)
    hook = endpoint(table).rotated(now)
    assert table.set_secrets(hook)
    assert hook.previous_secret is not None
    receiver = Receiver(clock, 200)
    queue = Queue(clock)

    queue.send(event(), 0)
    queue.drain(table, receiver)

    [(_, headers, body)] = receiver.got
    for secret in (hook.secret, hook.previous_secret):
        assert Webhook(secret).verify(body, headers)["type"] == "job.succeeded"
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(body, headers)


def test_a_failing_endpoint_is_retried_with_growing_waits_for_more_than_24_hours(
    table: WebhookTable,
) -> None:
    clock = Clock(START)
    queue = Queue(clock)
    hook = endpoint(table)
    receiver = Receiver(clock, 500)

    queue.send(event(), 0)
    queue.drain(table, receiver)

    times = [at for at, _, _ in receiver.got]
    assert len(times) == MAX_ATTEMPTS
    waits = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert waits == [float(d) for d in RETRY_DELAYS]
    assert all(a < b for a, b in itertools.pairwise(waits))
    assert times[-1] - times[0] >= timedelta(hours=24)
    assert {h["webhook-id"] for _, h, _ in receiver.got} == {"stream-0"}
    assert max(queue.delays) <= MAX_DELAY_SECONDS
    shown = table.attempts(hook.endpoint_id)
    assert [a.attempt for a in shown] == list(range(MAX_ATTEMPTS, 0, -1))
    assert all(a.status_code == 500 and a.error == "answered 500" for a in shown)


def test_a_receiver_that_fails_half_its_requests_gets_every_event(table: WebhookTable) -> None:
    clock = Clock(START)
    queue = Queue(clock)
    endpoint(table)
    receiver = Receiver(clock, 503, 200)

    for n in range(20):
        queue.send(event(n), 0)
    queue.drain(table, receiver)

    delivered = {
        h["webhook-id"]
        for (_, h, _), status in zip(receiver.got, itertools.cycle([503, 200]), strict=False)
        if status == 200
    }
    assert delivered == {f"stream-{n}" for n in range(20)}


def test_a_deleted_endpoint_gets_nothing_more(table: WebhookTable) -> None:
    clock = Clock(START)
    queue = Queue(clock)
    hook = endpoint(table)
    receiver = Receiver(clock, 500)
    queue.send(event(), 0)
    # The first attempt fails; the endpoint is deleted before the retry.
    _, _, body = heapq.heappop(queue.waiting)
    handle_message(body, table, queue, "prod", clock, public_resolver, receiver)  # fan-out
    _, _, body = heapq.heappop(queue.waiting)
    handle_message(body, table, queue, "prod", clock, public_resolver, receiver)
    assert len(receiver.got) == 1
    table.delete(hook)

    queue.drain(table, receiver)

    assert len(receiver.got) == 1 and not queue.waiting


def test_an_endpoint_that_resolves_to_a_private_address_is_never_called(
    table: WebhookTable,
) -> None:
    clock = Clock(START)
    queue = Queue(clock)
    hook = endpoint(table)
    receiver = Receiver(clock, 200)
    queue.send(event(), 0)
    _, _, body = heapq.heappop(queue.waiting)
    handle_message(body, table, queue, "prod", clock, public_resolver, receiver)
    _, _, delivery = heapq.heappop(queue.waiting)

    handle_message(delivery, table, queue, "prod", clock, lambda h, p: ["10.0.0.7"], receiver)

    assert receiver.got == []
    [attempt] = table.attempts(hook.endpoint_id)
    assert not attempt.delivered and attempt.status_code is None
    assert attempt.error == "refused: 'hooks.example.com' resolves to 10.0.0.7, a private address"
    assert len(queue.waiting) == 1  # retried: the name may resolve elsewhere later


def test_the_queue_adapter_sends_json_and_caps_the_delay(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="webhooks-test")["QueueUrl"]
    sent: list[dict[str, Any]] = []
    client = connections._client("sqs", connections.WORKER_CLIENT_CONFIG)
    original = client.send_message

    def recording(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return original(**kwargs)

    queue = WebhookQueue(DelayQueue(client, "webhooks-test"))
    with patch.object(client, "send_message", recording):
        queue.send({"delivery": {"attempt": 2}}, 36000)
        queue.send({"delivery": {"attempt": 3}}, 0)

    assert [s["DelaySeconds"] for s in sent] == [MAX_DELAY_SECONDS, 0]
    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    assert json.loads(message["Body"]) == {"delivery": {"attempt": 3}}


def test_the_documented_verification_accepts_a_delivery_and_refuses_a_forgery() -> None:
    from tests.docs.pages import examples

    page = PROJECT_DIR / "docs/webhooks.md"
    [example] = [
        e for e in examples(page) if e.run_by == "tests/chalicelib/webhooks/test_delivery.py"
    ]
    namespace: dict[str, Any] = {}
    exec(compile(example.code, example.where, "exec"), namespace)  # the page's own code
    receive = namespace["receive"]
    secret = new_secret()
    payload = json.dumps({"type": "job.failed", "timestamp": "t", "data": {"job_id": "j"}})
    headers = signature_headers("stream-9", payload, [secret], datetime.now(UTC))

    assert receive(payload.encode(), headers, secret)["data"] == {"job_id": "j"}
    assert receive(payload.encode() + b" ", headers, secret) is None
    assert receive(payload.encode(), headers, new_secret()) is None
