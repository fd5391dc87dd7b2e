"""POST /jobs/batch through Chalice's test client on moto: per-item validation and results
in order, the whole-body refusals, Idempotency-Key per item, the quota applied item by
item, the order of the messages, and what a failed write or send does to its item."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import connections
from chalicelib.config import get_settings
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import lane_of, parse_message
from chalicelib.queue import SEND_BATCH_LIMIT, lane_group
from chalicelib.requests import MAX_BATCH_BODY_BYTES, MAX_BATCH_JOBS
from chalicelib.store import JobTable
from tests.test_app import JSON, job_count, queue_depth


def post_batch(client: Client, body: Any, raw: bytes | None = None) -> Any:
    payload = raw if raw is not None else json.dumps(body).encode()
    return client.http.post("/jobs/batch", headers=JSON, body=payload)


def heavy(n: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "heavyLoad", "input": {"n": n}, **extra}


def messages(receive: Callable[..., list[dict[str, Any]]], aws: dict[str, str]) -> list[str]:
    """The job ids of every message on the job queue, in the order received (each batch
    deleted, so that FIFO lets the group's next messages through)."""
    sqs = boto3.client("sqs")
    ids: list[str] = []
    while True:
        batch = receive()
        if not batch:
            return ids
        ids.extend(parse_message(m["Body"]).job_id for m in batch)
        for message in batch:
            sqs.delete_message(QueueUrl=aws["QueueUrl"], ReceiptHandle=message["ReceiptHandle"])


def test_each_item_is_made_or_refused_alone_and_answered_in_order(
    client: Client, aws: dict[str, str], receive: Any
) -> None:
    items = [
        heavy(1),
        {"kind": "heavyLoad", "input": {"n": -1}},
        {"kind": "nope"},
        "not an object",
        heavy(2, extra=1),
        heavy(3, run_at="yesterday"),
        heavy(4, delay_seconds=5, run_at="2026-01-01T00:00:00Z"),
        heavy(5, idempotency_key=7),
        heavy(6),
    ]
    response = post_batch(client, {"jobs": items})

    assert response.status_code == 207
    results = response.json_body["results"]
    assert [r["status"] for r in results] == [202, 400, 400, 400, 400, 400, 400, 400, 202]
    errors = {i: r["error"] for i, r in enumerate(results) if "error" in r}
    assert errors[1] == {"code": "invalid_input", "message": "/jobs/1/input/n: must be >= 0."}
    assert errors[2]["code"] == "unknown_kind"
    assert errors[2]["message"].startswith("/jobs/2/kind: Unknown kind 'nope'.")
    assert errors[3] == {
        "code": "item_not_object",
        "message": "Each job must be an object; /jobs/3 is a string.",
    }
    assert errors[4]["code"] == "unknown_field"
    assert errors[4]["message"].startswith("Unknown field(s) in /jobs/4: extra.")
    assert errors[5] == {
        "code": "invalid_run_at",
        "message": "/jobs/5/run_at: must be an RFC 3339 date-time with a Z or an offset, "
        "like 2030-01-02T09:00:00Z; got 'yesterday'.",
    }
    assert errors[6]["code"] == "invalid_run_at"
    assert errors[7]["code"] == "invalid_idempotency_key"
    assert errors[7]["message"].startswith("/jobs/7/idempotency_key: ")
    made = [results[0]["job"], results[8]["job"]]
    assert [job["input"]["n"] for job in made] == [1, 6]
    assert all(job["status"] == "queued" for job in made)
    # Only the valid items made anything: a record and a message each, in order.
    assert job_count(aws) == 2
    assert messages(receive, aws) == [job["job_id"] for job in made]


def test_a_full_batch_is_written_and_sent_in_order_with_batch_calls(
    client: Client, aws: dict[str, str], receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    table, queue = connections.job_table(), connections.job_queue()
    for adapter in (table, queue):
        real = adapter._client

        class Spy:
            def __init__(self, real: Any) -> None:
                self._real = real

            def __getattr__(self, operation: str) -> Any:
                calls.append(operation)
                return getattr(self._real, operation)

        monkeypatch.setattr(adapter, "_client", Spy(real))

    response = post_batch(client, {"jobs": [heavy(n) for n in range(MAX_BATCH_JOBS)]})

    assert response.status_code == 207
    jobs = [r["job"] for r in response.json_body["results"]]
    assert [job["input"]["n"] for job in jobs] == list(range(MAX_BATCH_JOBS))
    assert job_count(aws) == MAX_BATCH_JOBS
    assert calls.count("batch_write_item") == 4  # 25 a call
    assert calls.count("send_message_batch") == MAX_BATCH_JOBS // SEND_BATCH_LIMIT
    assert "put_item" not in calls and "send_message" not in calls
    assert messages(receive, aws) == [job["job_id"] for job in jobs]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"[]", 400, "body_not_object"),
        (b"", 400, "body_not_object"),
        (b"{}", 400, "invalid_jobs"),
        (b'{"jobs": {}}', 400, "invalid_jobs"),
        (b'{"jobs": []}', 400, "invalid_jobs"),
        (b'{"jobs": [], "x": 1}', 400, "unknown_field"),
        (json.dumps({"jobs": [heavy(1)] * (MAX_BATCH_JOBS + 1)}).encode(), 400, "invalid_jobs"),
        (b" " * (MAX_BATCH_BODY_BYTES + 1), 413, "body_too_large"),
    ],
)
def test_a_body_that_is_no_batch_is_one_error_and_makes_nothing(
    client: Client, aws: dict[str, str], raw: bytes, status: int, code: str
) -> None:
    response = post_batch(client, None, raw=raw)

    assert response.status_code == status
    assert response.json_body["error"]["code"] == code
    assert job_count(aws) == 0 and queue_depth(aws) == 0


