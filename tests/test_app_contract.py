"""The API's contract as a client reads it, route by route: the status, the whole error
body (code AND message: clients and people read both) and the headers, pinned exactly so
that a change to any of them is a decision, not an accident."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, service
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import Job
from chalicelib.observability import TRACE_ATTRIBUTE, trace_header
from chalicelib.worker import Worker
from tests.conftest import sqs_message
from tests.test_app import JSON

A_JOB_ID = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
A_WEBHOOK_ID = "wh_" + "0" * 32

UNAVAILABLE = {"error": {"code": "unavailable", "message": "The job store is unavailable; retry."}}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/heavy", b'{"n": 5}'),
        ("POST", "/jobs", b'{"kind": "heavyLoad"}'),
        ("GET", "/jobs", b""),
        ("GET", f"/jobs/{A_JOB_ID}", b""),
        ("GET", f"/jobs/{A_JOB_ID}?wait=1", b""),
        ("POST", f"/jobs/{A_JOB_ID}/cancel", b""),
        ("POST", f"/jobs/{A_JOB_ID}/retry", b""),
        ("POST", "/webhooks", b'{"url": "https://example.com/hook"}'),
        ("GET", "/webhooks", b""),
        ("GET", f"/webhooks/{A_WEBHOOK_ID}", b""),
        ("DELETE", f"/webhooks/{A_WEBHOOK_ID}", b""),
        ("POST", f"/webhooks/{A_WEBHOOK_ID}/rotate", b""),
        ("GET", f"/webhooks/{A_WEBHOOK_ID}/deliveries", b""),
    ],
)
def test_every_route_answers_503_with_the_same_body_when_the_store_fails(
    client: Client, aws: dict[str, str], method: str, path: str, body: bytes
) -> None:
    boto3.client("dynamodb").delete_table(TableName=aws["TableName"])

    response = client.http.request(method, path, headers=JSON, body=body)

    assert response.status_code == 503
    assert response.json_body == UNAVAILABLE


def answer_headers(response: Any) -> dict[str, str]:
    """The headers a route set (Chalice adds Content-Type)."""
    return {name: value for name, value in response.headers.items() if name != "Content-Type"}


def test_an_accepted_job_says_where_to_look_and_when_and_nothing_else(
    client: Client, aws: dict[str, str]
) -> None:
    """202 from POST /heavy, POST /jobs and POST /jobs/{id}/retry: Location (the status
    URL, in the body too where the body has it) and Retry-After, spelt as RFC 9110 does."""
    heavy = client.http.post("/heavy", headers=JSON, body=b'{"n": 5}')
    job = client.http.post(
        "/jobs", headers=JSON, body=b'{"kind": "countPrimes", "input": {"below": 10}}'
    )

    for response in (heavy, job):
        assert response.status_code == 202
        job_id = response.json_body["job_id"]
        assert answer_headers(response) == {
            "Location": f"/jobs/{job_id}",  # the test client's context has no domain name
            "Retry-After": response.headers["Retry-After"],
        }
        assert int(response.headers["Retry-After"]) >= 1
        assert "Idempotent-Replayed" not in response.headers
    assert heavy.json_body == {
        "job_id": heavy.json_body["job_id"],
        "status": "queued",
        "n": 5,
        "status_url": heavy.headers["Location"],
    }
    assert job.json_body["kind"] == "countPrimes" and job.json_body["status"] == "queued"


def gateway_event(
    domain: str | None, path: str, full_path: str | None, query: str | None = None
) -> dict[str, Any]:
    """A REST API (v1) proxy event for POST ``path`` reaching API Gateway at ``domain``
    (requestContext.domainName; None: left out) with hostile Host and X-Forwarded-Proto
    headers, whose requestContext.path (the path as the client sent it: stage or base
    path included) is ``full_path`` (None: left out); ``query`` is the raw query
    string's multi-values."""
    context: dict[str, Any] = {
        "resourcePath": path,
        "httpMethod": "POST",
        "stage": "dev",
        "identity": {"sourceIp": "203.0.113.1"},
    }
    if domain is not None:
        context["domainName"] = domain
    if full_path is not None:
        context["path"] = full_path
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {
            "Content-Type": "application/json",
            "Host": "evil.example",
            "X-Forwarded-Proto": "javascript",
        },
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": context,
        "body": '{"n": 5}',
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    ("domain", "full_path", "base"),
    [
        ("api.example.com", "/dev/heavy", "https://api.example.com/dev"),
        ("api.example.com", "/UX/heavy", "https://api.example.com/UX"),
        ("api.example.com", "/v1//heavy", "https://api.example.com/v1"),  # base path "v1/"
        ("api.example.com", "/heavy", "https://api.example.com"),  # a custom domain's root
        ("api.example.com", None, "https://api.example.com"),  # no path in the context
        ("api.example.com", "/elsewhere", "https://api.example.com"),  # not a suffix
        (None, "/dev/heavy", "/dev"),  # no domain name (Chalice's test client): a path
    ],
)
def test_links_are_the_stages_own_urls_whatever_the_headers_say(
    app_module: Any,
    monkeypatch: pytest.MonkeyPatch,
    domain: str | None,
    full_path: str | None,
    base: str,
) -> None:
    """app._external_url: https, API Gateway's domain name and the prefix the route's
    path was reached under (stage or base path); never the Host or X-Forwarded-Proto a
    client sent."""
    monkeypatch.setenv("JOBS_STAGE", "dev")  # a deployed stage: https
    connections.reset()
    response = app_module.app(gateway_event(domain, "/heavy", full_path), None)

    assert response["statusCode"] == 202
    job_id = json.loads(response["body"])["job_id"]
    assert response["headers"]["Location"] == f"{base}/jobs/{job_id}"
    assert json.loads(response["body"])["status_url"] == f"{base}/jobs/{job_id}"


