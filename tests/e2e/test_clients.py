"""Two clients and the operator on one keyed local stage, over real HTTP: each sees and
acts on its own jobs only, the operator on all of them, and nobody without a key on any.

The stage runs as ``JOBS_REQUIRE_API_KEY=true make run`` does, with keys made by
``make api-key STAGE=local [CLIENT=name]``; the local API checks them as API Gateway does.
The worker is off, so every job stays queued (cancellable, counted by the quota) for as
long as the test needs it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import requests

from tests.e2e.conftest import Stack
from tests.e2e.test_cli import jobs

# Small, so the quota is reached in a few submissions.
MAX_ACTIVE = 3


class Caller:
    """One client's requests to the stack, with its key."""

    def __init__(self, stack: Stack, key: str | None) -> None:
        self.url = stack.url
        self.key = key

    def _headers(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        base = {"x-api-key": self.key} if self.key is not None else {}
        return {**base, **(headers or {})}

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=self._headers(), timeout=30)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        return requests.post(
            self.url + path,
            data=json.dumps(body) if body is not None else b"",
            headers=self._headers({"content-type": "application/json", **(headers or {})}),
            timeout=30,
        )

    def submit(self, headers: dict[str, str] | None = None) -> requests.Response:
        return self.post("/jobs", {"kind": "heavyLoad", "input": {"n": 1000}}, headers)

    def listed(self, **params: str) -> set[str]:
        response = self.get("/jobs", limit="100", **params)
        assert response.status_code == 200, response.text
        return {job["job_id"] for job in response.json()["jobs"]}


def test_each_client_sees_and_acts_on_its_own_jobs_and_the_operator_on_all(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(
        keyed=True, worker=False, environment={"JOBS_MAX_ACTIVE_PER_CLIENT": str(MAX_ACTIVE)}
    )
    alice = Caller(stack, stack.api_key("alice"))
    bob = Caller(stack, stack.api_key("bob"))
    operator = Caller(stack, stack.api_key())
    nobody = Caller(stack, None)

    created = alice.submit()
    assert created.status_code == 202, created.text
    a = created.json()
    assert a["client"] == "alice"
    # The link names the stage's own address, whatever Host the request carried.
    assert created.headers["Location"] == f"{stack.url}/jobs/{a['job_id']}"
    b = bob.submit().json()
    assert b["client"] == "bob"

    # Without a key, API Gateway (here, the local API) refuses every job route...
    for response in (
        nobody.get("/jobs"),
        nobody.get(f"/jobs/{a['job_id']}"),
        nobody.get(f"/jobs/{a['job_id']}", wait="1"),
        nobody.submit(),
        nobody.post(f"/jobs/{a['job_id']}/cancel"),
        nobody.post(f"/jobs/{a['job_id']}/retry"),
    ):
        assert (response.status_code, response.json()) == (403, {"message": "Forbidden"})
    # ...and none of the others.
    for path in ("/fast", "/kinds", "/openapi.json", "/"):
        assert nobody.get(path).status_code == 200, path

    # Another client's job is exactly an unknown one: 404, the same body.
    unknown = str(uuid.uuid4())
    for action in (
        lambda job_id: bob.get(f"/jobs/{job_id}"),
        lambda job_id: bob.get(f"/jobs/{job_id}", wait="1"),
        lambda job_id: bob.post(f"/jobs/{job_id}/cancel"),
        lambda job_id: bob.post(f"/jobs/{job_id}/retry"),
    ):
        theirs, nobodys = action(a["job_id"]), action(unknown)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json() == json.loads(nobodys.text.replace(unknown, a["job_id"]))
    assert alice.get(f"/jobs/{a['job_id']}").json()["status"] == "queued"  # untouched

    # Each listing holds its client's jobs only; a client cannot ask for another's.
    assert alice.listed() == {a["job_id"]}
    assert bob.listed() == {b["job_id"]}
    assert alice.get("/jobs", client="bob").status_code == 400
    assert alice.listed(client="alice") == {a["job_id"]}

    # The operator sees everyone's, filters by client, and acts on any job.
    assert operator.listed() == {a["job_id"], b["job_id"]}
    assert operator.listed(client="alice") == {a["job_id"]}
    assert operator.get(f"/jobs/{b['job_id']}").json()["client"] == "bob"
    cancelled = operator.post(f"/jobs/{a['job_id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert alice.get(f"/jobs/{a['job_id']}").json()["status"] == "cancelled"

    # A retry belongs to the retried job's client, and stays out of others' sight.
    retried = alice.post(f"/jobs/{a['job_id']}/retry")
    assert retried.status_code == 202, retried.text
    r = retried.json()
    assert (r["client"], r["retry_of"]) == ("alice", a["job_id"])
    assert bob.get(f"/jobs/{r['job_id']}").status_code == 404

    # The same Idempotency-Key names a different job for each client.
    alice_once = alice.submit({"Idempotency-Key": "nightly"}).json()
    bob_once = bob.submit({"Idempotency-Key": "nightly"}).json()
    assert alice_once["job_id"] != bob_once["job_id"]
    assert alice.submit({"Idempotency-Key": "nightly"}).json()["job_id"] == alice_once["job_id"]

    # Alice is at her quota (the retry and the keyed job, plus one): refused, nothing made.
    assert alice.submit().status_code == 202
    before = alice.listed()
    refused = alice.submit()
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert alice.listed() == before
    # Alice at her quota does not stop Bob.
    assert bob.submit().status_code == 202

    # A page on another site cannot make a job with a client's key (the browser sends it
    # with the visitor's key only if the page has it, but the rule holds regardless).
    hostile = alice.post(
        "/jobs/" + r["job_id"] + "/cancel",
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert hostile.status_code == 403
    assert hostile.json()["error"]["code"] == "cross_site_request"
    assert alice.get(f"/jobs/{r['job_id']}").json()["status"] == "queued"

    # The CLI with Bob's key lists Bob's jobs only, and shows their client.
    listing = jobs("--json", "list", "--limit", "100", "--api-key", str(bob.key), url=stack.url)
    assert listing.returncode == 0, listing.stderr
    shown = json.loads(listing.stdout)["jobs"]
    assert {job["client"] for job in shown} == {"bob"}
    assert {job["job_id"] for job in shown} == bob.listed()
