"""The HTTP API through Chalice's test client, against moto."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, service
from chalicelib.config import Settings
from chalicelib.errors import SettingsError, StoreUnavailable
from chalicelib.jobs import CONTROL_PREFIX, EXPIRES_AT, PENDING, is_job_id, utc_now
from chalicelib.queue import MESSAGE_GROUP

JSON = {"Content-Type": "application/json"}


def post_heavy(
    client: Client, body: str | bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    return client.http.post("/heavy", headers=headers or JSON, body=body or b"")


def job_count(aws: dict[str, str]) -> int:
    """Items a request could have written: jobs and Idempotency-Key records (not the
    table's control items, which applying the stack writes)."""
    return int(
        boto3.client("dynamodb").scan(
            TableName=aws["TableName"],
            Select="COUNT",
            FilterExpression="NOT begins_with(job_id, :control)",
            ExpressionAttributeValues={":control": {"S": CONTROL_PREFIX}},
        )["Count"]
    )


def queue_depth(aws: dict[str, str]) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws["QueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_fast_answers_without_touching_aws(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_aws(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("GET /fast made an AWS call")

    connections.reset()
    monkeypatch.setattr(connections.boto3, "client", no_aws)
    response = client.http.get("/fast")
    assert response.status_code == 200
    assert response.json_body == {"message": "I'm fast"}


def test_submit_records_queued_job_then_enqueues_it(
    client: Client, aws: dict[str, str], receive: Any
) -> None:
    response = post_heavy(client, json.dumps({"n": 1234}))

    assert response.status_code == 202
    body = response.json_body
    assert set(body) == {"job_id", "status", "n", "status_url"}
    assert is_job_id(body["job_id"])
    assert body["status"] == "queued" and body["n"] == 1234
    assert body["status_url"].endswith(f"/jobs/{body['job_id']}")
    assert response.headers["Location"] == body["status_url"]
    assert int(response.headers["Retry-After"]) >= 1

    messages = receive()
    assert [json.loads(m["Body"]) for m in messages] == [
        {"job_id": body["job_id"], "kind": "heavyLoad"}
    ]
    # The FIFO queue's one message group; the job id deduplicates a repeated send.
    assert messages[0]["Attributes"]["MessageGroupId"] == MESSAGE_GROUP
    assert messages[0]["Attributes"]["MessageDeduplicationId"] == body["job_id"]
    status = client.http.get(f"/jobs/{body['job_id']}").json_body
    assert status["status"] == "queued" and status["n"] == 1234


@pytest.mark.parametrize("body", [None, b"", b"   ", b"{}"])
def test_no_body_or_empty_object_means_default_n(client: Client, body: bytes | None) -> None:
    response = post_heavy(client, body)
    assert response.status_code == 202
    assert response.json_body["n"] == Settings.default_n


def test_default_and_cap_are_settings(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_DEFAULT_N", "7")
    monkeypatch.setenv("JOBS_MAX_N", "100")
    connections.reset()
    assert post_heavy(client).json_body["n"] == 7
    assert post_heavy(client, b'{"n": 100}').status_code == 202
    assert post_heavy(client, b'{"n": 101}').json_body["error"]["code"] == "n_out_of_range"


def test_cap_defaults_to_the_classic_1e10(client: Client) -> None:
    assert post_heavy(client, b'{"n": 10000000000}').status_code == 202
    assert post_heavy(client, b'{"n": 10000000001}').status_code == 400


def test_curl_default_form_content_type_is_accepted(client: Client) -> None:
    response = post_heavy(
        client, b'{"n": 5}', {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 202 and response.json_body["n"] == 5


def test_retry_after_grows_with_n(client: Client) -> None:
    small = post_heavy(client, b'{"n": 1}').headers["Retry-After"]
    large = post_heavy(client, b'{"n": 10000000000}').headers["Retry-After"]
    assert int(small) == 1
    assert int(large) == 10**10 // Settings.loop_rate_per_second


BAD_SUBMISSIONS = [
    # (id, body, status, code)
    ("not-json", b"{n: 1}", 400, "invalid_json"),
    ("truncated", b'{"n": 1', 400, "invalid_json"),
    ("not-utf8", b'{"n": "\xff"}', 400, "invalid_json"),
    ("array-body", b"[1]", 400, "body_not_object"),
    ("number-body", b"5", 400, "body_not_object"),
    ("string-body", b'"n"', 400, "body_not_object"),
    ("null-body", b"null", 400, "body_not_object"),
    ("n-string", b'{"n": "5"}', 400, "invalid_n"),
    ("n-float", b'{"n": 5.0}', 400, "invalid_n"),
    ("n-exponent", b'{"n": 1e3}', 400, "invalid_n"),
    ("n-true", b'{"n": true}', 400, "invalid_n"),
    ("n-false", b'{"n": false}', 400, "invalid_n"),
    ("n-null", b'{"n": null}', 400, "invalid_n"),
    ("n-nan", b'{"n": NaN}', 400, "invalid_json"),
    ("n-infinity", b'{"n": Infinity}', 400, "invalid_json"),
    ("n-array", b'{"n": [5]}', 400, "invalid_n"),
    ("n-object", b'{"n": {"v": 5}}', 400, "invalid_n"),
    ("n-negative", b'{"n": -1}', 400, "n_out_of_range"),
    ("n-over-cap", b'{"n": 10000000001}', 400, "n_out_of_range"),
    ("n-huge", b'{"n": ' + b"9" * 5000 + b"}", 400, "n_out_of_range"),
    ("deep-nesting", b'{"n": ' + b"[" * 100000 + b"]" * 100000 + b"}", 413, "body_too_large"),
    ("deep-nesting-small", b'{"n": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),
    ("unknown-field", b'{"n": 5, "m": 1}', 400, "unknown_field"),
    ("typo-field", b'{"N": 5}', 400, "unknown_field"),
    ("duplicate-field", b'{"n": 5, "n": 6}', 400, "duplicate_field"),
    ("too-large", b'{"n": 5, "pad": "' + b"x" * 17000 + b'"}', 413, "body_too_large"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_SUBMISSIONS],
    ids=[case[0] for case in BAD_SUBMISSIONS],
)
def test_bad_submission_is_refused_and_creates_nothing(
    client: Client, aws: dict[str, str], body: bytes, status: int, code: str
) -> None:
    response = post_heavy(client, body)

    assert response.status_code == status
    assert response.json_body["error"]["code"] == code
    assert set(response.json_body) == {"error"}
    assert isinstance(response.json_body["error"]["message"], str)
    assert response.json_body["error"]["message"]
    assert job_count(aws) == 0 and queue_depth(aws) == 0


def test_chunked_body_that_arrived_empty_is_refused(client: Client, aws: dict[str, str]) -> None:
    response = post_heavy(client, b"", {**JSON, "Transfer-Encoding": "chunked"})
    assert response.status_code == 411
    assert response.json_body["error"]["code"] == "length_required"
    assert job_count(aws) == 0


def test_get_job_reports_every_field(client: Client) -> None:
    job_id = post_heavy(client, b'{"n": 3}').json_body["job_id"]
    body = client.http.get(f"/jobs/{job_id}").json_body
    assert set(body) == {
        "job_id",
        "kind",
        "input",
        "status",
        "n",
        "progress",
        "result",
        "error",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "client",
        "lane",
        "run_at",
        "schedule",
    }
    assert body["client"] == "anonymous"  # a stage without keys: every caller's jobs
    assert body["run_at"] is None  # submitted to run at once
    assert body["schedule"] is None  # submitted, not made by a schedule
    assert body["progress"] == 0 and body["attempts"] == 0
    assert body["result"] is None and body["error"] is None
    assert body["created_at"].endswith("Z") and body["started_at"] is None


@pytest.mark.parametrize(
    ("job_id", "status", "code"),
    [
        ("not-a-uuid", 400, "invalid_job_id"),
        ("00000000-0000-0000-0000-000000000000", 400, "invalid_job_id"),  # not a uuid4
        ("6F9619FF-8B86-4011-B42D-00C04FC964FF", 400, "invalid_job_id"),  # not canonical
        ("6f9619ff-8b86-4011-b42d-00c04fc964ff", 404, "job_not_found"),
    ],
)
def test_get_malformed_or_unknown_job(client: Client, job_id: str, status: int, code: str) -> None:
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == status
    assert response.json_body["error"]["code"] == code


def test_job_stays_known_when_it_cannot_be_enqueued(client: Client, aws: dict[str, str]) -> None:
    boto3.client("sqs").delete_queue(QueueUrl=aws["QueueUrl"])

    response = post_heavy(client, b'{"n": 5}')

    assert response.status_code == 503
    assert response.json_body["error"]["code"] == "unavailable"
    items = boto3.client("dynamodb").scan(TableName=aws["TableName"])["Items"]
    assert [item["status"]["S"] for item in items if "status" in item] == ["failed"]


def test_location_keeps_api_gateway_stage_prefix(
    app_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind API Gateway the request path carries the stage; links must keep it."""
    monkeypatch.setenv("JOBS_STAGE", "dev")  # a deployed stage: https
    connections.reset()
    event = api_gateway_event("POST", "/heavy", "/heavy", stage="dev", body='{"n": 5}')
    response = app_module.app(event, None)
    assert response["statusCode"] == 202
    job_id = json.loads(response["body"])["job_id"]
    expected = f"https://abc123.execute-api.us-east-1.amazonaws.com/dev/jobs/{job_id}"
    assert response["headers"]["Location"] == expected
    assert json.loads(response["body"])["status_url"] == expected


def test_answer_time_does_not_depend_on_n(client: Client) -> None:
    def post_seconds(n: int) -> float:
        start = time.perf_counter()
        assert post_heavy(client, json.dumps({"n": n})).status_code == 202
        return time.perf_counter() - start

    post_seconds(1)  # warm up
    # Interleaved, in alternating order: a busy spell on the machine slows both alike, so
    # the ratio of the medians measures n's effect, not the load's.
    samples: dict[int, list[float]] = {1: [], 10**10: []}
    for round_ in range(15):
        for n in (1, 10**10) if round_ % 2 else (10**10, 1):
            samples[n].append(post_seconds(n))
    small, large = statistics.median(samples[1]), statistics.median(samples[10**10])
    assert large < 2 * small


def api_gateway_event(
    method: str, resource: str, path: str, stage: str, body: str | None = None
) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it for the execute-api host."""
    host = "abc123.execute-api.us-east-1.amazonaws.com"
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Host": host, "Content-Type": "application/json", "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "domainName": host,
            "identity": {"sourceIp": "203.0.113.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def test_job_records_expire_and_are_gone_on_read_at_once(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = post_heavy(client, b'{"n": 3}').json_body["job_id"]
    item = boto3.client("dynamodb").get_item(
        TableName=aws["TableName"], Key={"job_id": {"S": job_id}}
    )["Item"]
    created = datetime.fromisoformat(item["created_at"]["S"].replace("Z", "+00:00"))
    expected = created + timedelta(days=Settings.retention_days)
    assert abs(int(item[EXPIRES_AT]["N"]) - expected.timestamp()) <= 1

    later = expected + timedelta(seconds=1)
    monkeypatch.setattr("chalicelib.service.utc_now", lambda: later)
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == 404  # DynamoDB's TTL has not deleted it yet


def test_api_key_requirement_is_a_stage_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.config import api_key_required_at_import

    monkeypatch.delenv("JOBS_REQUIRE_API_KEY", raising=False)
    assert api_key_required_at_import() is False
    monkeypatch.setenv("JOBS_REQUIRE_API_KEY", "true")
    assert api_key_required_at_import() is True
    monkeypatch.setenv("JOBS_REQUIRE_API_KEY", "yes")
    with pytest.raises(SettingsError, match="JOBS_REQUIRE_API_KEY"):
        api_key_required_at_import()


# --- cancellation -----------------------------------------------------------------------


def test_cancel_queued_job(client: Client) -> None:
    job_id = post_heavy(client, b'{"n": 3}').json_body["job_id"]
    response = client.http.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json_body["status"] == "cancelled"
    assert response.json_body["finished_at"] is not None
    again = client.http.post(f"/jobs/{job_id}/cancel")  # idempotent
    assert again.status_code == 200 and again.json_body == response.json_body


def test_cancel_finished_job_is_a_conflict_and_changes_nothing(
    client: Client, receive: Any, sqs_event: Any
) -> None:
    job_id = post_heavy(client, b'{"n": 3}').json_body["job_id"]
    client.lambda_.invoke("process_job", sqs_event(*receive()))
    before = client.http.get(f"/jobs/{job_id}").json_body

    response = client.http.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 409
    assert response.json_body["error"]["code"] == "job_finished"
    assert client.http.get(f"/jobs/{job_id}").json_body == before


@pytest.mark.parametrize(
    ("job_id", "status"), [("nope", 400), ("6f9619ff-8b86-4011-b42d-00c04fc964ff", 404)]
)
def test_cancel_malformed_or_unknown_job(client: Client, job_id: str, status: int) -> None:
    assert client.http.post(f"/jobs/{job_id}/cancel").status_code == status


# --- Idempotency-Key -----------------------------------------------------------------


def keyed(key: str) -> dict[str, str]:
    return {**JSON, "Idempotency-Key": key}


def test_same_key_same_body_returns_the_same_job(client: Client, aws: dict[str, str]) -> None:
    first = post_heavy(client, b'{"n": 42}', keyed("order-1"))
    second = post_heavy(client, b'{ "n" : 42 }', keyed("order-1"))  # same request

    assert first.status_code == second.status_code == 202
    assert second.json_body["job_id"] == first.json_body["job_id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert queue_depth(aws) == 1  # one job, one message


def test_same_key_different_body_is_a_conflict(client: Client, aws: dict[str, str]) -> None:
    post_heavy(client, b'{"n": 42}', keyed("order-2"))
    response = post_heavy(client, b'{"n": 43}', keyed("order-2"))
    assert response.status_code == 409
    assert response.json_body["error"]["code"] == "idempotency_key_reused"
    assert queue_depth(aws) == 1


def test_different_keys_make_different_jobs(client: Client) -> None:
    a = post_heavy(client, b'{"n": 42}', keyed("a")).json_body["job_id"]
    b = post_heavy(client, b'{"n": 42}', keyed("b")).json_body["job_id"]
    c = post_heavy(client, b'{"n": 42}').json_body["job_id"]
    assert len({a, b, c}) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "has space"])
def test_malformed_idempotency_key_is_refused(
    client: Client, aws: dict[str, str], key: str
) -> None:
    response = post_heavy(client, b'{"n": 42}', keyed(key))
    assert response.status_code == 400
    assert response.json_body["error"]["code"] == "invalid_idempotency_key"
    assert job_count(aws) == 0


def test_idempotency_key_expires_with_its_job(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = post_heavy(client, b'{"n": 42}', keyed("order-3")).json_body["job_id"]
    after_expiry = utc_now() + timedelta(days=Settings.retention_days, seconds=5)
    monkeypatch.setattr("chalicelib.service.utc_now", lambda: after_expiry)
    monkeypatch.setattr("chalicelib.jobs.utc_now", lambda: after_expiry)

    second = post_heavy(client, b'{"n": 43}', keyed("order-3"))  # the key is free again

    assert second.status_code == 202 and second.json_body["job_id"] != first


def test_every_replay_says_so_and_a_preference_only_when_applied(
    client: Client, receive: Any, sqs_event: Any
) -> None:
    """A replay of a finished job is a 200 with Idempotent-Replayed: true and
    no Preference-Applied (no wait was applied); with Prefer: wait=N, both."""
    first = post_heavy(client, b'{"n": 3}', keyed("order-5"))
    client.lambda_.invoke("process_job", sqs_event(*receive()))

    replay = post_heavy(client, b'{"n": 3}', keyed("order-5"))
    waited = post_heavy(client, b'{"n": 3}', {**keyed("order-5"), "Prefer": "wait=1"})
    asynchronous = post_heavy(
        client, b'{"n": 3}', {**keyed("order-5"), "Prefer": "respond-async, wait=1"}
    )

    for answer in (replay, waited, asynchronous):
        assert answer.status_code == 200
        assert answer.json_body["job_id"] == first.json_body["job_id"]
        assert answer.json_body["status"] == "succeeded"
        assert answer.headers["Idempotent-Replayed"] == "true"
        assert answer.headers["Content-Location"] == first.headers["Location"]
    assert "Preference-Applied" not in replay.headers
    assert "Preference-Applied" not in asynchronous.headers  # respond-async: no wait
    assert waited.headers["Preference-Applied"] == "wait=1"


def test_a_submission_that_could_not_be_queued_never_pins_its_key(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 503 'could not be queued; retry', a retry with the same
    Idempotency-Key makes a new job (the failed one is failed, its key released in the
    same transaction), instead of replaying the failed job until the key expires."""
    queue = connections.job_queue()
    real_send = queue.send

    def unavailable(body: str, deduplication_id: str) -> str:
        raise StoreUnavailable("SQS send_message failed: injected")

    monkeypatch.setattr(queue, "send", unavailable)
    refused = post_heavy(client, b'{"n": 5}', keyed("order-9"))
    monkeypatch.setattr(queue, "send", real_send)
    retried = post_heavy(client, b'{"n": 5}', keyed("order-9"))
    replayed = post_heavy(client, b'{"n": 5}', keyed("order-9"))

    assert refused.status_code == 503
    assert refused.json_body["error"]["code"] == "unavailable"
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert replayed.json_body["job_id"] == retried.json_body["job_id"]  # the key holds now
    items = boto3.client("dynamodb").scan(TableName=aws["TableName"])["Items"]
    jobs = {i["job_id"]["S"]: i for i in items if "status" in i}
    assert len(jobs) == 2
    (failed,) = [i for i in jobs.values() if i["status"]["S"] == "failed"]
    assert failed["error"]["S"] == service.SEND_FAILED
    assert failed["job_id"]["S"] != retried.json_body["job_id"]
    assert PENDING.sort_key not in failed  # no message is due: the sweep leaves it alone
    assert queue_depth(aws) == 1  # the retried job's message only