def test_links_on_the_local_stage_are_http(app_module: Any) -> None:
    """The local API serves plain http on its host:port (its context's domainName)."""
    response = app_module.app(gateway_event("127.0.0.1:8123", "/heavy", "/heavy"), None)

    job_id = json.loads(response["body"])["job_id"]
    assert response["headers"]["Location"] == f"http://127.0.0.1:8123/jobs/{job_id}"


def test_a_batch_goes_on_past_a_failing_record_then_raises_the_first_failure(
    client: Client, sqs_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app._each_record: an AWS failure on one record does not stop the others; then the
    invocation raises (the first failure), so SQS delivers the batch again. Each record is
    handled on the trace its message came with."""
    handled: list[tuple[str, str | None]] = []

    def forward(self: Worker, body: str, message_id: str) -> None:
        handled.append((body, trace_header({})))
        if body.startswith("fail"):
            raise StoreUnavailable(body)

    monkeypatch.setattr(Worker, "forward", forward)
    messages = [sqs_message(body) for body in ("ok-1", "fail-2", "ok-3", "fail-4")]
    messages[0]["Attributes"][TRACE_ATTRIBUTE] = "Root=1-5759e988-bd862e3fe1be46a994272793"

    with pytest.raises(StoreUnavailable) as raised:
        client.lambda_.invoke("forward_delayed", sqs_event(*messages))

    assert str(raised.value) == "fail-2"
    assert handled == [
        ("ok-1", "Root=1-5759e988-bd862e3fe1be46a994272793"),
        ("fail-2", None),
        ("ok-3", None),
        ("fail-4", None),
    ]


def test_a_repeated_query_parameter_counts_once_with_its_last_value(
    client: Client, make_job: Callable[..., Job]
) -> None:
    """app._query_params: ?limit=1&limit=2 is ?limit=2 (as API Gateway's single-value
    parameters are); no query is the defaults."""
    made = [make_job(n=n) for n in range(3)]

    assert len(client.http.get("/jobs?limit=1&limit=2").json_body["jobs"]) == 2
    assert len(client.http.get("/jobs?limit=2").json_body["jobs"]) == 2
    everything = client.http.get("/jobs")
    assert everything.status_code == 200
    assert {job["job_id"] for job in everything.json_body["jobs"]} == {j.job_id for j in made}


def test_the_current_request_outside_a_request_is_a_programming_error(
    app_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chalice sets current_request when it handles a request: a fresh app has none yet.
    monkeypatch.setattr(app_module.app, "current_request", None, raising=False)
    with pytest.raises(AssertionError, match=r"^only called while handling a request$"):
        app_module._current_request()


def test_a_finished_job_is_answered_200_saying_where_it_lives_and_what_was_applied(
    client: Client, receive: Any, sqs_event: Any
) -> None:
    """A repeat (Idempotency-Key) of a finished job: 200 with the job, Content-Location,
    Idempotent-Replayed; Preference-Applied only when a wait was honoured (capped)."""
    key = {**JSON, "Idempotency-Key": "order-7"}
    first = client.http.post("/heavy", headers=key, body=b'{"n": 3}')
    client.lambda_.invoke("process_job", sqs_event(*receive()))
    job = client.http.get(f"/jobs/{first.json_body['job_id']}").json_body
    replayed = {"Idempotent-Replayed": "true", "Content-Location": first.headers["Location"]}

    def again(prefer: str | None) -> Any:
        headers = key if prefer is None else {**key, "Prefer": prefer}
        return client.http.post("/heavy", headers=headers, body=b'{"n": 3}')

    capped = f"wait={service.MAX_WAIT_SECONDS}"
    for prefer, applied in [
        (None, {}),
        ("wait=1", {"Preference-Applied": "wait=1"}),
        ("wait=999", {"Preference-Applied": capped}),
        ("respond-async, wait=1", {}),
        ("respond-async", {}),
    ]:
        response = again(prefer)
        assert response.status_code == 200, prefer
        assert response.json_body == job, prefer
        assert answer_headers(response) == {**replayed, **applied}, prefer


def test_a_wait_not_met_in_time_is_the_usual_202(client: Client) -> None:
    response = client.http.post("/heavy", headers={**JSON, "Prefer": "wait=1"}, body=b'{"n": 3}')

    assert response.status_code == 202
    assert set(answer_headers(response)) == {"Location", "Retry-After"}
    assert response.json_body["status"] == "queued"
