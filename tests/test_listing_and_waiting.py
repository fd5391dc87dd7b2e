"""GET /jobs (listing through the sharded indexes), Prefer: wait on POST /heavy, ?wait=N."""

from __future__ import annotations

import base64
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections, kinds, service
from chalicelib.jobs import SHARDS, Job, JobStatus, Listing, iso_utc, shard_of, utc_now
from chalicelib.requests import parse_prefer
from tests.conftest import STAGE
from tests.fake_kinds import kind_running

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def jobs(make_job: Callable[..., Job]) -> list[Job]:
    """Five jobs, oldest first, one a second apart; two of them running."""
    start = utc_now() - timedelta(minutes=1)
    made = [make_job(n=i, created_at=start + timedelta(seconds=i)) for i in range(5)]
    for job in made[1::2]:
        connections.job_table().claim(job.job_id, job.kind, "w", utc_now(), 30_000)
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
    assert listing(client, "?status=cancelled").json_body == {
        "jobs": [],
        "next": None,
        "paused": False,
    }


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


def test_a_cursor_only_continues_its_own_listing(
    client: Client, jobs: list[Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = listing(client, "?limit=1").json_body["next"]
    kind_cursor = listing(client, "?kind=heavyLoad&limit=1").json_body["next"]
    assert cursor is not None and kind_cursor is not None

    def no_aws(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an AWS call for a cursor of another listing")

    table = connections.job_table()
    monkeypatch.setattr(table._client, "query", no_aws)
    monkeypatch.setattr(table._client, "batch_get_item", no_aws)
    for query in (
        f"?status=queued&cursor={cursor}",
        f"?kind=heavyLoad&cursor={cursor}",
        f"?cursor={kind_cursor}",
        f"?kind=heavyLoad&status=queued&cursor={kind_cursor}",
    ):
        response = listing(client, query)
        assert response.status_code == 400, query
        assert response.json_body["error"]["code"] == "invalid_cursor"


def cursor_of(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "positions",
    [
        [None, None, None],  # too few shards
        [["2026-01-01T00:00:00.000Z", "6f9619ff-8b86-4011-b42d-00c04fc964ff"]] * 4,  # shard
        [["yesterday", "6f9619ff-8b86-4011-b42d-00c04fc964ff"], None, None, None],
        [["2026-01-01T00:00:00.000Z", "not-a-job"], None, None, None],
        ["start", None, None, None],
    ],
)
def test_a_forged_cursor_is_refused_before_any_aws_call(
    client: Client, aws: dict[str, str], positions: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_aws(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an AWS call for a malformed cursor")

    monkeypatch.setattr(connections.job_table()._client, "query", no_aws)
    cursor = cursor_of({"l": Listing().name, "p": positions})
    response = listing(client, f"?cursor={cursor}")
    assert response.status_code == 400
    assert response.json_body["error"]["code"] == "invalid_cursor"


def test_pages_merge_every_shard_newest_first(client: Client, make_job: Callable[..., Job]) -> None:
    """Jobs spread over the shards; every page is the newest of all of them."""
    start = utc_now() - timedelta(hours=1)
    made = [make_job(n=i, created_at=start + timedelta(seconds=i)) for i in range(23)]
    assert len({shard_of(j.job_id) for j in made}) > 1
    seen: list[str] = []
    query = "?limit=5"
    while True:
        body = listing(client, query).json_body
        assert len(body["jobs"]) <= 5
        seen += [j["job_id"] for j in body["jobs"]]
        if body["next"] is None:
            break
        query = f"?limit=5&cursor={body['next']}"
    assert seen == [j.job_id for j in reversed(made)]


def test_lists_by_kind_with_or_without_status(
    client: Client, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(kinds.KINDS, "otherKind", kind_running(lambda i, ctx: i.n))
    start = utc_now() - timedelta(minutes=1)
    heavy = [make_job(n=i, created_at=start + timedelta(seconds=i)) for i in range(3)]
    other = [
        make_job(n=i, kind="otherKind", created_at=start + timedelta(seconds=10 + i))
        for i in range(2)
    ]
    connections.job_table().claim(other[0].job_id, "otherKind", "w", utc_now(), 30_000)

    def ids(query: str) -> list[str]:
        response = listing(client, query)
        assert response.status_code == 200, response.json_body
        return [j["job_id"] for j in response.json_body["jobs"]]

    assert ids("?kind=heavyLoad") == [j.job_id for j in reversed(heavy)]
    assert ids("?kind=otherKind") == [other[1].job_id, other[0].job_id]
    assert ids("?kind=otherKind&status=running") == [other[0].job_id]
    assert ids("?kind=otherKind&status=queued") == [other[1].job_id]
    assert ids("?kind=heavyLoad&status=running") == []
    assert len(ids("")) == 5


def test_an_unknown_kind_is_refused_naming_the_kinds(client: Client, aws: dict[str, str]) -> None:
    response = listing(client, "?kind=noSuchKind")
    assert response.status_code == 400
    assert response.json_body["error"]["code"] == "unknown_kind"
    for kind in kinds.KINDS:
        assert kind in response.json_body["error"]["message"]


def test_a_job_listed_by_its_old_status_is_left_out(
    client: Client, make_job: Callable[..., Job]
) -> None:
    """The index and the item are read one after the other: a job whose status changed in
    between is not shown under a status it no longer has."""
    job = make_job(n=1)
    table = connections.job_table()
    real_get_many = table.get_many

    def get_many_after_a_claim(job_ids: Any, consistent: bool = False) -> dict[str, Job]:
        table.claim(job.job_id, job.kind, "w", utc_now(), 30_000)
        return real_get_many(job_ids, consistent)

    table.get_many = get_many_after_a_claim  # type: ignore[method-assign]
    assert listing(client, "?status=queued").json_body["jobs"] == []


# --- waiting ----------------------------------------------------------------------------


@pytest.fixture
def background_worker(aws: dict[str, str], receive: Any, sqs: Any) -> Iterator[None]:
    """Runs the worker on whatever reaches the job queue, in a thread, like a stack."""
    stop = threading.Event()

    def loop() -> None:
        worker = connections.worker()
        while not stop.is_set():
            for message in receive(wait=1):
                worker.process_message(message["Body"])
                # Done: delete it, as the event source does (on the FIFO queue an
                # undeleted message holds back every message behind it).
                sqs.delete_message(QueueUrl=aws["QueueUrl"], ReceiptHandle=message["ReceiptHandle"])

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


def test_prefer_respond_async_keeps_the_202(
    client: Client, background_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_waiting(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("respond-async must answer at once, without waiting")

    # Checked by what the request did, not by an absolute time on this machine.
    monkeypatch.setattr(service, "wait_for_job", no_waiting)
    response = client.http.post(
        "/heavy", headers={**JSON, "Prefer": "respond-async, wait=10"}, body=b'{"n": 1}'
    )
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers


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
    # At most twice a second, whatever the constant: a wait holds an API invocation, and
    # each read is a request on the table.
    assert all(gap >= 0.5 - 1e-9 for gap in gaps[:-1]) and len(reads) <= 5 * 2 + 1


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


@pytest.mark.parametrize("limit", [1, 3, 7, 100])
def test_every_page_size_lists_each_live_job_once_in_order(
    make_job: Callable[..., Job], limit: int
) -> None:
    """Timestamps shared by several jobs (ordered by job id then), expired jobs among live
    ones (filtered in the query): paging in any size gives every live job once, in order."""
    rng = random.Random(limit)
    start = utc_now() - timedelta(hours=1)
    now = int(time.time())
    made = [
        make_job(
            n=i,
            created_at=start + timedelta(seconds=rng.randrange(15)),
            expires_at=now - 10 if rng.random() < 0.25 else now + 3600,
        )
        for i in range(40)
    ]
    live = sorted(
        (j for j in made if j.expires_at and j.expires_at > now),
        key=lambda j: (iso_utc(j.created_at), j.job_id),
        reverse=True,
    )
    table = connections.job_table()
    positions: list[Any] = [None] * SHARDS
    seen: list[str] = []
    for _ in range(len(made) + 2):
        page = table.page(Listing(), limit, positions, utc_now())
        assert len(page.jobs) <= limit
        seen += [j.job_id for j in page.jobs]
        if page.last:
            break
        positions = list(page.positions)
    assert seen == [j.job_id for j in live]
