"""Clients on an IAM stage, through API Gateway-shaped events carrying IAM identities.

The stage authenticates with IAM (JOBS_AUTH=iam). Neither `chalice local` nor moto checks
a SigV4 signature, so these tests do what API Gateway does once it has checked one: each
request's context names the principal that signed it (requestContext.identity.userArn)
and the API's own account (requestContext.accountId). They check what the app does with
that: who the client is, what each client sees of the others' jobs (nothing), what the
operator principal sees (everything), each client's quota, and that a request naming no
principal is refused by the app too.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.app import IAMAuthorizer
from chalice.local import LambdaEventConverter
from chalice.test import Client

from chalicelib import connections
from chalicelib.openapi import KEYED_OPERATIONS, SIGV4_SCHEME
from tests.test_app import JSON, job_count, queue_depth

ACCOUNT = "123456789012"
BILLING = f"arn:aws:sts::{ACCOUNT}:assumed-role/billing/session-1"
BILLING_AGAIN = f"arn:aws:sts::{ACCOUNT}:assumed-role/billing/session-2"
REPORTS = f"arn:aws:sts::{ACCOUNT}:assumed-role/reports/i-0abc"
CAROL = f"arn:aws:iam::{ACCOUNT}:user/people/carol"
OPS = f"arn:aws:sts::{ACCOUNT}:assumed-role/jobs-operator/alex"
# Chalice's test client, like `chalice local`, lets every request through an IAMAuthorizer
# (and says so, per request): what API Gateway would check is given in each event here.
pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")
# The open routes; every other one needs a principal.
OPEN = {("/", "GET"), ("/fast", "GET"), ("/kinds", "GET"), ("/openapi.json", "GET")}


@pytest.fixture
def app_module(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """app.py imported as an IAM stage's whose operator is the role jobs-operator."""
    monkeypatch.setenv("JOBS_AUTH", "iam")
    monkeypatch.delenv("JOBS_REQUIRE_API_KEY", raising=False)
    monkeypatch.setenv("JOBS_OPERATOR_PRINCIPAL", f"arn:aws:iam::{ACCOUNT}:role/jobs-operator")
    monkeypatch.delitem(sys.modules, "app", raising=False)
    connections.reset()
    module = importlib.import_module("app")
    yield module
    sys.modules.pop("app", None)  # no later test gets this stage's routes


