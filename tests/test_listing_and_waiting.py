"""GET /jobs (listing through the indexes), Prefer: wait on POST /heavy, ?wait=N."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections, service
from chalicelib.jobs import Job, JobStatus, utc_now
from chalicelib.requests import parse_prefer
from tests.conftest import STAGE

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def jobs(make_job: Callable[..., Job]) -> list[Job]:
    """Five jobs, oldest first, one a second apart; two of them running."""
    start = utc_now() - timedelta(minutes=1)
    made = [make_job(n=i, created_at=start + timedelta(seconds=i)) for i in range(5)]
    for job in made[1::2]:
        connections.job_table().claim(job.job_id, "w", utc_now(), 30_000)
    return made


def listing(client: Client, query: str = "") -> Any:
    return client.http.get(f"/jobs{query}")


def test_lists_newest_first_with_the_job_representation(client: Client, jobs: list[Job]) -> None:
    response = listing(client)
    assert response.status_code == 200
    body = response.json_body
    assert [j["job_id"] for j in body["jobs"]] == [j.job_id for j in reversed(jobs)]
    assert body["jobs"][0] == client.http.get(f"/jobs/{jobs[-1].job_id}").json_body
    assert body["next"] is None


def test_pages_through_every_job_once(client: Client, jobs: list[Job]) -> None:
    seen: list[str] = []
    query = "?limit=2"
    for _ in range(10):
        body = listing(client, query).json_body
        assert len(body["jobs"]) <= 2
        seen += [j["job_id"] for j in body["jobs"]]
        if body["next"] is None:
            break
        query = f"?limit=2&cursor={body['next']}"
    assert seen == [j.job_id for j in reversed(jobs)]


def test_filters_by_status(client: Client, jobs: list[Job]) -> None:
    running = listing(client, "?status=running").json_body["jobs"]
    assert [j["job_id"] for j in running] == [jobs[3].job_id, jobs[1].job_id]
    assert {j["status"] for j in listing(client, "?status=queued").json_body["jobs"]} == {"queued"}
    assert listing(client, "?status=cancelled").json_body == {"jobs": [], "next": None}


def test_expired_jobs_and_idempotency_records_are_not_listed(
    client: Client, make_job: Callable[..., Job]
) -> None:
    live = make_job(n=1, expires_at=int(time.time()) + 3600)
    make_job(n=2, expires_at=int(time.time()) - 1)
    client.http.post("/heavy", headers={**JSON, "Idempotency-Key": "k"}, body=b'{"n": 3}')
    listed = [j["n"] for j in listing(client).json_body["jobs"]]
    assert sorted(listed) == [live.n, 3]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?status=bogus", "invalid_status"),
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?limit=ten", "invalid_limit"),
        ("?limit=-1", "invalid_limit"),
        ("?cursor=garbage", "invalid_cursor"),
        ("?cursor=eyJzIjogbnVsbCwgImsiOiAxfQ", "invalid_cursor"),  # {"s": null, "k": 1}
        ("?statsu=queued", "unknown_parameter"),
    ],
)
def test_bad_listing_parameters(client: Client, jobs: list[Job], query: str, code: str) -> None:
    response = listing(client, query)
    assert response.status_code == 400
    assert response.json_body["error"]["code"] == code


def test_a_cursor_only_continues_its_own_listing(client: Client, jobs: list[Job]) -> None:
    cursor = listing(client, "?limit=1").json_body["next"]
    assert cursor is not None
    response = listing(client, f"?status=queued&cursor={cursor}")
    assert response.status_code == 400
    assert response.json_body["error"]["code"] == "invalid_cursor"


# --- waiting ----------------------------------------------------------------------------


@pytest.fixture
def background_worker(aws: dict[str, str], receive: Any) -> Iterator[None]:
    """Runs the worker on whatever reaches the job queue, in a thread, like a stack."""
    stop = threading.Event()

    def loop() -> None:
        worker = connections.worker()
        while not stop.is_set():
            for message in receive(wait=1):
                worker.process_message(message["Body"])

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def test_prefer_wait_returns_the_finished_job(client: Client, background_worker: None) -> None:
    response = client.http.post(
        "/heavy", headers={**JSON, "Prefer": "wait=10"}, body=b'{"n": 1000}'
    )
    assert response.status_code == 200
    assert response.json_body["status"] == "succeeded"
    assert response.json_body["result"] == 1000
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.headers["Content-Location"].endswith(response.json_body["job_id"])


def test_prefer_wait_answers_202_when_the_job_is_not_done_in_time(client: Client) -> None:
    start = time.monotonic()
    response = client.http.post("/heavy", headers={**JSON, "Prefer": "wait=1"}, body=b'{"n": 1000}')
    assert response.status_code == 202
    assert time.monotonic() - start >= 1  # it did wait, then gave the usual answer
    assert response.json_body["status"] == "queued"


def test_prefer_respond_async_keeps_the_202(client: Client, background_worker: None) -> None:
    start = time.monotonic()
    response = client.http.post(
        "/heavy", headers={**JSON, "Prefer": "respond-async, wait=10"}, body=b'{"n": 1}'
    )
    assert response.status_code == 202
    assert time.monotonic() - start < 1


def test_get_with_wait_returns_once_the_job_finishes(
    client: Client, background_worker: None
) -> None:
    job_id = client.http.post("/heavy", headers=JSON, body=b'{"n": 10}').json_body["job_id"]
    body = client.http.get(f"/jobs/{job_id}?wait=10").json_body
    assert body["status"] == "succeeded"


@pytest.mark.parametrize("query", ["?wait=26", "?wait=-1", "?wait=soon", "?wiat=3"])
def test_bad_wait_parameter(client: Client, make_job: Callable[..., Job], query: str) -> None:
    job = make_job()
    response = client.http.get(f"/jobs/{job.job_id}{query}")
    assert response.status_code == 400


def test_waiting_polls_a_few_times_a_second_at_most(make_job: Callable[..., Job]) -> None:
    job = make_job()
    clock = [0.0]
    reads: list[float] = []
    table = connections.job_table()
    real_get = table.get

    def counting_get(job_id: str) -> Job | None:
        reads.append(clock[0])
        return real_get(job_id)

    table.get = counting_get  # type: ignore[method-assign]
    result = service.wait_for_job(
        job.job_id,
        table,
        5,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        monotonic=lambda: clock[0],
    )
    assert result.status is JobStatus.QUEUED
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert reads[-1] == pytest.approx(5)  # waited the whole time
    assert len(reads) <= 5 / service.WAIT_POLL_SECONDS + 2
    assert all(gap >= service.WAIT_POLL_SECONDS - 1e-9 for gap in gaps[:-1])


@pytest.mark.parametrize(
    ("header", "respond_async", "wait"),
    [
        (None, False, None),
        ("wait=10", False, 10),
        ("wait=100", False, 25),  # capped under API Gateway's limit
        ('wait="7"', False, 7),
        ("respond-async", True, None),
        ("respond-async, wait=5", True, 5),
        ("handling=lenient; foo=bar, wait=3", False, 3),
        ("wait=soon", False, None),  # ignored, as RFC 7240 asks
        ("WAIT=2", False, 2),
    ],
)
def test_prefer_header_parsing(header: str | None, respond_async: bool, wait: int | None) -> None:
    prefs = parse_prefer(header, service.MAX_WAIT_SECONDS)
    assert (prefs.respond_async, prefs.wait) == (respond_async, wait)


def test_api_function_outlives_the_longest_wait() -> None:
    from infra import stack

    config = stack.load_chalice_config(STAGE)
    timeout = config.scope(STAGE, "api_handler").lambda_timeout
    assert service.MAX_WAIT_SECONDS < timeout <= 29  # API Gateway ends requests at 29 s