def test_the_body_limit_fits_a_hundred_items_as_large_as_one_post_jobs(client: Client) -> None:
    """Each item as large as the largest POST /jobs body the kinds allow still fits."""
    item = heavy(10**10, idempotency_key="k" * 255)
    body = json.dumps({"jobs": [item] * MAX_BATCH_JOBS}).encode()
    assert len(body) < MAX_BATCH_BODY_BYTES
    assert post_batch(client, None, raw=body).status_code == 207


def test_an_idempotency_key_per_item_replays_and_conflicts_like_the_header(
    client: Client, aws: dict[str, str]
) -> None:
    first = post_batch(client, {"jobs": [heavy(1, idempotency_key="a")]}).json_body["results"]
    again = post_batch(
        client,
        {
            "jobs": [
                heavy(1, idempotency_key="a"),  # the same request: its job again
                heavy(2, idempotency_key="a"),  # another request with the key: 409
                heavy(3, idempotency_key="b"),
                heavy(3, idempotency_key="b"),  # twice in one batch: one job
            ]
        },
    ).json_body["results"]
    # The header of POST /jobs and the item's field share one scope.
    header = client.http.post(
        "/jobs",
        headers={**JSON, "Idempotency-Key": "b"},
        body=json.dumps(heavy(3)).encode(),
    )

    assert again[0] == {"status": 202, "job": first[0]["job"]}
    assert again[1]["status"] == 409
    assert again[1]["error"]["code"] == "idempotency_key_reused"
    assert again[2]["job"]["job_id"] == again[3]["job"]["job_id"] == header.json_body["job_id"]
    assert job_count(aws) == 2 + 2  # two jobs, each with its key record


def test_the_quota_applies_item_by_item_in_order(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "3")
    connections.reset()
    assert client.http.post("/jobs", headers=JSON, body=json.dumps(heavy(1)).encode())

    results = post_batch(client, {"jobs": [heavy(n) for n in range(4)]}).json_body["results"]

    assert [r["status"] for r in results] == [202, 202, 429, 429]
    assert results[2]["error"]["code"] == "quota_exceeded"
    assert job_count(aws) == 3


