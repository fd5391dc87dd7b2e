"""Webhook endpoints through the API (POST/GET/DELETE /webhooks, rotate, deliveries) on a
keyed stage, against moto's DynamoDB: what each client sees of the others' endpoints
(nothing), what the operator sees (everything), the cap, and where a secret appears (in
the answer that made it, nowhere else)."""

# ruff: noqa: F811 (the fixtures imported from tests.test_app_clients)
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections
from chalicelib.clients import OPERATOR
from chalicelib.errors import InvalidRequest
from chalicelib.webhooks import service as webhook_service
from chalicelib.webhooks.endpoints import (
    DEFAULT_EVENTS,
    MAX_ENDPOINTS_PER_CLIENT,
    ROTATION_OVERLAP,
    Attempt,
    parse_url,
)
from chalicelib.webhooks.store import RECENT_ATTEMPTS
from tests.test_app import JSON
from tests.test_app_clients import Call, Keys, app_module, keys  # noqa: F401

HOOK = {"url": "https://example.com/hooks/jobs"}


@pytest.fixture
def as_(client: Client, keys: Keys) -> Call:
    """``as_(holder, method, path, body=None)``: a request with ``holder``'s key."""

    def call(holder: str, method: str, path: str, body: Any = None) -> Any:
        keys.use(holder)
        raw = b"" if body is None else json.dumps(body).encode()
        return client.http.request(method, path, headers=JSON, body=raw)

    return call


def test_create_answers_the_secret_once_and_nothing_else_shows_it(
    as_: Call, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobs")  # the app's own log, every level
    created = as_("alice", "POST", "/webhooks", HOOK)

    assert created.status_code == 201
    body = created.json_body
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert body["events"] == list(DEFAULT_EVENTS) and "job.progress" not in body["events"]
    assert body["client"] == "alice" and body["url"] == HOOK["url"]
    assert created.headers["Location"].endswith(f"/webhooks/{body['id']}")
    answers = [
        as_("alice", "GET", f"/webhooks/{body['id']}"),
        as_("alice", "GET", "/webhooks"),
        as_(OPERATOR, "GET", "/webhooks"),
        as_("alice", "GET", f"/webhooks/{body['id']}/deliveries"),
    ]
    assert all(a.status_code == 200 for a in answers)
    assert as_("alice", "GET", f"/webhooks/{body['id']}").json_body == {
        k: v for k, v in body.items() if k != "secret"
    }
    rotated = as_("alice", "POST", f"/webhooks/{body['id']}/rotate")
    assert rotated.status_code == 200
    new_secret = rotated.json_body["secret"]
    assert new_secret != secret
    shown = json.dumps([a.json_body for a in answers]) + str(
        as_("alice", "DELETE", f"/webhooks/{body['id']}").body
    )
    logged = caplog.text + "".join(capsys.readouterr())
    for text in (shown, logged):
        assert secret not in text and new_secret not in text
        assert "whsec_" not in text


def test_events_are_chosen_in_the_declared_order_once_each(as_: Call) -> None:
    wanted = ["job.progress", "job.failed", "job.progress"]
    created = as_("alice", "POST", "/webhooks", {**HOOK, "events": wanted})
    assert created.json_body["events"] == ["job.failed", "job.progress"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**HOOK, "extra": 1}, "unknown_field"),
        ({}, "invalid_url"),
        ({"url": 7}, "invalid_url"),
        ({"url": 10**40}, "invalid_url"),  # an integer literal too long to parse
        ({"url": "example.com/hook"}, "invalid_url"),
        ({"url": "ftp://example.com/hook"}, "invalid_url"),
        ({"url": "https://user:pw@example.com/hook"}, "invalid_url"),
        ({"url": "https://example.com/hook#part"}, "invalid_url"),
        ({"url": "https://example.com:http/hook"}, "invalid_url"),
        ({"url": "https:///hook"}, "invalid_url"),
        ({"url": "https://example.com/" + "x" * 2048}, "invalid_url"),
        ({**HOOK, "events": []}, "invalid_events"),
        ({**HOOK, "events": None}, "invalid_events"),  # null is no list: omit it instead
        ({**HOOK, "events": "job.failed"}, "invalid_events"),
        ({**HOOK, "events": ["job.finished"]}, "invalid_events"),
        ({**HOOK, "events": ["job.failed", 10**40]}, "invalid_events"),
        ([HOOK], "body_not_object"),
    ],
)
def test_strict_validation(as_: Call, body: Any, code: str) -> None:
    refused = as_("alice", "POST", "/webhooks", body)
    assert refused.status_code == 400
    assert refused.json_body["error"]["code"] == code
    assert as_("alice", "GET", "/webhooks").json_body == {"webhooks": []}


