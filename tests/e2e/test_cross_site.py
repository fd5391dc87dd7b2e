"""Cross-site requests and links on a live local stack (``make run``'s processes, over
real HTTP): another site's POST is refused and creates or changes nothing, curl, the CLI
and the API's own pages keep working, and links are the local API's own URLs whatever
Host header a request carried."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from infra.browser import chromium
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


# What a page of another site runs: a simple request (no preflight) with a text/plain body.
SIMPLE_POST = """async ([url, body]) => {
    await fetch(url, {method: "POST", mode: "no-cors", body,
                      headers: {"Content-Type": "text/plain"}});
}"""


@contextmanager
def another_site() -> Iterator[str]:
    """A page served from this machine as another site (localhost at a port of its own,
    while the API is 127.0.0.1: a real server, as Chromium's private-network rules want
    one for a page that calls the loopback interface); its URL."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><p>another site</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_page_of_another_site_cannot_submit_in_a_real_browser(
    make_stack: Callable[..., Stack],
) -> None:
    """Chromium sends what it sends (Origin, Sec-Fetch-Site): a page of another origin on
    this machine (localhost at another port: loopback, so no private-network rule stops
    the request before it arrives) submits nothing; the API's own page submits."""
    stack = make_stack(worker=False)
    with another_site() as elsewhere, chromium() as browser:
        tab = browser.new_page()
        tab.goto(f"{elsewhere}/")
        tab.evaluate(SIMPLE_POST, [f"{stack.url}/jobs", JOB])
        tab.evaluate(SIMPLE_POST, [f"{stack.url}/heavy", '{"n": 5}'])
        assert listed(stack) == []

        tab.goto(f"{stack.url}/")  # the dashboard, served by the API itself
        tab.evaluate(SIMPLE_POST, [f"{stack.url}/jobs", JOB])
        assert len(listed(stack)) == 1


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
