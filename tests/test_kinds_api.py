"""The kinds API through the app: GET /kinds, POST /jobs (sharing POST /heavy's 202,
Prefer and Idempotency-Key behaviour), the representation's kind and input, the kind
filter, and POST /jobs/{id}/retry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections
from chalicelib.config import get_settings
from chalicelib.jobs import Job, JobStatus, utc_now
from chalicelib.kinds import KINDS
from tests.chalicelib.test_worker import run_worker
from tests.test_app import JSON, job_count, post_heavy, queue_depth


def post_job(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.http.post("/jobs", headers={**JSON, **(headers or {})}, body=raw)


def test_get_kinds_lists_each_declaration(client: Client) -> None:
    response = client.http.get("/kinds")
    assert response.status_code == 200
    listed = response.json_body["kinds"]
    assert [k["kind"] for k in listed] == sorted(KINDS)
    settings = get_settings()
    for entry in listed:
        kind = KINDS[entry["kind"]]
        assert entry == {
            "kind": kind.name,
            "description": kind.description,
            "input_schema": kind.input_schema(settings),
            "result_schema": kind.result_schema(),
        }


def test_post_jobs_queues_a_job_of_the_kind(client: Client, aws: dict[str, str]) -> None:
    response = post_job(client, {"kind": "countPrimes", "input": {"below": 4_000_000_000}})
    assert response.status_code == 202
    body = response.json_body
    assert body["kind"] == "countPrimes" and body["input"] == {"below": 4_000_000_000}
    assert body["status"] == "queued" and body["n"] is None and "retry_of" not in body
    assert response.headers["Location"].endswith(f"/jobs/{body['job_id']}")
    assert int(response.headers["Retry-After"]) == 100  # the kind's estimate: 4e9 / 4e7 a s
    assert client.http.get(f"/jobs/{body['job_id']}").json_body == body
    assert queue_depth(aws) == 1


def test_post_heavy_is_a_heavy_load_job_with_the_same_answers(client: Client) -> None:
    heavy = post_heavy(client, b'{"n": 5}')
    assert heavy.status_code == 202
    assert set(heavy.json_body) == {"job_id", "status", "n", "status_url"}
    job = client.http.get(f"/jobs/{heavy.json_body['job_id']}").json_body
    assert job["kind"] == "heavyLoad" and job["input"] == {"n": 5} and job["n"] == 5
    generic = post_job(client, {"kind": "heavyLoad", "input": {"n": 5}})
    assert generic.headers["Retry-After"] == heavy.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "nope"}, 400, "unknown_kind"),
        ({"kind": "countPrimes", "input": {"below": 1}}, 400, "invalid_input"),
        ({"kind": "countPrimes", "input": {"below": False}}, 400, "invalid_input"),
        ('{"kind": "countPrimes", "input": {"below": 1e400}}', 400, "invalid_input"),
        (
            {"kind": "countPrimes", "input": {"below": 10}, "pad": "x" * 17_000},
            413,
            "body_too_large",
        ),
    ],
)
def test_a_bad_job_request_creates_nothing(
    client: Client, aws: dict[str, str], body: Any, status: int, code: str
) -> None:
    response = post_job(client, body)
    assert response.status_code == status
    assert response.json_body["error"]["code"] == code
    assert job_count(aws) == 0 and queue_depth(aws) == 0


def test_unknown_kind_lists_the_kinds(client: Client) -> None:
    message = post_job(client, {"kind": "nope"}).json_body["error"]["message"]
    assert all(name in message for name in KINDS)


def test_idempotency_key_binds_kind_and_input(client: Client, aws: dict[str, str]) -> None:
    key = {"Idempotency-Key": "order-7"}
    first = post_job(client, {"kind": "countPrimes", "input": {"below": 100}}, key)
    again = post_job(client, {"kind": "countPrimes", "input": {"below": 100}}, key)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json_body["job_id"] == first.json_body["job_id"]
    other = post_job(client, {"kind": "countPrimes", "input": {"below": 101}}, key)
    assert other.status_code == 409
    assert other.json_body["error"]["code"] == "idempotency_key_reused"
    # POST /heavy and POST /jobs with the same kind and input are the same request.
    heavy_key = {"Idempotency-Key": "order-8"}
    heavy = post_heavy(client, b'{"n": 7}', {**JSON, **heavy_key})
    generic = post_job(client, {"kind": "heavyLoad", "input": {"n": 7}}, heavy_key)
    assert generic.json_body["job_id"] == heavy.json_body["job_id"]
    assert job_count(aws) == 2 * 2  # two jobs and their two key records


def test_prefer_wait_returns_the_finished_job(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefer: wait=N on POST /jobs waits as on POST /heavy (a worker thread runs it)."""
    import threading

    def work() -> None:
        from tests.waiting import wait_for

        def run_one() -> bool:
            queue = connections.worker().queue
            messages = queue._client.receive_message(QueueUrl=queue.url).get("Messages", [])
            for message in messages:
                connections.worker().process_message(message["Body"])
            return bool(messages)

        wait_for(run_one, 10, "the job's message")

    thread = threading.Thread(target=work)
    thread.start()
    response = post_job(
        client, {"kind": "countPrimes", "input": {"below": 100}}, {"Prefer": "wait=10"}
    )
    thread.join()
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.json_body["result"] == {"count": 25}