def test_a_deployed_stage_takes_https_only_and_the_local_stage_http_too() -> None:
    assert parse_url("http://127.0.0.1:9000/hook", "local") == "http://127.0.0.1:9000/hook"
    assert parse_url("https://example.com/hook", "prod") == "https://example.com/hook"
    for stage in ("dev", "prod"):
        with pytest.raises(InvalidRequest, match="https URL on this stage"):
            parse_url("http://example.com/hook", stage)


def test_isolation_and_the_operator(as_: Call) -> None:
    alices = as_("alice", "POST", "/webhooks", HOOK).json_body["id"]
    bobs = as_("bob", "POST", "/webhooks", HOOK).json_body["id"]
    unknown = "wh_" + "0" * 32
    for endpoint_id in (bobs, unknown, "not-an-id"):
        for method, path in [
            ("GET", "/webhooks/{}"),
            ("POST", "/webhooks/{}/rotate"),
            ("GET", "/webhooks/{}/deliveries"),
            ("DELETE", "/webhooks/{}"),
        ]:
            refused = as_("alice", method, path.format(endpoint_id))
            assert refused.status_code == 404, (method, path, endpoint_id)
            assert refused.json_body == {
                "error": {
                    "code": "webhook_not_found",
                    "message": f"No webhook endpoint {endpoint_id!r}.",
                }
            }
    assert as_("bob", "GET", f"/webhooks/{bobs}").status_code == 200  # still there
    assert [e["id"] for e in as_("alice", "GET", "/webhooks").json_body["webhooks"]] == [alices]
    # A client's ?client= is ignored; the operator's chooses.
    assert [e["id"] for e in as_("alice", "GET", "/webhooks?client=bob").json_body["webhooks"]] == [
        alices
    ]
    everyone = as_(OPERATOR, "GET", "/webhooks").json_body["webhooks"]
    assert [(e["client"], e["id"]) for e in everyone] == [("alice", alices), ("bob", bobs)]
    assert [
        e["id"] for e in as_(OPERATOR, "GET", "/webhooks?client=bob").json_body["webhooks"]
    ] == [bobs]
    assert as_(OPERATOR, "GET", "/webhooks?client=a%23b").status_code == 400
    assert as_("alice", "GET", "/webhooks?page=2").json_body["error"]["code"] == (
        "unknown_parameter"
    )
    assert as_(OPERATOR, "GET", f"/webhooks/{bobs}").status_code == 200
    assert as_(OPERATOR, "DELETE", f"/webhooks/{bobs}").status_code == 204
    assert as_("bob", "GET", f"/webhooks/{bobs}").status_code == 404


def test_the_per_client_cap(as_: Call) -> None:
    for _ in range(MAX_ENDPOINTS_PER_CLIENT):
        assert as_("alice", "POST", "/webhooks", HOOK).status_code == 201
    refused = as_("alice", "POST", "/webhooks", HOOK)
    assert refused.status_code == 409
    assert refused.json_body["error"]["code"] == "too_many_webhooks"
    assert len(as_("alice", "GET", "/webhooks").json_body["webhooks"]) == MAX_ENDPOINTS_PER_CLIENT
    assert as_("bob", "POST", "/webhooks", HOOK).status_code == 201  # a cap per client
    # Deleting one makes room.
    first = as_("alice", "GET", "/webhooks").json_body["webhooks"][0]["id"]
    assert as_("alice", "DELETE", f"/webhooks/{first}").status_code == 204
    assert as_("alice", "POST", "/webhooks", HOOK).status_code == 201


def test_delete_is_404_after(as_: Call) -> None:
    endpoint_id = as_("alice", "POST", "/webhooks", HOOK).json_body["id"]
    assert as_("alice", "DELETE", f"/webhooks/{endpoint_id}").status_code == 204
    assert as_("alice", "GET", f"/webhooks/{endpoint_id}").status_code == 404
    assert as_("alice", "DELETE", f"/webhooks/{endpoint_id}").status_code == 404
    assert as_("alice", "GET", "/webhooks").json_body == {"webhooks": []}


