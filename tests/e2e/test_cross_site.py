"""Cross-site requests and links on a live local stack (``make run``'s processes, over
real HTTP): another site's POST is refused and creates or changes nothing, curl, the CLI
and the API's own pages keep working, and links are the local API's own URLs whatever
Host header a request carried."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import requests

from tests.e2e.conftest import Stack
from tests.e2e.test_cli import jobs

JOB = '{"kind": "countPrimes", "input": {"below": 10}}'


def curl(*argv: str) -> tuple[int, str]:
    """Run curl; the status code and the body of its answer."""
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def listed(stack: Stack) -> list[dict[str, object]]:
    response = requests.get(f"{stack.url}/jobs", timeout=10)
    assert response.status_code == 200, response.text
    jobs_listed: list[dict[str, object]] = response.json()["jobs"]
    return jobs_listed


def test_a_text_plain_post_from_another_site_is_refused_and_runs_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    """What a page of evil.example makes its visitor's browser send, as curl sends it."""
    stack = make_stack()
    cross_site = ("-H", "Origin: https://evil.example", "-H", "Sec-Fetch-Site: cross-site")

    status, body = curl(
        "-H", "Content-Type: text/plain", *cross_site, "--data-binary", JOB, f"{stack.url}/jobs"
    )  # fmt: skip

    assert status == 403
    assert json.loads(body)["error"]["code"] == "cross_site_request"
    assert listed(stack) == []

    status, body = curl("-H", "Content-Type: text/plain", "--data-binary", JOB, f"{stack.url}/jobs")
    assert status == 202  # the same request from curl alone: accepted
    job_id = json.loads(body)["job_id"]
    for action in ("cancel", "retry"):
        status, _ = curl("-X", "POST", *cross_site, f"{stack.url}/jobs/{job_id}/{action}")
        assert status == 403
    assert [job["job_id"] for job in listed(stack)] == [job_id]


def test_the_cli_and_the_apis_own_pages_keep_submitting(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(worker=False)

    submitted = jobs("submit", "5", url=stack.url)
    assert submitted.returncode == 0, submitted.stderr

    # What the dashboard's fetch sends, served from this API.
    same_origin = {"Origin": stack.url, "Sec-Fetch-Site": "same-origin"}
    response = requests.post(f"{stack.url}/jobs", data=JOB, headers=same_origin, timeout=30)
    assert response.status_code == 202, response.text
    assert len(listed(stack)) == 2


def test_links_are_the_local_apis_own_urls_whatever_the_host_header(
    make_stack: Callable[..., Stack],
) -> None:
    """Location, Content-Location and status_url are built from the local API's address
    (its context's domainName), never from the Host or X-Forwarded-Proto a client sent."""
    stack = make_stack(worker=False)
    hostile = {"Host": "evil.example", "X-Forwarded-Proto": "javascript"}

    heavy = requests.post(f"{stack.url}/heavy", json={"n": 5}, headers=hostile, timeout=30)

    assert heavy.status_code == 202, heavy.text
    expected = f"{stack.url}/jobs/{heavy.json()['job_id']}"
    assert heavy.headers["Location"] == heavy.json()["status_url"] == expected
