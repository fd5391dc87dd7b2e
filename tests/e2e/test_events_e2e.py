"""Job events and signed webhooks on the local stack, as their users meet them: the local
event source reads the job table's stream and runs publish_job_events as Lambda's DynamoDB
event source would; a rule of the user's on the stage's bus gets each job's life, and so
do two webhook endpoints of one client (through the stage's own rule to the webhooks
queue and deliver_webhooks): a receiver that fails half of its requests, and the
``jobs listen`` command a developer runs against ``make run``. One stack for all of it
(each costs the suite a stack's start)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from standardwebhooks import Webhook, WebhookVerificationError

from chalicelib.events import EVENT_SOURCE
from tests.e2e.conftest import Stack
from tests.waiting import wait_for

JOBS = Path(sys.executable).with_name("jobs")
JOB_COUNT = 3
# What each job's life publishes to an endpoint registered without ``events``.
LIFE = ("job.queued", "job.running", "job.succeeded")


class FlakyReceiver(http.server.ThreadingHTTPServer):
    """Answers 500 to the first attempt of each event and 204 to the next: half of its
    requests fail. Keeps every request's webhook-id, verified event and status."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secret = ""
        self.lock = threading.Lock()
        # (webhook-id, status answered, the verified event or None).
        self.requests: list[tuple[str, int, dict[str, Any] | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def answer(self, body: bytes, headers: dict[str, str]) -> int:
        webhook_id = headers.get("webhook-id", "")
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            event = None
        with self.lock:
            seen_before = any(i == webhook_id for i, _, _ in self.requests)
            status = 400 if event is None else 204 if seen_before else 500
            self.requests.append((webhook_id, status, event))
        return status

    def accepted(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {i: e for i, status, e in self.requests if status == 204 and e is not None}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FlakyReceiver

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.send_response(self.server.answer(body, headers))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _lines(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def test_a_jobs_life_reaches_a_rule_on_the_bus_and_every_endpoint_however_often_one_fails(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    sqs, events = stack.client("sqs"), stack.client("events")
    rule_queue = sqs.create_queue(QueueName="job-events")["QueueUrl"]
    rule_arn = sqs.get_queue_attributes(QueueUrl=rule_queue, AttributeNames=["QueueArn"])
    bus = stack.outputs["JobEventBusName"]
    events.put_rule(
        Name="jobs", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
    )
    events.put_targets(
        Rule="jobs",
        EventBusName=bus,
        Targets=[{"Id": "q", "Arn": rule_arn["Attributes"]["QueueArn"]}],
    )
    receiver = FlakyReceiver()
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    env = {k: v for k, v in os.environ.items() if k not in ("JOBS_URL", "JOBS_API_KEY")}
    listen = subprocess.Popen(
        [str(JOBS), "listen"],
        env={**env, "JOBS_URL": stack.url, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[str] = []
    reading = threading.Thread(target=_lines, args=(listen.stdout, printed), daemon=True)
    reading.start()
    try:
        created = requests.post(f"{stack.url}/webhooks", json={"url": receiver.url}, timeout=10)
        assert created.status_code == 201, created.text
        endpoint = created.json()
        receiver.secret = endpoint["secret"]
        listed: list[dict[str, Any]] = []

        def both_registered() -> bool:
            answer = requests.get(f"{stack.url}/webhooks", timeout=10).json()
            listed[:] = answer["webhooks"]
            return len(listed) == 2

        wait_for(both_registered, 30, lambda: f"endpoints {listed}; listen: {printed}")
        assert all("secret" not in e for e in listed)  # only the answer that made one has it

        jobs = [stack.submit(1000)["job_id"] for _ in range(JOB_COUNT)]
        expected = {(job, kind) for job in jobs for kind in LIFE}

        def heard(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
            return {(e["data"]["job_id"], e["type"]) for e in events}

        wait_for(
            lambda: expected <= heard(list(receiver.accepted().values())),
            90,
            lambda: (
                f"accepted {heard(list(receiver.accepted().values()))}; "
                f"the stack's log ends:\n{stack.log[-4000:]}"
            ),
        )
        wait_for(
            lambda: all(
                any(job in line and '"job.succeeded"' in line for line in printed) for job in jobs
            ),
            30,
            lambda: f"jobs listen printed {printed}",
        )
    finally:
        listen.send_signal(signal.SIGINT)
        listen.wait(30)
        reading.join(10)
        receiver.shutdown()
        receiver.server_close()
        serving.join()

    # Every event of every job reached the flaky receiver: its first attempt was refused,
    # its second (the same webhook-id, signed again) accepted; nothing failed to verify.
    by_id: dict[str, list[int]] = {}
    for webhook_id, status, _ in receiver.requests:
        by_id.setdefault(webhook_id, []).append(status)
    accepted = receiver.accepted()
    mine = {i for i, e in accepted.items() if e["data"]["job_id"] in jobs}
    assert len(mine) == len(expected)  # one event, one webhook-id, per change
    assert all(by_id[i][:2] == [500, 204] for i in mine), by_id
    assert all(status != 400 for statuses in by_id.values() for status in statuses)
    assert all(accepted[i]["data"]["client"] for i in mine)

    # The endpoint's own record of it: a failed attempt, then the delivery.
    deliveries = requests.get(
        f"{stack.url}/webhooks/{endpoint['id']}/deliveries", timeout=10
    ).json()["deliveries"]
    one = sorted(
        (d for d in deliveries if d["event_id"] == next(iter(mine))), key=lambda d: d["attempt"]
    )
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in one[:2]] == [
        (1, 500, False),
        (2, 204, True),
    ]

    # jobs listen printed each event once, and removed its endpoint when interrupted.
    for job in jobs:
        for kind in LIFE:
            assert sum(job in line and f'"{kind}"' in line for line in printed) == 1, printed
    remaining = requests.get(f"{stack.url}/webhooks", timeout=10).json()["webhooks"]
    assert [e["id"] for e in remaining] == [endpoint["id"]]

    # The user's own rule on the bus got each job's life, in order, one id per change.
    on_rule: list[dict[str, Any]] = []

    def rule_heard_every_finish() -> bool:
        answer = sqs.receive_message(QueueUrl=rule_queue, MaxNumberOfMessages=10)
        for message in answer.get("Messages", []):
            on_rule.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=rule_queue, ReceiptHandle=message["ReceiptHandle"])
        finished = {e["detail"]["job_id"] for e in on_rule if e["detail-type"] == "job.succeeded"}
        return finished >= set(jobs)

    wait_for(rule_heard_every_finish, 30, lambda: f"the rule's queue got {on_rule}")
    for job in jobs:
        life = [e for e in on_rule if e["detail"]["job_id"] == job]
        assert [e["detail-type"] for e in life] == list(LIFE)
        assert len({e["detail"]["event_id"] for e in life}) == len(life)
        assert life[-1]["detail"]["status"] == "succeeded" and life[-1]["source"] == EVENT_SOURCE
    # The same change is the same id on the bus and in the webhook.
    assert {e["detail"]["event_id"] for e in on_rule} >= mine

    # No secret in any process's log: the stream carries the endpoint's item, the
    # functions and the event source read it, and none of them may print it.
    assert "whsec_" not in stack.log
