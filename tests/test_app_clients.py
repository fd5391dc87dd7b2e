"""Clients on a keyed stage, through API Gateway-shaped events: who a request's key names,
what each client sees of the others' jobs (nothing), what the operator sees (everything),
and each client's quota.

The stage requires keys (JOBS_REQUIRE_API_KEY=true); moto's API Gateway holds the keys,
named as `make api-key` names them (chalicelib.clients.key_name), and each request's
context carries its key's id (requestContext.identity.apiKeyId), as API Gateway sets it
once it has checked the key.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.local import LambdaEventConverter
from chalice.test import Client

from chalicelib import connections
from chalicelib.clients import OPERATOR, key_name
from chalicelib.jobs import ACTIVE, JobStatus, idempotency_record_id, utc_now
from tests.conftest import STAGE
from tests.test_app import JSON, job_count, queue_depth

APP = "heavy-jobs"
# heavyLoad's n whose estimate is 5 s at the default loop rate (1e8 a second).
FIVE_SECONDS = 500_000_000


@pytest.fixture
def app_module(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """app.py imported as a keyed stage's (its routes' key requirement is read then)."""
    monkeypatch.setenv("JOBS_REQUIRE_API_KEY", "true")
    monkeypatch.delitem(sys.modules, "app", raising=False)  # applying the stack imported it
    connections.reset()
    return importlib.import_module("app")


class Keys:
    """The stage's API keys in moto's API Gateway, by who holds them, and which one the
    next request is made with (``use``)."""

    def __init__(self) -> None:
        self.apigateway = boto3.client("apigateway")
        self.ids: dict[str, str] = {}
        self.current: str | None = None

    def make(self, holder: str, name: str | None = None) -> str:
        """A new enabled key for ``holder`` (a client, or OPERATOR), named as
        `make api-key` names it unless ``name`` says otherwise; its id."""
        key_id = self.apigateway.create_api_key(
            name=name or key_name(APP, STAGE, holder), enabled=True
        )["id"]
        self.ids[holder] = key_id
        return key_id

    def use(self, holder: str | None) -> None:
        self.current = None if holder is None else self.ids.get(holder, holder)


@pytest.fixture
def keys(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Keys]:
    """Keys for alice, bob and the operator; every request carries the key in use."""
    keys = Keys()
    for holder in ("alice", "bob", OPERATOR):
        keys.make(holder)
    real = LambdaEventConverter.create_lambda_event

    def with_key(self: LambdaEventConverter, *args: Any, **kwargs: Any) -> Any:
        event = real(self, *args, **kwargs)
        if keys.current is not None:
            event["requestContext"]["identity"]["apiKeyId"] = keys.current
        return event

    monkeypatch.setattr(LambdaEventConverter, "create_lambda_event", with_key)
    yield keys


Call = Callable[..., Any]


@pytest.fixture
def as_(client: Client, keys: Keys) -> Call:
    """``as_(holder, method, path, body=None, headers=None)``: a request with ``holder``'s key."""

    def call(
        holder: str | None,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        keys.use(holder)
        raw = b"" if body is None else json.dumps(body).encode()
        if method == "GET":
            return client.http.get(path, headers=headers or {})
        return client.http.post(path, headers=headers or JSON, body=raw)

    return call


def submit(as_: Call, holder: str, n: int = 5, headers: dict[str, str] | None = None) -> Any:
    return as_(holder, "POST", "/jobs", {"kind": "heavyLoad", "input": {"n": n}}, headers)


def job_of(as_: Call, holder: str, n: int = 5) -> str:
    response = submit(as_, holder, n)
    assert response.status_code == 202, response.json_body
    return str(response.json_body["job_id"])


def test_every_job_records_the_client_of_its_key(as_: Call, app_module: Any) -> None:
    alice = submit(as_, "alice")
    bob = as_("bob", "POST", "/heavy", {"n": 5})
    mine = submit(as_, OPERATOR)

    assert alice.json_body["client"] == "alice"
    assert as_("bob", "GET", f"/jobs/{bob.json_body['job_id']}").json_body["client"] == "bob"
    assert mine.json_body["client"] == OPERATOR
    # Every /jobs route needs a key on a keyed stage, reading one included.
    for path, routes in app_module.app.routes.items():
        for method, entry in routes.items():
            guarded = bool(entry.api_key_required)
            assert guarded is path.startswith(("/jobs", "/heavy", "/schedules", "/webhooks")), (
                path,
                method,
            )


ROUTES = [
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}?wait=1"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/jobs/{}/retry"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_another_clients_job_is_not_found_exactly_as_an_unknown_id(
    as_: Call, aws: dict[str, str], method: str, path: str
) -> None:
    """Bob's read, wait, cancel or retry of alice's job: the answer an id that does not
    exist gets, byte for byte, and nothing of alice's job changes."""
    job_id = job_of(as_, "alice")
    if path.endswith("/retry"):
        assert as_("alice", "POST", f"/jobs/{job_id}/cancel").status_code == 200

    theirs = as_("bob", method, path.format(job_id))
    assert as_("alice", "GET", f"/jobs/{job_id}").json_body["status"] == (
        "cancelled" if path.endswith("/retry") else "queued"
    )
    assert job_count(aws) == 1 and queue_depth(aws) == 1
    boto3.client("dynamodb").delete_item(TableName=aws["TableName"], Key={"job_id": {"S": job_id}})
    unknown = as_("bob", method, path.format(job_id))

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.body == unknown.body
    assert theirs.json_body["error"]["code"] == "job_not_found"
    assert theirs.headers == unknown.headers


def test_the_operator_sees_and_acts_on_every_job_and_filters_by_client(as_: Call) -> None:
    alices, bobs = job_of(as_, "alice"), job_of(as_, "bob")

    everything = as_(OPERATOR, "GET", "/jobs").json_body["jobs"]
    assert {job["job_id"] for job in everything} == {alices, bobs}
    filtered = as_(OPERATOR, "GET", "/jobs?client=alice").json_body["jobs"]
    assert [job["job_id"] for job in filtered] == [alices]
    assert as_(OPERATOR, "GET", f"/jobs/{bobs}").json_body["client"] == "bob"
    assert as_(OPERATOR, "POST", f"/jobs/{alices}/cancel").json_body["status"] == "cancelled"
    # A retry keeps the retried job's client: alice's job stays alice's.
    retried = as_(OPERATOR, "POST", f"/jobs/{alices}/retry")
    assert retried.status_code == 202
    assert retried.json_body["client"] == "alice" and retried.json_body["retry_of"] == alices
    assert as_("alice", "GET", f"/jobs/{retried.json_body['job_id']}").status_code == 200


def test_a_client_lists_its_own_jobs_and_may_name_only_itself(as_: Call) -> None:
    alices = {job_of(as_, "alice") for _ in range(2)}
    job_of(as_, "bob")

    own = as_("alice", "GET", "/jobs").json_body["jobs"]
    assert {job["job_id"] for job in own} == alices
    named = as_("alice", "GET", "/jobs?client=alice&status=queued").json_body["jobs"]
    assert {job["job_id"] for job in named} == alices
    for other in ("bob", OPERATOR, "not a name"):
        refused = as_("alice", "GET", f"/jobs?client={other}")
        assert refused.status_code == 400
        assert refused.json_body["error"]["code"] == "invalid_client"


def test_a_clients_listing_reads_only_its_own_index_partitions(as_: Call) -> None:
    """However many jobs bob has, alice's listing queries only partitions of her own and
    reads only her jobs."""
    alices = {job_of(as_, "alice")}
    for _ in range(12):
        job_of(as_, "bob")
    calls: list[tuple[str, dict[str, Any]]] = []
    ddb = connections.job_table()._client

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, params))

    ddb.meta.events.register("before-parameter-build.dynamodb", record)
    for query in ("", "?status=queued", "?kind=heavyLoad", "?kind=heavyLoad&status=queued"):
        listed = as_("alice", "GET", f"/jobs{query}").json_body["jobs"]
        assert {job["job_id"] for job in listed} == alices

    queries = [params for name, params in calls if name == "Query"]
    assert len(queries) == 4 * 4  # one per shard and listing
    for params in queries:
        assert params["IndexName"].startswith("jobs-by-client")
        assert params["ExpressionAttributeValues"][":partition"]["S"].startswith("alice#")
    read = [
        key["job_id"]["S"]
        for name, params in calls
        if name == "BatchGetItem"
        for request in params["RequestItems"].values()
        for key in request["Keys"]
    ]
    assert set(read) == alices