class Principals:
    """Which principal the next request is signed by (None: no signature at all)."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.account = ACCOUNT


@pytest.fixture
def principals(monkeypatch: pytest.MonkeyPatch) -> Iterator[Principals]:
    signed = Principals()
    real = LambdaEventConverter.create_lambda_event

    def with_principal(self: LambdaEventConverter, *args: Any, **kwargs: Any) -> Any:
        event = real(self, *args, **kwargs)
        event["requestContext"]["accountId"] = signed.account
        if signed.current is not None:
            identity = event["requestContext"]["identity"]
            identity["userArn"] = signed.current
            identity["caller"] = "AROAEXAMPLEID:" + signed.current.rsplit("/", 1)[-1]
            identity["accountId"] = signed.current.split(":")[4]
        return event

    monkeypatch.setattr(LambdaEventConverter, "create_lambda_event", with_principal)
    yield signed


Call = Callable[..., Any]


@pytest.fixture
def as_(client: Client, principals: Principals) -> Call:
    """``as_(principal, method, path, body=None, headers=None)``: a request it signed."""

    def call(
        principal: str | None,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        principals.current = principal
        raw = b"" if body is None else json.dumps(body).encode()
        if method == "GET":
            return client.http.get(path, headers=headers or {})
        return client.http.post(path, headers=headers or JSON, body=raw)

    return call


def submit(as_: Call, principal: str, headers: dict[str, str] | None = None) -> Any:
    return as_(principal, "POST", "/jobs", {"kind": "heavyLoad", "input": {"n": 5}}, headers)


def job_of(as_: Call, principal: str) -> str:
    response = submit(as_, principal)
    assert response.status_code == 202, response.json_body
    return str(response.json_body["job_id"])


def test_every_guarded_route_uses_the_iam_authorizer_and_the_open_ones_none(
    app_module: Any,
) -> None:
    for path, routes in app_module.app.routes.items():
        for method, entry in routes.items():
            guarded = (path, method.lower()) in KEYED_OPERATIONS
            assert isinstance(entry.authorizer, IAMAuthorizer) is guarded, (path, method)
            assert (path, method) in OPEN or guarded
            assert not entry.api_key_required


def test_the_document_declares_sigv4_on_exactly_the_guarded_operations(as_: Call) -> None:
    doc = as_(None, "GET", "/openapi.json").json_body
    assert doc["components"]["securitySchemes"] == {"sigv4": SIGV4_SCHEME}
    secured = {
        (path, method)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == [{"sigv4": []}]
    }
    assert secured == set(KEYED_OPERATIONS)
    assert "unknown_principal" in doc["paths"]["/jobs"]["get"]["responses"]["403"]["description"]


def test_each_job_records_its_principal_and_a_roles_sessions_are_one_client(as_: Call) -> None:
    first = submit(as_, BILLING).json_body
    assert first["client"] == "billing"
    assert submit(as_, CAROL).json_body["client"] == CAROL
    # Another session of the same role sees, and acts on, the first session's job.
    assert as_(BILLING_AGAIN, "GET", f"/jobs/{first['job_id']}").status_code == 200
    listed = as_(BILLING_AGAIN, "GET", "/jobs").json_body["jobs"]
    assert [job["job_id"] for job in listed] == [first["job_id"]]
    cancelled = as_(BILLING_AGAIN, "POST", f"/jobs/{first['job_id']}/cancel")
    assert cancelled.json_body["status"] == "cancelled"


def test_two_roles_see_only_their_own_jobs(as_: Call, aws: dict[str, str]) -> None:
    billing, reports = job_of(as_, BILLING), job_of(as_, REPORTS)

    assert [j["job_id"] for j in as_(BILLING, "GET", "/jobs").json_body["jobs"]] == [billing]
    assert [j["job_id"] for j in as_(REPORTS, "GET", "/jobs").json_body["jobs"]] == [reports]
    for method, path in [
        ("GET", "/jobs/{}"),
        ("GET", "/jobs/{}?wait=1"),
        ("POST", "/jobs/{}/cancel"),
        ("POST", "/jobs/{}/retry"),
    ]:
        theirs = as_(REPORTS, method, path.format(billing))
        assert theirs.status_code == 404, (method, path)
        assert theirs.json_body["error"]["code"] == "job_not_found"
    refused = as_(REPORTS, "GET", "/jobs?client=billing")
    assert refused.status_code == 400 and refused.json_body["error"]["code"] == "invalid_client"
    assert as_(BILLING, "GET", f"/jobs/{billing}").json_body["status"] == "queued"
    assert job_count(aws) == 2 and queue_depth(aws) == 2


def test_the_operator_principal_sees_and_acts_on_every_job(as_: Call) -> None:
    billing, carols = job_of(as_, BILLING), job_of(as_, CAROL)

    everything = as_(OPS, "GET", "/jobs").json_body["jobs"]
    assert {job["job_id"] for job in everything} == {billing, carols}
    quoted = CAROL.replace(":", "%3A").replace("/", "%2F")
    filtered = as_(OPS, "GET", f"/jobs?client={quoted}").json_body["jobs"]
    assert [job["job_id"] for job in filtered] == [carols]
    assert as_(OPS, "GET", f"/jobs/{billing}").json_body["client"] == "billing"
    assert as_(OPS, "POST", f"/jobs/{billing}/cancel").json_body["status"] == "cancelled"
    retried = as_(OPS, "POST", f"/jobs/{billing}/retry")
    assert retried.status_code == 202 and retried.json_body["client"] == "billing"
    # The operator's own jobs are its principal's.
    assert submit(as_, OPS).json_body["client"] == "jobs-operator"


def test_a_quota_is_per_principal(as_: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "1")
    connections.reset()
    job_of(as_, BILLING)

    refused = submit(as_, BILLING_AGAIN)  # the same role: the same quota

    assert refused.status_code == 429
    assert refused.json_body["error"]["code"] == "quota_exceeded"
    assert submit(as_, REPORTS).status_code == 202


GUARDED_CALLS = [
    ("POST", "/heavy"),
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}?wait=1"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/jobs/{}/retry"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED_CALLS)
@pytest.mark.parametrize(
    "principal",
    [
        None,  # API Gateway refuses an unsigned request; so does the app
        "arn:aws:sts::999999999999:assumed-role/billing/s",  # another account's role
        f"arn:aws:sts::{ACCOUNT}:assumed-role/anonymous/s",  # a reserved name
    ],
)
def test_a_request_of_no_principal_of_the_stage_is_refused_on_every_guarded_route(
    as_: Call, aws: dict[str, str], method: str, path: str, principal: str | None
) -> None:
    job_id = job_of(as_, BILLING)
    before = (job_count(aws), queue_depth(aws))

    response = as_(principal, method, path.format(job_id), {"kind": "heavyLoad", "input": {}})

    assert response.status_code == 403
    assert response.json_body["error"]["code"] == "unknown_principal"
    assert (job_count(aws), queue_depth(aws)) == before
    assert as_(BILLING, "GET", f"/jobs/{job_id}").json_body["status"] == "queued"


def test_the_open_routes_need_no_principal(as_: Call) -> None:
    for path, method in sorted(OPEN):
        assert as_(None, method, path).status_code == 200, path
