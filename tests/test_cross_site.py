"""Cross-site requests, through Chalice's test client: every state-changing route refuses
what another site's page sent (403 cross_site_request) before it creates or changes
anything, and takes what curl, the CLI and the API's own pages send."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib.origins import SAFE_METHODS

# What a browser adds to a form or fetch POST from a page of another site.
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
TEXT = {"Content-Type": "text/plain"}
JOB = b'{"kind": "countPrimes", "input": {"below": 10}}'


def stored_jobs(aws: dict[str, str]) -> list[str]:
    """The ids of the jobs in the table (its control items left out)."""
    items = boto3.client("dynamodb").scan(TableName=aws["TableName"])["Items"]
    return [item["job_id"]["S"] for item in items if "status" in item]


def test_every_state_changing_route_is_guarded(app_module: Any, client: Client) -> None:
    """The refusal is a middleware, not a route's own code: a route added later is covered
    too. Each non-safe method of each route answers 403 to a cross-site request."""
    answered = {}
    for path, entries in app_module.app.routes.items():
        for method in set(entries) - SAFE_METHODS:
            url = path.replace("{job_id}", "6f9619ff-8b86-4011-b42d-00c04fc964ff")
            response = client.http.request(method, url, headers={**TEXT, **CROSS_SITE}, body=JOB)
            answered[f"{method} {path}"] = response.status_code
    assert answered and set(answered.values()) == {403}, answered


@pytest.mark.parametrize(
    "browser",
    [
        CROSS_SITE,
        {"Sec-Fetch-Site": "same-site"},  # another execute-api host
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
    ],
)
@pytest.mark.parametrize("path", ["/jobs", "/heavy"])
def test_a_cross_site_submission_is_refused_and_creates_nothing(
    client: Client, aws: dict[str, str], browser: dict[str, str], path: str
) -> None:
    response = client.http.post(path, headers={**TEXT, **browser}, body=JOB)

    assert response.status_code == 403
    assert response.json_body["error"]["code"] == "cross_site_request"
    assert set(response.json_body["error"]) == {"code", "message"}
    assert stored_jobs(aws) == []
    queue = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws["QueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert queue["Attributes"]["ApproximateNumberOfMessages"] == "0"


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_a_cross_site_cancel_or_retry_changes_nothing(
    client: Client, aws: dict[str, str], action: str
) -> None:
    job = client.http.post("/jobs", headers=TEXT, body=JOB).json_body
    if action == "retry":
        assert client.http.post(f"/jobs/{job['job_id']}/cancel").status_code == 200
    before = client.http.get(f"/jobs/{job['job_id']}").json_body

    refused = client.http.post(f"/jobs/{job['job_id']}/{action}", headers=CROSS_SITE)

    assert refused.status_code == 403
    assert refused.json_body["error"]["code"] == "cross_site_request"
    assert client.http.get(f"/jobs/{job['job_id']}").json_body == before
    assert stored_jobs(aws) == [job["job_id"]]  # and no new one


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the CLI
        {"Sec-Fetch-Site": "none"},
        # The API's own page: Host is what the browser connected to (no domain name in
        # the test client's context).
        {
            "Host": "localhost:8000",
            "Origin": "http://localhost:8000",
            "Sec-Fetch-Site": "same-origin",
        },
    ],
)
def test_curl_the_cli_and_the_apis_own_pages_still_submit(
    client: Client, headers: dict[str, str]
) -> None:
    response = client.http.post("/jobs", headers={**TEXT, **headers}, body=JOB)
    assert response.status_code == 202


def test_reads_from_another_site_are_not_refused(client: Client, aws: dict[str, str]) -> None:
    """GET changes nothing: a page of another site may read what CORS lets it read."""
    assert client.http.get("/jobs", headers=CROSS_SITE).status_code == 200