def test_a_client_at_its_job_quota_is_refused_and_nothing_is_created(
    as_: Call, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "2")
    connections.reset()
    first, second = job_of(as_, "alice"), job_of(as_, "alice")
    before = (job_count(aws), queue_depth(aws))

    refused = submit(as_, "alice", headers={**JSON, "Idempotency-Key": "over"})
    heavy = as_("alice", "POST", "/heavy", {"n": 5})

    for response in (refused, heavy):
        assert response.status_code == 429
        assert response.json_body["error"]["code"] == "quota_exceeded"
        assert int(response.headers["Retry-After"]) >= 1
    assert (job_count(aws), queue_depth(aws)) == before  # no job, no message, no key record
    record = idempotency_record_id("alice", "over")
    assert "Item" not in boto3.client("dynamodb").get_item(
        TableName=aws["TableName"], Key={"job_id": {"S": record}}
    )
    # Another client is not held back by alice's quota.
    assert submit(as_, "bob").status_code == 202
    # A cancelled job makes room again; so does one that finished.
    assert as_("alice", "POST", f"/jobs/{first}/cancel").status_code == 200
    third = job_of(as_, "alice")
    assert submit(as_, "alice").status_code == 429
    table, now = connections.job_table(), utc_now()
    claimed = table.claim(second, "heavyLoad", "owner", now, 60_000)
    assert claimed is not None and claimed.status is JobStatus.RUNNING
    assert submit(as_, "alice").status_code == 429  # running still counts
    assert table.succeed(claimed, "owner", 5, now) is not None
    assert submit(as_, "alice").status_code == 202
    assert as_("alice", "GET", f"/jobs/{third}").status_code == 200