def test_a_send_that_fails_fails_its_job_and_not_the_others(
    client: Client, aws: dict[str, str], receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = connections.job_queue()
    real = queue._client.send_message_batch

    def refuse_second(**kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        kept = [e for e in entries if e["Id"] != "1"]
        response = real(**{**kwargs, "Entries": kept})
        response.setdefault("Failed", []).append(
            {"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "boom"}
        )
        return response

    monkeypatch.setattr(queue._client, "send_message_batch", refuse_second)
    items = [heavy(0), heavy(1, idempotency_key="k"), heavy(2)]
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert [r["status"] for r in results] == [202, 503, 202]
    assert results[1]["error"]["code"] == "unavailable"
    sent = messages(receive, aws)
    assert sent == [results[0]["job"]["job_id"], results[2]["job"]["job_id"]]
    table = JobTable(boto3.client("dynamodb"), aws["TableName"])
    failed = [job for job in table.get_many(_all_job_ids(aws)).values() if job.input["n"] == 1]
    assert [job.status.value for job in failed] == ["failed"]
    # Its key was released: the same item again makes a new job.
    retried = post_batch(client, {"jobs": [items[1]]}).json_body["results"][0]
    assert retried["status"] == 202 and retried["job"]["job_id"] != failed[0].job_id


def test_records_left_unwritten_are_retried_then_their_items_fail(
    client: Client, aws: dict[str, str], receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = connections.job_table()
    real = table._client.batch_write_item
    rounds: list[int] = []

    def throttle_first(**kwargs: Any) -> Any:
        """Leaves the first request unprocessed: once (then it is written), or always."""
        requests = kwargs["RequestItems"][aws["TableName"]]
        rounds.append(len(requests))
        held = requests[:1] if len(rounds) == 1 or always[0] else []
        rest = requests[len(held) :]
        response = real(RequestItems={aws["TableName"]: rest}) if rest else {}
        if held:
            response["UnprocessedItems"] = {aws["TableName"]: held}
        return response

    always = [False]
    monkeypatch.setattr(table._client, "batch_write_item", throttle_first)
    monkeypatch.setattr("chalicelib.store._BATCH_WRITE_BACKOFF_SECONDS", 0.001)
    once = post_batch(client, {"jobs": [heavy(0), heavy(1)]}).json_body["results"]
    assert [r["status"] for r in once] == [202, 202]
    assert rounds == [2, 1]

    always[0] = True
    rounds.clear()
    results = post_batch(client, {"jobs": [heavy(2), heavy(3)]}).json_body["results"]
    assert [r["status"] for r in results] == [503, 202]
    assert len(rounds) == 5
    sent = messages(receive, aws)
    assert sent == [once[0]["job"]["job_id"], once[1]["job"]["job_id"], results[1]["job"]["job_id"]]


def _all_job_ids(aws: dict[str, str]) -> list[str]:
    items = boto3.client("dynamodb").scan(TableName=aws["TableName"])["Items"]
    return [i["job_id"]["S"] for i in items if "kind" in i]


def test_run_at_and_delay_seconds_are_checked_as_for_post_jobs(
    client: Client, aws: dict[str, str]
) -> None:
    items = [
        heavy(0, run_at="2020-01-01T00:00:00Z"),
        heavy(1, run_at="2020-01-01T01:00:00.123456789+01:00"),
        heavy(2, delay_seconds=0),
        heavy(3, delay_seconds=60),  # a minute ahead: waits in the delay queue
        heavy(4, run_at="2999-01-01T00:00:00Z"),  # beyond the retention
        heavy(5, delay_seconds=-1),
        heavy(6, delay_seconds=True),
        heavy(7, run_at="2020-01-01 00:00:00"),  # no offset
        heavy(8, delay_seconds=10**40),
    ]
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert [r["status"] for r in results] == [202, 202, 202, 202] + [400] * 5
    assert {r["error"]["code"] for r in results[4:]} == {"invalid_run_at"}
    assert [r["job"]["run_at"] is None for r in results[:4]] == [False, False, False, False]
    ahead = "/jobs/4/run_at: A job may run at most 7 day(s) ahead (the stage's retention)."
    assert results[4]["error"]["message"] == ahead
    assert results[5]["error"]["message"].startswith("/jobs/5/delay_seconds: must be ")
    assert results[8]["error"]["message"].startswith("/jobs/8/delay_seconds: A job may run ")
    assert job_count(aws) == 4
    assert queue_depth(aws) == 3  # the one a minute ahead is not on the job queue


def test_items_that_run_later_wait_as_a_post_jobs_would(
    client: Client, aws: dict[str, str], receive: Any
) -> None:
    """An item due within SQS's longest delay waits in the delay queue, one due later in
    the later index with no message; neither is on the job queue before its time."""
    items = [heavy(0), heavy(1, delay_seconds=60), heavy(2, delay_seconds=7200)]
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert [r["status"] for r in results] == [202, 202, 202]
    now_id, soon_id, later_id = (r["job"]["job_id"] for r in results)
    sqs = boto3.client("sqs")
    delayed = sqs.get_queue_attributes(
        QueueUrl=aws["DelayQueueUrl"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert int(delayed["ApproximateNumberOfMessagesDelayed"]) == 1
    assert messages(receive, aws) == [now_id]
    table = connections.job_table()
    soon, later = table.get(soon_id), table.get(later_id)
    assert soon is not None and not soon.later and soon.pending_at is not None
    assert later is not None and later.later and later.pending_at is None


def test_each_item_goes_to_its_lane(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a stage with lanes keyed by kind, each item's message goes to its kind's lane."""
    monkeypatch.setenv("JOBS_LANES", "4")
    monkeypatch.setenv("JOBS_LANE_KEY", "kind")
    get_settings.cache_clear()
    connections.reset()
    items = [heavy(0), {"kind": "countPrimes", "input": {"below": 10}}, heavy(1)]
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert [r["status"] for r in results] == [202, 202, 202]
    lanes = [r["job"]["lane"] for r in results]
    assert lanes == [lane_of("heavyLoad", 4), lane_of("countPrimes", 4), lane_of("heavyLoad", 4)]
    groups: dict[str, str] = {}
    for message in boto3.client("sqs").receive_message(
        QueueUrl=aws["QueueUrl"], MaxNumberOfMessages=10, AttributeNames=["MessageGroupId"]
    )["Messages"]:
        groups[parse_message(message["Body"]).job_id] = message["Attributes"]["MessageGroupId"]
    assert groups[results[1]["job"]["job_id"]] == lane_group(lanes[1])
    assert groups[results[0]["job"]["job_id"]] == lane_group(lanes[0])


def test_sqs_down_fails_every_job_and_dynamodb_down_too_costs_one_call(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, table = connections.job_queue(), connections.job_table()

    def unavailable(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "SendMessageBatch",
        )

    monkeypatch.setattr(queue._client, "send_message_batch", unavailable)
    items = [heavy(n) for n in range(SEND_BATCH_LIMIT + 2)]  # two calls: the second never made
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert {r["status"] for r in results} == {503}
    statuses = {job.status.value for job in table.get_many(_all_job_ids(aws)).values()}
    assert statuses == {"failed"}

    calls: list[str] = []

    def store_down(job: Any, *args: Any) -> bool:
        calls.append(job.job_id)
        raise StoreUnavailable("DynamoDB unavailable")

    monkeypatch.setattr(table, "fail_submission", store_down)
    results = post_batch(client, {"jobs": items}).json_body["results"]

    assert {r["status"] for r in results} == {503}
    assert len(calls) == 1  # the rest stay due, for the recovery sweep