def test_a_rotation_keeps_the_previous_secret_signing_for_the_overlap(as_: Call) -> None:
    created = as_("alice", "POST", "/webhooks", HOOK).json_body
    rotated = as_("alice", "POST", f"/webhooks/{created['id']}/rotate").json_body
    endpoint = connections.webhook_table().get(created["id"])
    assert endpoint is not None and endpoint.rotated_at is not None

    during = endpoint.rotated_at + ROTATION_OVERLAP - timedelta(seconds=1)
    after = endpoint.rotated_at + ROTATION_OVERLAP
    assert endpoint.signing_secrets(during) == [rotated["secret"], created["secret"]]
    assert endpoint.signing_secrets(after) == [rotated["secret"]]
    assert rotated["previous_secret_expires_at"] is not None
    assert (
        as_("alice", "GET", f"/webhooks/{created['id']}").json_body["rotated_at"]
        == (rotated["rotated_at"])
    )
    # A second rotation drops the first secret at once: two secrets at most.
    again = as_("alice", "POST", f"/webhooks/{created['id']}/rotate").json_body
    endpoint = connections.webhook_table().get(created["id"])
    assert endpoint is not None
    assert endpoint.signing_secrets(during) == [again["secret"], rotated["secret"]]


def test_deliveries_show_the_recent_attempts_newest_first(as_: Call) -> None:
    endpoint_id = as_("alice", "POST", "/webhooks", HOOK).json_body["id"]
    table = connections.webhook_table()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(RECENT_ATTEMPTS + 3):
        table.record_attempt(
            endpoint_id,
            Attempt(f"event-{n}", "job.succeeded", start + timedelta(seconds=n), 1, 500, False),
        )

    shown = as_("alice", "GET", f"/webhooks/{endpoint_id}/deliveries").json_body["deliveries"]

    assert len(shown) == RECENT_ATTEMPTS
    assert shown[0]["event_id"] == f"event-{RECENT_ATTEMPTS + 2}"
    assert shown[-1]["event_id"] == "event-3"
    assert shown[0] == {
        "event_id": f"event-{RECENT_ATTEMPTS + 2}",
        "event_type": "job.succeeded",
        "attempted_at": "2026-01-01T00:00:52.000Z",
        "attempt": 1,
        "status_code": 500,
        "delivered": False,
        "error": None,
    }
    # Deleting the endpoint deletes its attempts.
    as_("alice", "DELETE", f"/webhooks/{endpoint_id}")
    assert table.attempts(endpoint_id) == []


def test_a_rotation_of_an_endpoint_deleted_meanwhile_is_404(
    as_: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = as_("alice", "POST", "/webhooks", HOOK).json_body["id"]
    real_get = webhook_service.get

    def then_deleted(*args: Any) -> Any:
        found = real_get(*args)
        connections.webhook_table().delete(found)
        return found

    monkeypatch.setattr(webhook_service, "get", then_deleted)
    assert as_("alice", "POST", f"/webhooks/{endpoint_id}/rotate").status_code == 404
    assert connections.webhook_table().get(endpoint_id) is None


def test_the_documented_answers_are_the_representations(as_: Call) -> None:
    from chalicelib.config import get_settings
    from chalicelib.openapi import document

    schemas = document(get_settings())["components"]["schemas"]
    created = as_("alice", "POST", "/webhooks", HOOK).json_body
    shown = as_("alice", "GET", f"/webhooks/{created['id']}").json_body
    for body, name in [(created, "WebhookWithSecret"), (shown, "Webhook")]:
        assert set(body) == set(schemas[name]["required"]) == set(schemas[name]["properties"])
    attempt = Attempt("e", "job.failed", datetime(2026, 1, 1, tzinfo=UTC), 2, None, False, "x")
    item = schemas["WebhookDeliveries"]["properties"]["deliveries"]["items"]
    assert set(attempt.to_api()) == set(item["required"]) == set(item["properties"])


def test_the_delivery_function_fans_out_then_delivers_signed(
    as_: Call, client: Client, aws: dict[str, str]
) -> None:
    import http.server
    import threading

    from standardwebhooks import Webhook

    got: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            got.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/in"  # loopback: the local stage
        secret = as_("alice", "POST", "/webhooks", {"url": url}).json_body["secret"]
        sqs = boto3.client("sqs")
        queue_url = aws["WebhookQueueUrl"]
        event = {
            "id": "eventbridge-1",
            "source": "heavy-jobs",
            "detail-type": "job.succeeded",
            "time": "2026-03-01T12:00:00Z",
            "detail": {"job_id": "j", "status": "succeeded", "client": "alice", "event_id": "s1"},
        }

        def invoke(body: str) -> None:
            name = aws["WebhookQueueName"]
            sqs_event = client.events.generate_sqs_event(message_bodies=[body], queue_name=name)
            client.lambda_.invoke("deliver_webhooks", sqs_event)

        invoke(json.dumps(event))  # the fan-out: one delivery per endpoint, on the queue
        [message] = sqs.receive_message(QueueUrl=queue_url)["Messages"]
        invoke(message["Body"])  # the delivery
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    [(headers, body)] = got
    assert headers["webhook-id"] == "s1"
    assert Webhook(secret).verify(body, headers)["data"]["job_id"] == "j"