def test_a_client_over_its_seconds_of_work_is_refused_with_when_room_frees(
    as_: Call, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seconds quota counts each job's estimate (heavyLoad: n / 1e8 s); Retry-After
    is when the client's oldest work, run next, will have made room. Retries count."""
    monkeypatch.setenv("JOBS_MAX_ACTIVE_SECONDS_PER_CLIENT", "12")
    connections.reset()
    first = job_of(as_, "alice", FIVE_SECONDS)
    job_of(as_, "alice", FIVE_SECONDS)

    refused = submit(as_, "alice", FIVE_SECONDS)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"  # the oldest job's 5 s frees enough
    assert submit(as_, "alice", 100_000_000).status_code == 202  # 1 s still fits
    assert submit(as_, "bob", FIVE_SECONDS).status_code == 202

    assert as_("alice", "POST", f"/jobs/{first}/cancel").status_code == 200
    filler = job_of(as_, "alice", FIVE_SECONDS)
    retried = as_("alice", "POST", f"/jobs/{first}/retry")
    assert retried.status_code == 429 and retried.headers["Retry-After"] == "5"
    assert as_("alice", "POST", f"/jobs/{filler}/cancel").status_code == 200
    assert as_("alice", "POST", f"/jobs/{first}/retry").status_code == 202


def test_at_quota_a_repeated_request_still_gets_the_job_its_key_made(
    as_: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "1")
    connections.reset()
    headers = {**JSON, "Idempotency-Key": "order-9"}
    made = submit(as_, "alice", headers=headers)

    again = submit(as_, "alice", headers=headers)

    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json_body["job_id"] == made.json_body["job_id"]


def test_idempotency_keys_are_scoped_by_client_name_across_a_rotated_key(
    as_: Call, keys: Keys, aws: dict[str, str]
) -> None:
    headers = {**JSON, "Idempotency-Key": "order-1"}
    made = submit(as_, "alice", headers=headers)
    keys.make("alice")  # a new key under alice's name: the old one is retired

    again = submit(as_, "alice", headers=headers)
    bobs = submit(as_, "bob", headers=headers)

    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json_body["job_id"] == made.json_body["job_id"]
    assert as_("alice", "GET", f"/jobs/{made.json_body['job_id']}").status_code == 200
    assert bobs.status_code == 202 and bobs.json_body["job_id"] != made.json_body["job_id"]
    assert queue_depth(aws) == 2


@pytest.mark.parametrize(
    "name",
    [
        key_name(APP, "dev", "alice"),  # another stage's
        "someone-made-this-by-hand",
        key_name(APP, STAGE, "anonymous"),  # a reserved name names no client
    ],
)
def test_a_key_that_names_no_client_of_the_stage_is_refused(
    as_: Call, keys: Keys, aws: dict[str, str], name: str
) -> None:
    keys.make("stranger", name=name)
    for method, path in [("GET", "/jobs"), ("POST", "/jobs"), ("GET", f"/jobs/{'0' * 8}")]:
        response = as_("stranger", method, path, {"kind": "heavyLoad", "input": {"n": 5}})
        assert response.status_code == 403
        assert response.json_body == {
            "error": {
                "code": "unknown_key",
                "message": "This API key belongs to no client of this stage.",
            }
        }
    assert job_count(aws) == 0


@pytest.mark.parametrize("key_id", [None, "no-such-key"])
def test_no_key_or_a_key_api_gateway_does_not_know_is_refused(
    as_: Call, key_id: str | None
) -> None:
    response = as_(key_id, "GET", "/jobs")
    assert response.status_code == 403
    assert response.json_body["error"]["code"] == "unknown_key"


def test_a_keys_name_is_read_once_per_process(as_: Call, keys: Keys) -> None:
    calls: list[str] = []
    gateway = connections.api_keys()._client
    gateway.meta.events.register("before-call", lambda model, **_: calls.append(model.name))

    for _ in range(3):
        assert as_("alice", "GET", "/jobs").status_code == 200
    as_("bob", "GET", "/jobs")

    assert calls == ["GetApiKey", "GetApiKey"]


def test_a_job_leaves_the_active_index_when_it_finishes(as_: Call, aws: dict[str, str]) -> None:
    """What the quota reads: only a client's queued and running jobs are in its active
    partition; a final status removes the entry."""
    job_id = job_of(as_, "alice")
    table = connections.job_table()
    assert [entry.job_id for entry in table.active("alice", 10)] == [job_id]
    assert table.active("bob", 10) == []
    as_("alice", "POST", f"/jobs/{job_id}/cancel")
    assert table.active("alice", 10) == []
    item = boto3.client("dynamodb").get_item(
        TableName=aws["TableName"], Key={"job_id": {"S": job_id}}
    )["Item"]
    assert ACTIVE.partition_key not in item


def test_a_batch_makes_the_callers_jobs_with_keys_and_quota_of_its_own(
    as_: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /jobs/batch follows the clients' rules: each job is the caller's, an item's
    Idempotency-Key is scoped to the caller's client (alice's "k" is not bob's), and the
    caller's quota counts the caller's jobs only."""
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "2")
    connections.reset()
    job_of(as_, "bob")
    job_of(as_, "bob")
    items = [{"kind": "heavyLoad", "input": {"n": 5}, "idempotency_key": "k"}]

    alice = as_("alice", "POST", "/jobs/batch", {"jobs": items * 3}).json_body["results"]
    bob = as_("bob", "POST", "/jobs/batch", {"jobs": items}).json_body["results"]

    # alice's three items are one request under one key: one job, replayed twice.
    assert [r["status"] for r in alice] == [202, 202, 202]
    assert len({r["job"]["job_id"] for r in alice}) == 1
    assert alice[0]["job"]["client"] == "alice"
    # bob is at his quota, and his "k" is not alice's: nothing of hers comes back.
    assert bob[0]["status"] == 429 and bob[0]["error"]["code"] == "quota_exceeded"
    job_id = alice[0]["job"]["job_id"]
    assert as_("bob", "GET", f"/jobs/{job_id}").status_code == 404