def test_a_count_primes_job_runs_through_the_entry_point(
    client: Client, sqs_event: Any, message_for: Any
) -> None:
    job_id = post_job(client, {"kind": "countPrimes", "input": {"below": 1000}}).json_body["job_id"]
    job = connections.job_table().get(job_id)
    assert job is not None
    run_worker(client, sqs_event(message_for(job)))
    body = client.http.get(f"/jobs/{job_id}").json_body
    assert body["status"] == "succeeded" and body["result"] == {"count": 168}
    assert body["progress"] == 1 and body["n"] is None


def test_the_kind_filter_lists_only_that_kind(client: Client) -> None:
    primes = [post_job(client, {"kind": "countPrimes", "input": {"below": b}}) for b in (10, 20)]
    post_heavy(client, b'{"n": 3}')
    listed = client.http.get("/jobs?kind=countPrimes").json_body["jobs"]
    assert [j["job_id"] for j in listed] == [p.json_body["job_id"] for p in reversed(primes)]
    queued = client.http.get("/jobs?kind=countPrimes&status=queued").json_body["jobs"]
    assert len(queued) == 2 and all(j["kind"] == "countPrimes" for j in queued)
    unknown = client.http.get("/jobs?kind=nope")
    assert unknown.status_code == 400 and unknown.json_body["error"]["code"] == "unknown_kind"


# --- retry ------------------------------------------------------------------------------


def retry(client: Client, job_id: str) -> Any:
    return client.http.post(f"/jobs/{job_id}/retry", headers=JSON, body=b"")


@pytest.mark.parametrize("final", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_failed_or_cancelled_job_is_retried_as_a_new_job(
    client: Client, make_job: Callable[..., Job], final: JobStatus
) -> None:
    job = make_job(kind="countPrimes", input={"below": 500})
    table = connections.job_table()
    if final is JobStatus.CANCELLED:
        table.cancel(job, utc_now())
    else:
        table.fail_unfinished(job, "boom", utc_now())

    response = retry(client, job.job_id)

    assert response.status_code == 202
    body = response.json_body
    assert body["job_id"] != job.job_id and body["retry_of"] == job.job_id
    assert (body["kind"], body["input"], body["status"]) == (
        "countPrimes",
        {"below": 500},
        "queued",
    )
    assert response.headers["Location"].endswith(f"/jobs/{body['job_id']}")
    assert "Retry-After" in response.headers
    assert client.http.get(f"/jobs/{body['job_id']}").json_body["retry_of"] == job.job_id
    assert client.http.get(f"/jobs/{job.job_id}").json_body["status"] == final.value


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
def test_a_job_that_did_not_fail_is_not_retried(
    client: Client, aws: dict[str, str], make_job: Callable[..., Job], status: JobStatus
) -> None:
    job = make_job(status=status)
    before = job_count(aws)
    response = retry(client, job.job_id)
    assert response.status_code == 409
    assert response.json_body["error"]["code"] == "not_retryable"
    assert job_count(aws) == before


def test_retrying_an_unknown_job_is_404(client: Client) -> None:
    response = retry(client, "6f9619ff-8b86-4011-b42d-00c04fc964ff")
    assert response.status_code == 404
    assert retry(client, "not-a-uuid").status_code == 400


def test_a_retried_job_whose_input_no_longer_fits_its_kind_fails_saying_why(
    client: Client, make_job: Callable[..., Job], sqs_event: Any, message_for: Any
) -> None:
    """Say a field was renamed since the job ran: the retry is accepted (its input is the
    old job's), and the worker fails it with the reason instead of running it."""
    old = make_job(kind="countPrimes", input={"upto": 500})
    connections.job_table().fail_unfinished(old, "boom", utc_now())
    response = retry(client, old.job_id)
    assert response.status_code == 202 and response.headers["Retry-After"] == "1"
    new = connections.job_table().get(response.json_body["job_id"])
    assert new is not None
    run_worker(client, sqs_event(message_for(new)))
    body = client.http.get(f"/jobs/{new.job_id}").json_body
    assert body["status"] == "failed" and "does not fit kind countPrimes" in body["error"]
