"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

Two tests run against a real local stack (``make_stack``): one submits a heavyLoad job
through the form and sees it succeed, then cancels a running job with its button, with
GET /fast timed beside it; the other runs a countPrimes job, retries a cancelled one and
filters the list by kind. The others serve the page and a scripted API through
Playwright's request interception, under a stage prefix as API Gateway does, to check
what a real stack cannot easily produce: hostile text in the API's answers, a missing API
key, a hidden tab, a usage plan's 429, exact latencies. The scripted stage has no GET
/kinds unless a test gives it kinds, so these tests also hold the page's n form (an
older stage's); tests/e2e/test_dashboard_kinds.py tests the kinds form against it.
Those about pacing run the page on Playwright's fake clock, so a minute of polling takes
a few seconds and no assertion depends on how fast this machine is.

Chromium must be installed (``apt-get install -y chromium``; ``.ci/run`` does it): if it
is missing these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, Request, Response, Route, expect

from chalicelib import dashboard, openapi
from chalicelib.config import Auth, Settings
from infra.browser import ChromiumMissing, chromium
from infra.deploy.access import Throttle
from infra.emulator import free_port
from tests.e2e.conftest import Stack
from tests.speed import iterations_per_second

# A second or so of counting, and a job far longer than the test.
SHORT_N = iterations_per_second()  # about a second of work, measured
LONG_N = 10_000_000_000
PHONE = {"width": 390, "height": 844}
IAM_SETTINGS = Settings(table_name="t", queue_name="q", delay_queue_name="d", stage="dev")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@dataclass
class Console:
    """What the page said on its console: a CSP refusal or a script error shows here."""

    messages: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        # The browser reports each 4xx/5xx answer; those the test asks for are expected.
        return [m for m in self.messages if "Failed to load resource" not in m]


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    console = Console()
    opened.on(
        "console",
        lambda m: console.messages.append(m.text) if m.type in ("error", "warning") else None,
    )
    opened.on("pageerror", lambda error: console.messages.append(f"uncaught: {error}"))
    yield opened, console
    context.close()


def test_chromium_missing_is_a_clear_failure(tmp_path: Path) -> None:
    with (
        pytest.raises(ChromiumMissing, match=r"apt-get install -y chromium"),
        chromium(tmp_path / "no-chromium"),
    ):
        pass


# --- against a real local stack --------------------------------------------------------


def test_submit_follow_and_cancel_jobs_in_the_browser(
    make_stack: Callable[..., Stack], page: tuple[Page, Console], tmp_path: Path
) -> None:
    stack = make_stack()
    tab, console = page
    tab.goto(f"{stack.url}/")
    expect(tab.locator("#live-state")).to_contain_text("Live")
    expect(tab.get_by_label("Job kind")).to_have_value("heavyLoad")  # from GET /kinds
    n_field = kind_field(tab, "n")

    # Submit from the keyboard: type n with separators, press Enter.
    n_field.fill(f"{SHORT_N:_}")
    with tab.expect_response(posted_job) as posted:
        n_field.press("Enter")
    assert posted.value.status == 202
    assert posted.value.request.post_data_json == {"kind": "heavyLoad", "input": {"n": SHORT_N}}
    short_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{short_id}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".result")).to_have_text(f"{SHORT_N:,}")
    expect(row.locator(".progress-text")).to_have_text("100%")
    # Seconds, with a tenth under 10 s ("1.4 s"; a loaded machine may take "11 s").
    expect(row.locator(".run-time")).to_have_text(re.compile(r"^(\d\.\d|\d\d+) s$"))
    expect(row.get_by_role("button")).to_have_count(0)
    expect(tab.locator("#announcer")).to_contain_text(f"Job {short_id[:8]} succeeded")

    # A job far longer than the test: cancel it with its button once it runs.
    n_field.fill(str(LONG_N))
    with tab.expect_response(posted_job) as posted:
        tab.get_by_role("button", name="Submit job").click()
    long_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{long_id}"]')
    expect(row.locator(".status")).to_have_text("running", timeout=30_000)
    expect(row.locator(".progress-text")).to_contain_text("left", timeout=10_000)
    assert tab.locator("tbody tr").first.get_attribute("data-job-id") == long_id  # newest first
    # Beside the running job, GET /fast as timed from the page while it runs.
    expect(tab.locator("#now-running")).to_contain_text(f"Job {long_id[:8]}: ")
    expect(tab.locator("#now-running")).to_contain_text("left")
    expect(tab.locator("#fast-count")).not_to_have_text(re.compile(r"^[01]$"))
    for readout in ("#fast-last", "#fast-p50", "#fast-p99"):
        expect(tab.locator(readout)).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))

    row.get_by_role("button", name=f"Cancel job {long_id[:8]}").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    # Its Cancel button gone; a cancelled job can be retried.
    expect(row.get_by_role("button")).to_have_accessible_name(f"Retry job {long_id[:8]}")
    expect(tab.locator("#announcer")).to_contain_text(f"Job {long_id[:8]} is cancelled")
    assert stack.job(long_id)["status"] == "cancelled"

    tab.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    tab.set_viewport_size(PHONE)
    expect(row.locator(".status")).to_be_visible()
    expect(tab.locator("#fast-p99")).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    tab.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)
    assert console.errors() == []


def test_count_primes_and_retry_a_cancelled_job_in_the_browser(
    make_stack: Callable[..., Stack], page: tuple[Page, Console]
) -> None:
    stack = make_stack()
    tab, console = page
    tab.goto(f"{stack.url}/")
    tab.get_by_label("Job kind").select_option("countPrimes")
    below = kind_field(tab, "below")
    below.fill("1_000_000")
    with tab.expect_response(posted_job) as posted:
        below.press("Enter")
    assert posted.value.status == 202
    job_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".kind-name")).to_have_text("countPrimes")
    expect(row.locator(".input-summary")).to_have_text("below = 1,000,000")
    expect(row.locator(".result")).to_have_text("count = 78,498")  # pi(10^6)

    # A job far longer than the test, cancelled, then retried: the same kind and input.
    below.fill(str(10**10))
    with tab.expect_response(posted_job) as posted:
        below.press("Enter")
    long_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{long_id}"]')
    row.get_by_role("button", name=f"Cancel job {long_id[:8]}").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    with tab.expect_response(lambda r: r.url.endswith(f"/jobs/{long_id}/retry")) as retried:
        row.get_by_role("button", name=f"Retry job {long_id[:8]}").click()
    assert retried.value.status == 202
    new_id = retried.value.json()["job_id"]
    new_row = tab.locator(f'tr[data-job-id="{new_id}"]')
    expect(new_row.locator(".retry-of")).to_have_text(f"retry of {long_id[:8]}")
    expect(new_row.locator(".input-summary")).to_have_text("below = 10,000,000,000")
    assert stack.job(new_id)["retry_of"] == long_id
    new_row.get_by_role("button", name=f"Cancel job {new_id[:8]}").click()
    expect(new_row.locator(".status")).to_have_text("cancelled")

    # The kind filter: this stack has run countPrimes jobs only.
    with tab.expect_response(lambda r: "kind=heavyLoad" in r.url):
        tab.get_by_label("Kind", exact=True).select_option("heavyLoad")
    expect(tab.locator("#empty")).to_be_visible()
    expect(tab.locator("tbody tr")).to_have_count(0)
    with tab.expect_response(lambda r: "kind=countPrimes" in r.url):
        tab.get_by_label("Kind", exact=True).select_option("countPrimes")
    expect(tab.locator("tbody tr")).to_have_count(3)
    assert console.errors() == []


def test_on_a_stage_with_keys_a_client_sees_its_own_jobs_in_the_browser(
    make_stack: Callable[..., Stack], page: tuple[Page, Console]
) -> None:
    stack = make_stack(keyed=True)
    alice, bob = stack.api_key("alice"), stack.api_key("bob")
    bobs = requests.post(
        f"{stack.url}/heavy", json={"n": 1}, headers={"x-api-key": bob}, timeout=30
    ).json()
    tab, _ = page
    tab.goto(f"{stack.url}/")
    key_field = tab.get_by_label(KEY_LABEL)
    expect(key_field).to_have_attribute("aria-invalid", "true")  # no key: 403 Forbidden
    key_field.fill(alice)
    n_field = kind_field(tab, "n")
    n_field.fill("1000")
    with tab.expect_response(posted_job) as posted:
        n_field.press("Enter")
    job_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".client")).to_have_text("alice")
    expect(tab.locator("tbody tr")).to_have_count(1)  # not bob's
    with tab.expect_response(lambda r: r.url.endswith(f"/jobs/{job_id}")) as read:
        row.get_by_role("link", name=f"Details of job {job_id[:8]}").click()
    assert read.value.status == 200 and read.value.request.headers["x-api-key"] == alice
    expect(tab.locator('#job-detail [data-field="client"]')).to_have_text("alice")
    tab.goto(f"{stack.url}/#job={bobs['job_id']}")  # bob's: not found, as an unknown id
    expect(tab.locator("#detail-message")).to_contain_text("No job with id")


def posted_job(response: Response) -> bool:
    """POST /jobs's answer (GET /jobs polls the same path)."""
    return response.request.method == "POST" and urlsplit(response.url).path.endswith("/jobs")


def kind_field(tab: Page, label: str) -> Locator:
    """A field of the form generated from the kind's input_schema, by its label (a required
    one's star is hidden from screen readers, which hear aria-required instead)."""
    return tab.locator("#kind-fields").get_by_label(re.compile(rf"^{re.escape(label)}( \*)?$"))


# --- against a scripted API, under a stage prefix ----------------------------------------

JOB_ID = "0b7f2c9e-5d1a-4c3e-9f00-2a6b8c4d1e7f"
NEW_JOB_ID = "7e1d4c8b-6a2b-4f00-9e3c-1a5d2c9f7b0e"  # what POST /jobs and retries create


def fake_job(**overrides: Any) -> dict[str, Any]:
    job = {
        "job_id": JOB_ID,
        "status": "failed",
        "n": 42,
        "progress": 0.5,
        "result": None,
        "error": "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>",
        "attempts": 5,
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:02.000Z",
        "finished_at": "2026-01-01T00:00:05.500Z",
    }
    return {**job, **overrides}


@dataclass
class FakeStage:
    """The page at http://127.0.0.1:<port>/dev, its API behind it; nothing else answers.

    The port is a free loopback port: were interception to miss a request, it would be
    refused locally, never sent anywhere.
    """

    origin: str
    jobs: list[dict[str, Any]]
    requests: list[Request] = field(default_factory=list)
    # A stage with keys: every /jobs request and POST /heavy without this x-api-key is
    # refused as API Gateway refuses it, 403 {"message": "Forbidden"}; one with another key
    # is answered ``other_key_answer`` instead, if set (the API's own refusals).
    require_key: str | None = None
    other_key_answer: tuple[int, dict[str, Any]] | None = None
    # GET /fast: answered at once, or held (in arrival order) for the test to answer.
    hold_fast: bool = False
    held_fast: list[Route] = field(default_factory=list)
    # GET /jobs: the next this many are answered 429 (as a usage plan does), with this
    # Retry-After header if set.
    throttle_next: int = 0
    retry_after: str | None = None
    # GET /kinds' list; None is an older stage without it (API Gateway answers an unknown
    # path 403). POST /jobs and /jobs/{id}/retry answer 202, or the scripted error.
    kinds: list[dict[str, Any]] | None = None
    submit_error: tuple[int, dict[str, Any]] | None = None
    submit_error_headers: dict[str, str] = field(default_factory=dict)
    # GET /jobs "paused": the worker is paused (make pause).
    paused: bool = False
    # An IAM stage: GET /openapi.json declares SigV4, and every unsigned request about jobs
    # is refused as API Gateway refuses it, 403 {"message": "Missing Authentication Token"}.
    iam: bool = False

    def handle(self, route: Route, request: Request) -> None:
        self.requests.append(request)
        path = urlsplit(request.url).path
        page = dashboard.page()
        if path in ("/dev", "/dev/") and request.method == "GET":
            route.fulfill(status=200, body=page.html, headers=page.headers)
        elif path == "/dev/openapi.json" and self.iam:
            self._json(route, 200, openapi.document(IAM_SETTINGS, Auth.IAM))
        elif self.iam and (path in ("/dev/heavy", "/dev/jobs") or path.startswith("/dev/jobs/")):
            self._json(route, 403, {"message": "Missing Authentication Token"})
        elif self._refused(path, request):
            key = request.headers.get("x-api-key")
            if key and self.other_key_answer:
                self._json(route, *self.other_key_answer)
            else:
                self._json(route, 403, {"message": "Forbidden"})
        elif path == "/dev/jobs" and request.method == "GET" and self.throttle_next:
            self.throttle_next -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            route.fulfill(
                status=429,
                body=json.dumps({"message": "Too Many Requests"}),
                content_type="application/json",
                headers=headers,
            )
        elif path == "/dev/jobs" and request.method == "GET":
            self._json(route, 200, {"jobs": self.jobs, "next": None, "paused": self.paused})
        elif re.fullmatch(r"/dev/jobs/[^/]+", path) and request.method == "GET":
            job_id = unquote(path.split("/")[3])
            found = [job for job in self.jobs if job["job_id"] == job_id]
            if found:
                self._json(route, 200, found[0])
            else:
                message = f"No job with id {job_id!r}."
                self._json(route, 404, {"error": {"code": "job_not_found", "message": message}})
        elif path == "/dev/fast" and request.method == "GET":
            if self.hold_fast:
                self.held_fast.append(route)
            else:
                self._json(route, 200, {"message": "I'm fast"})
        elif path == "/dev/kinds" and request.method == "GET" and self.kinds is not None:
            self._json(route, 200, {"kinds": self.kinds})
        elif (
            self.kinds is not None
            and request.method == "POST"
            and (path == "/dev/jobs" or re.fullmatch(r"/dev/jobs/[^/]+/retry", path))
        ):
            self._submit(route, request, path)
        elif path == "/dev/heavy" and request.method == "POST":
            n = json.loads(request.post_data or "{}")["n"]
            self._json(route, 202, {"job_id": JOB_ID, "status": "queued", "n": n})
        else:
            self._json(route, 403, {"message": "Missing Authentication Token"})

    def _refused(self, path: str, request: Request) -> bool:
        keyed = path == "/dev/heavy" or path == "/dev/jobs" or path.startswith("/dev/jobs/")
        key = request.headers.get("x-api-key")
        return bool(self.require_key) and keyed and key != self.require_key

    def _submit(self, route: Route, request: Request, path: str) -> None:
        if self.submit_error:
            self._json(route, *self.submit_error, headers=self.submit_error_headers)
        elif path == "/dev/jobs":
            body = json.loads(request.post_data or "{}")
            job = {"job_id": NEW_JOB_ID, "status": "queued", **body}
            self._json(route, 202, job)
        else:  # a retry: a new job of the same kind and input
            retried = path.split("/")[3]
            (old,) = [job for job in self.jobs if job["job_id"] == retried]
            job = fake_job(
                job_id=NEW_JOB_ID, status="queued", retry_of=retried, error=None, progress=0
            )
            job.update(kind=old.get("kind"), input=old.get("input"))
            self.jobs = [job, *self.jobs]
            self._json(route, 202, job)

    @staticmethod
    def _json(
        route: Route, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        route.fulfill(
            status=status, body=json.dumps(body), content_type="application/json", headers=headers
        )

    def api_calls(self, path: str, since: int = 0) -> list[Request]:
        return [r for r in self.requests[since:] if urlsplit(r.url).path == path]

    def keyed(self, since: int = 0) -> list[Request]:
        """Requests that count against a usage plan: those made with an API key."""
        return [r for r in self.requests[since:] if "x-api-key" in r.headers]


@pytest.fixture
def stage(page: tuple[Page, Console]) -> FakeStage:
    tab, _ = page
    fake = FakeStage(origin=f"http://127.0.0.1:{free_port()}", jobs=[fake_job()])
    tab.route(f"{fake.origin}/**", fake.handle)
    return fake


@pytest.mark.parametrize("location", ["/dev", "/dev/"])
def test_under_a_stage_prefix_every_call_stays_under_it(
    page: tuple[Page, Console], stage: FakeStage, location: str
) -> None:
    tab, console = page
    tab.goto(stage.origin + location)
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()
    tab.get_by_label("Loop count (n)").fill("1,000")
    with tab.expect_request(lambda r: r.method == "POST") as posted:
        tab.get_by_role("button", name="Submit job").click()
    assert posted.value.post_data == '{"n": 1000}'
    expect(tab.locator("#form-message")).to_have_text("Queued job 0b7f2c9e (n = 1,000).")

    paths = [urlsplit(r.url).path for r in stage.requests]
    assert paths[0] == location and paths[1:]
    assert all(p.startswith("/dev/") for p in paths[1:]), paths
    assert {urlsplit(r.url).path for r in stage.requests[1:]} == {
        "/dev/kinds",  # this stage has none: the page falls back to the n form
        "/dev/schedules",  # nor schedules: the page hides their panel
        "/dev/openapi.json",  # which security scheme the stage has (none here)
        "/dev/jobs",
        "/dev/heavy",
        "/dev/fast",
    }
    assert console.errors() == []


def test_text_from_the_api_is_shown_as_text(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, console = page
    stage.jobs = [fake_job(), fake_job(job_id="<i>x</i>", status="<script>alert(1)</script>")]
    tab.goto(f"{stage.origin}/dev/")
    row = tab.locator(f'tr[data-job-id="{JOB_ID}"]')
    expect(row.locator(".result")).to_have_text(fake_job()["error"])
    expect(tab.locator("tbody tr").nth(1).locator(".status")).to_have_text(
        "<script>alert(1)</script>"
    )
    assert tab.locator("main img, main b, main i, tbody script").count() == 0
    assert tab.title() == "heavy-jobs"
    # Durations come from the job's own timestamps once it finished.
    expect(row.locator(".queue-wait")).to_have_text("2.0 s")
    expect(row.locator(".run-time")).to_have_text("3.5 s")
    assert console.errors() == []


def test_a_paused_worker_shows_a_banner_until_it_is_resumed(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    stage.jobs = [fake_job(status="queued", finished_at=None, result=None, error=None)]
    stage.paused = True
    tab.goto(f"{stage.origin}/dev/")
    # A status region, so a screen reader announces it when it appears; readable text.
    banner = tab.get_by_role("status").filter(has_text="Paused")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Queued jobs wait in the queue, none is lost")
    colors = banner.evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    assert contrast(*colors) >= 4.5  # WCAG AA for normal text
    tab.set_viewport_size(PHONE)
    expect(banner).to_be_visible()

    stage.paused = False
    tab.get_by_label("Show").select_option("queued")  # a refresh now, not at the next tick

    expect(tab.locator("#paused-banner")).to_be_hidden()
    assert console.errors() == []


def test_on_an_iam_stage_the_page_says_it_needs_a_signing_proxy(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    stage.iam = True
    tab.goto(f"{stage.origin}/dev/")
    banner = tab.locator("#iam-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("This stage authenticates with IAM")
    expect(banner).to_contain_text("aws-sigv4-proxy --name execute-api")
    expect(banner).to_contain_text("jobs --auth iam")
    expect(tab.locator("#key-settings")).to_be_hidden()  # no API key to give here
    colors = banner.evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    assert contrast(*colors) >= 4.5
    assert console.errors() == []


def test_on_a_stage_without_iam_there_is_no_such_note(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()
    expect(tab.locator("#iam-banner")).to_be_hidden()
    expect(tab.locator("#key-settings")).to_be_visible()


def contrast(foreground: str, background: str) -> float:
    """WCAG 2's contrast ratio of two CSS rgb() colours."""

    def luminance(css: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


KEY = "secret-key-1"
KEY_LABEL = "API key (needed on a stage with keys, such as prod)"
KEY_STORE = "heavy-jobs:api-key:/dev/"


def stored(tab: Page) -> dict[str, str | None]:
    """The key where the page keeps it: the browser session's store and the device's."""
    return {
        store: tab.evaluate(f"{store}.getItem({KEY_STORE!r})")
        for store in ("sessionStorage", "localStorage")
    }


@contextmanager
def open_in_a_new_context(browser: Browser, stage: FakeStage, storage_state: Any) -> Iterator[Page]:
    """The page in a fresh browser context holding ``storage_state`` (cookies and
    localStorage, never sessionStorage): this browser, restarted."""
    context = browser.new_context(storage_state=storage_state)
    context.set_default_timeout(10_000)
    context.route(f"{stage.origin}/**", stage.handle)
    tab = context.new_page()
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#live-state")).not_to_have_text("Connecting…")
    try:
        yield tab
    finally:
        context.close()


def test_the_key_is_kept_for_the_session_unless_remembered_on_this_device(
    browser: Browser, page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    stage.require_key = KEY
    tab.goto(f"{stage.origin}/dev/")
    key_field = tab.get_by_label(KEY_LABEL)
    remember = tab.get_by_label("Remember on this device")
    # Without a key even the list is refused (API Gateway's own 403): the key field says so.
    expect(key_field).to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#api-key-problem")).to_contain_text("this stage needs an API key")
    expect(tab.locator("#api-key-problem")).to_contain_text("make api-key STAGE=… CLIENT=…")
    expect(remember).not_to_be_checked()
    expect(tab.locator("#api-key-help")).to_contain_text("Kept for this browser session only")

    key_field.fill(KEY)
    expect(key_field).not_to_have_attribute("aria-invalid", "true")
    tab.get_by_label("Loop count (n)").fill("5")
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_have_text("Queued job 0b7f2c9e (n = 5).")
    assert stage.api_calls("/dev/heavy")[-1].headers["x-api-key"] == KEY
    assert stored(tab) == {"sessionStorage": KEY, "localStorage": None}

    tab.reload()  # the same browser session: the key stays
    expect(tab.get_by_label(KEY_LABEL)).to_have_value(KEY)
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()
    with open_in_a_new_context(browser, stage, tab.context.storage_state()) as again:
        expect(again.get_by_label(KEY_LABEL)).to_have_value("")  # a new session: gone

    tab.get_by_text("API key", exact=True).click()  # open the <details>
    tab.get_by_label("Remember on this device").check()
    assert stored(tab) == {"sessionStorage": None, "localStorage": KEY}
    with open_in_a_new_context(browser, stage, tab.context.storage_state()) as again:
        expect(again.get_by_label(KEY_LABEL)).to_have_value(KEY)
        expect(again.get_by_label("Remember on this device")).to_be_checked()
        expect(again.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()

    # Unticked: off the device at once, still here for this session.
    tab.get_by_label("Remember on this device").uncheck()
    assert stored(tab) == {"sessionStorage": KEY, "localStorage": None}
    with open_in_a_new_context(browser, stage, tab.context.storage_state()) as again:
        expect(again.get_by_label(KEY_LABEL)).to_have_value("")
    tab.get_by_role("button", name="Forget key").click()
    assert stored(tab) == {"sessionStorage": None, "localStorage": None}
    assert [e for e in console.errors() if "Forbidden" not in e] == []


def test_a_key_an_older_page_remembered_stays_remembered(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    stage.require_key = KEY
    tab.add_init_script(f"localStorage.setItem({KEY_STORE!r}, {KEY!r})")  # the older page's
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.get_by_label("Remember on this device")).to_be_checked()
    expect(tab.get_by_label(KEY_LABEL)).to_have_value(KEY)
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()
    assert stage.api_calls("/dev/jobs")[0].headers["x-api-key"] == KEY


@pytest.mark.parametrize(
    ("key", "other_key_answer", "problem"),
    [
        (None, None, "Forbidden: this stage needs an API key: enter yours under “API key”, or ask"
         " the operator for one (make api-key STAGE=… CLIENT=…)."),
        ("wrong", None, "Forbidden: this API key is not accepted here; check it, or ask the"
         " operator for one (make api-key STAGE=… CLIENT=…)."),
        ("of-no-client",
         (403, {"error": {"code": "unknown_key", "message": "The key names no client."}}),
         "The key names no client. Check the key, or ask the operator for one (make api-key"
         " STAGE=… CLIENT=…)."),
    ],
)  # fmt: skip
def test_a_refused_key_is_marked_on_the_key_field(
    page: tuple[Page, Console],
    stage: FakeStage,
    key: str | None,
    other_key_answer: tuple[int, dict[str, Any]] | None,
    problem: str,
) -> None:
    tab, _ = page
    stage.require_key, stage.other_key_answer = KEY, other_key_answer
    if key:
        tab.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {key!r})")
    tab.goto(f"{stage.origin}/dev/")
    key_field = tab.get_by_label(KEY_LABEL)
    expect(key_field).to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#api-key-problem")).to_contain_text(problem)
    expect(tab.locator("#key-settings")).to_have_attribute("open", "")
    expect(tab.locator("#live-state")).to_contain_text(problem)

    n_field = tab.get_by_label("Loop count (n)")
    n_field.fill("5")
    n_field.press("Enter")
    expect(tab.locator("#form-message")).to_contain_text(f"Not submitted: {problem}")
    expect(key_field).to_be_focused()
    expect(n_field).not_to_have_attribute("aria-invalid", "true")  # the number was fine

    # The right key: the mark goes as soon as the key changes, and the list comes.
    key_field.fill(KEY)
    expect(key_field).not_to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#api-key-problem")).to_be_hidden()
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_have_text("Queued job 0b7f2c9e (n = 5).")
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()


def test_each_job_shows_its_client(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, console = page
    other = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
    # The second has no client: a stage older than clients.
    stage.jobs = [fake_job(client="alice"), fake_job(job_id=other)]
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.get_by_role("columnheader", name="Client")).to_be_visible()
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"] .client')).to_have_text("alice")
    expect(tab.locator(f'tr[data-job-id="{other}"] .client')).to_have_text("—")
    tab.set_viewport_size(PHONE)
    client = tab.locator(f'tr[data-job-id="{JOB_ID}"] .client')
    expect(client).to_have_attribute("data-label", "Client")  # the phone's label for it
    expect(client).to_be_visible()
    assert console.errors() == []


@pytest.mark.parametrize("width", [1280, 1180, 1179, 1101, 1100, 1000, PHONE["width"]])
def test_the_jobs_and_their_clients_fit_the_window_at_any_width(
    page: tuple[Page, Console], stage: FakeStage, width: int
) -> None:
    # Widest content per column: the longest client a stage without keys shows, n of ten
    # digits, a nine-digit result, a running job's time left, a Cancel button.
    stage.jobs = [
        fake_job(job_id=f"{i}b3f4dbe-5d1a-4c3e-9f00-2a6b8c4d1e7f", client="anonymous",
                 kind="heavyLoad", input={"n": n}, status=status, error=None, progress=0.37,
                 result=n if status == "succeeded" else None, finished_at=finished)
        for i, (n, status, finished) in enumerate([
            (10**10, "queued", None), (4 * 10**9, "running", None),
            (2 * 10**8, "succeeded", "2026-01-01T00:01:05.000Z"),
        ])
    ]  # fmt: skip
    tab, _ = page
    tab.set_viewport_size({"width": width, "height": 800})
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("tbody tr .client")).to_have_text(["anonymous"] * 3)
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    table, card = tab.evaluate(
        "() => [document.getElementById('jobs').scrollWidth,"
        " document.getElementById('jobs').closest('.card').clientWidth]"
    )
    assert table <= card


def test_the_key_never_follows_a_redirect_to_another_origin(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    # Two guards, each enough alone: the page's fetches refuse redirects, and its CSP
    # (connect-src 'self') refuses any request to another origin.
    tab, _ = page
    elsewhere = f"http://127.0.0.1:{free_port()}"
    arrived: list[Request] = []

    def collect(route: Route, request: Request) -> None:
        arrived.append(request)
        route.fulfill(status=200, body='{"jobs": []}', content_type="application/json")

    tab.route(f"{elsewhere}/**", collect)
    tab.route(
        f"{stage.origin}/dev/jobs?*",
        lambda route: route.fulfill(status=307, headers={"Location": f"{elsewhere}/jobs"}),
    )
    tab.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {KEY!r})")
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#live-state")).to_contain_text("The API cannot be reached.")
    assert arrived == []


def test_a_jobs_detail_is_read_with_the_key(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, console = page
    stage.require_key = KEY
    stage.jobs = [fake_job(client="alice", retry_of=NEW_JOB_ID)]
    tab.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {KEY!r})")
    tab.goto(f"{stage.origin}/dev/")
    with tab.expect_request(lambda r: urlsplit(r.url).path == f"/dev/jobs/{JOB_ID}") as read:
        tab.get_by_role("link", name=f"Details of job {JOB_ID[:8]}").click()
    assert read.value.headers["x-api-key"] == KEY
    detail = tab.locator("#job-detail")
    expect(detail).to_be_focused()
    expect(detail.locator("#detail-id")).to_have_text(JOB_ID)
    expect(detail.locator('[data-field="client"]')).to_have_text("alice")
    expect(detail.locator('[data-field="error"]')).to_have_text(fake_job()["error"])
    expect(detail.locator('[data-field="retry of"]')).to_have_text(NEW_JOB_ID)
    assert tab.locator("main img, main b").count() == 0

    # Another client's job is not found, as an unknown one is: the API's message shows.
    tab.goto(f"{stage.origin}/dev/#job={NEW_JOB_ID}")
    expect(detail.locator("#detail-message")).to_have_text(f"No job with id {NEW_JOB_ID!r}.")
    tab.get_by_role("button", name="Close").click()
    expect(detail).to_be_hidden()
    # Every request about jobs carried the key; GET /fast and /kinds (not keyed) did not.
    jobs = [r for r in stage.requests if urlsplit(r.url).path.startswith("/dev/jobs")]
    assert jobs and all(r.headers.get("x-api-key") == KEY for r in jobs)
    unkeyed = stage.api_calls("/dev/fast") + stage.api_calls("/dev/kinds")
    assert unkeyed and not [r for r in unkeyed if "x-api-key" in r.headers]
    assert [e for e in console.errors() if "404" not in e] == []


def test_a_bad_n_is_explained_not_sent(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, _ = page
    tab.goto(f"{stage.origin}/dev/")
    n_field = tab.get_by_label("Loop count (n)")
    n_field.fill("3.5e8")
    n_field.press("Enter")
    expect(tab.locator("#form-message")).to_have_text(
        "Enter n as a whole number, such as 300000000."
    )
    expect(n_field).to_be_focused()
    assert stage.api_calls("/dev/heavy") == []


def test_polling_pauses_while_the_tab_is_hidden(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    stage.jobs = [running_job()]  # something to follow: the page's busy pace
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#live-state")).to_contain_text("Live")
    # Two polls of each while visible (about one a second), waited for as a condition;
    # how long they took on this machine, now, sizes the hidden window below.
    began = time.monotonic()
    pump_until(
        tab,
        lambda: len(stage.api_calls("/dev/jobs")) >= 2 and len(stage.api_calls("/dev/fast")) >= 2,
        "two polls of /jobs and /fast while visible",
    )
    two_polls = time.monotonic() - began

    _set_hidden(tab, True)
    expect(tab.locator("#live-state")).to_have_text("Paused while this tab is hidden.")
    before = len(stage.requests)
    # Hidden for twice as long as two visible polls took (at least 2.5 s): a page that
    # kept polling would have polled here, at the pace it just showed.
    tab.wait_for_timeout(max(2500, 2000 * two_polls))
    assert stage.api_calls("/dev/jobs", since=before) == []
    assert stage.api_calls("/dev/fast", since=before) == []

    _set_hidden(tab, False)
    expect(tab.locator("#live-state")).to_contain_text("Live")
    assert len(stage.api_calls("/dev/jobs", since=before)) >= 1
    assert len(stage.api_calls("/dev/fast", since=before)) >= 1


def pump_until(tab: Page, condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Wait for ``condition`` through Playwright, not time.sleep: the sync API runs the
    route handler (our fake API) only while a Playwright call is pumping its events."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        tab.wait_for_timeout(50)


def _set_hidden(tab: Page, hidden: bool) -> None:
    # Headless Chromium has no real tab switching: fake the Page Visibility API.
    tab.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
            Object.defineProperty(document, "visibilityState",
                {value: hidden ? "hidden" : "visible", configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


# The fake clock's start, and a job that started running a second before it.
CLOCK_START = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)


def running_job(**overrides: Any) -> dict[str, Any]:
    return fake_job(
        status="running",
        progress=0.25,
        error=None,
        created_at="2027-01-15T07:59:58.000Z",
        started_at="2027-01-15T07:59:59.000Z",
        finished_at=None,
        **overrides,
    )


# --- pacing, on Playwright's fake clock ---------------------------------------------------

STEP_MS = 500  # every pace of the page is a multiple of this


def start_on_a_paused_clock(tab: Page, stage: FakeStage, key: str | None = None) -> None:
    """Load the page with its clock stopped: time moves only when the test advances it."""
    if key:
        tab.add_init_script(f"localStorage.setItem('heavy-jobs:api-key:/dev/', {key!r})")
    # Installed well before CLOCK_START: pause_at only jumps forward, and on a busy machine
    # the installed clock may already have run a little by the time it is called.
    tab.clock.install(time=CLOCK_START - timedelta(hours=1))
    tab.clock.pause_at(CLOCK_START)
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#live-state")).to_have_attribute("data-poll", "waiting")


def advance(tab: Page, stage: FakeStage, ms: int) -> list[int]:
    """Advance the page's clock by ``ms``, letting each poll it starts finish before going
    on; return when (ms into this call) each GET /jobs went out."""
    sent: list[int] = []
    seen = len(stage.api_calls("/dev/jobs"))
    for step in range(1, ms // STEP_MS + 1):
        tab.clock.run_for(STEP_MS)
        expect(tab.locator("#live-state")).to_have_attribute("data-poll", "waiting")
        now = len(stage.api_calls("/dev/jobs"))
        sent += [step * STEP_MS] * (now - seen)
        seen = now
    return sent


# The share of a key's steady rate (its usage plan's rate_limit, infra/deploy/access.py) that
# one open tab may use, so that submit and cancel always have room: a quarter while a
# job is queued or running, a thirtieth when there is nothing to follow.
BUSY_SHARE = 1 / 4
IDLE_SHARE = 1 / 30


def test_a_keyed_tab_polls_within_its_share_of_the_usage_plan(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    per_minute_allowed = Throttle().rate_limit * 60
    stage.jobs = [fake_job(status="succeeded", result=42, error=None)]
    start_on_a_paused_clock(tab, stage, key=KEY)

    # Idle: nothing queued or running.
    before = len(stage.requests)
    advance(tab, stage, 60_000)
    idle = len(stage.keyed(since=before))
    expect(tab.locator("#live-state")).to_contain_text("nothing running")

    # Busy: once a poll has seen the running job, a minute at the busy pace.
    stage.jobs = [running_job()]
    advance(tab, stage, 30_000)
    expect(tab.locator("#now-running")).to_contain_text("Job 0b7f2c9e: 25%")
    before = len(stage.requests)
    advance(tab, stage, 60_000)
    busy = len(stage.keyed(since=before))

    assert 1 <= idle <= IDLE_SHARE * per_minute_allowed, idle
    assert idle < busy <= BUSY_SHARE * per_minute_allowed, busy
    # Every keyed request was a poll, but for GET /schedules, read once when the page
    # opened (schedules are not polled); and the minute's GET /fast samples went without
    # the key: they are not metered.
    keyed = [urlsplit(r.url).path for r in stage.keyed()]
    assert set(keyed) == {"/dev/jobs", "/dev/schedules"}, keyed
    assert keyed.count("/dev/schedules") == 1
    # The sampler sets its next second's timer once a sample has answered; a sample still
    # in flight when the paused clock moves on (a loaded machine) costs that second, so the
    # minute holds up to 60 samples and, whatever the load, well over half of them.
    fast = stage.api_calls("/dev/fast", since=before)
    assert 30 <= len(fast) <= 61 and not [r for r in fast if "x-api-key" in r.headers]
    assert console.errors() == []


def test_without_a_key_a_busy_tab_keeps_following_every_second(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    stage.jobs = [running_job()]
    start_on_a_paused_clock(tab, stage)
    assert advance(tab, stage, 5_000) == [1000, 2000, 3000, 4000, 5000]


@pytest.mark.parametrize(("retry_after", "wait_ms"), [("5", 5000), (None, 2000)])
def test_a_429_slows_polling_and_the_page_says_so(
    page: tuple[Page, Console], stage: FakeStage, retry_after: str | None, wait_ms: int
) -> None:
    tab, console = page
    stage.jobs = [running_job()]
    start_on_a_paused_clock(tab, stage)
    pace = advance(tab, stage, 2_000)
    assert pace == [1000, 2000]  # the usual pace first

    stage.throttle_next, stage.retry_after = 1, retry_after
    assert advance(tab, stage, 1_000) == [1000]  # answered 429
    state = tab.locator("#live-state")
    expect(state).to_contain_text("Slowed down: this API key's request rate is used up")
    expect(state).to_contain_text(f"Next update in {wait_ms // 1000} s.")
    expect(state).not_to_have_class(re.compile("problem"))
    expect(tab.locator("#announcer")).to_contain_text("Slowed down")

    # The next poll waits as long as Retry-After says, or backs off (twice the pace).
    assert advance(tab, stage, wait_ms) == [wait_ms]
    expect(state).to_contain_text("Live")
    expect(tab.locator("#announcer")).to_have_text("Connection restored.")
    assert advance(tab, stage, 2_000) == [1000, 2000]  # and back to the usual pace
    assert console.errors() == []


def test_the_fast_readout_shows_the_last_minutes_p50_and_p99(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    stage.jobs = [running_job()]
    stage.hold_fast = True
    start_on_a_paused_clock(tab, stage)
    expect(tab.locator("#now-running")).to_have_text("Job 0b7f2c9e: 25%, 3.0 s left.")

    latencies = [12, 3, 7, 250, 5, 9, 4, 6, 8, 2]  # ms, answered in this order
    for count, latency in enumerate(latencies, start=1):
        if count > 1:
            tab.clock.run_for(1000)  # the next sample, a second after the last answer
        answer_fast_after(tab, stage, latency)
        expect(tab.locator("#fast-count")).to_have_text(str(count))
        expect(tab.locator("#fast-last")).to_have_text(
            f"{latency:.1f} ms" if latency < 10 else f"{latency} ms"
        )
    # Nearest rank over the ten: p50 is the 5th smallest, p99 the largest.
    expect(tab.locator("#fast-p50")).to_have_text("6.0 ms")
    expect(tab.locator("#fast-p99")).to_have_text("250 ms")
    points = tab.locator("#fast-line").get_attribute("points") or ""
    assert len(points.split()) == len(latencies)

    # A minute later (the tab hidden meanwhile), only the new sample counts.
    _set_hidden(tab, True)
    tab.clock.run_for(61_000)
    _set_hidden(tab, False)
    answer_fast_after(tab, stage, 3)
    expect(tab.locator("#fast-count")).to_have_text("1")
    expect(tab.locator("#fast-p99")).to_have_text("3.0 ms")

    # The phone layout keeps the readout on screen without sideways scrolling.
    tab.set_viewport_size(PHONE)
    expect(tab.locator("#fast-p99")).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert console.errors() == []


def answer_fast_after(tab: Page, stage: FakeStage, latency_ms: int) -> None:
    """Answer the page's pending GET /fast once ``latency_ms`` of its clock has passed."""
    pump_until(tab, lambda: bool(stage.held_fast), "the page's GET /fast")
    route = stage.held_fast.pop(0)
    tab.clock.run_for(latency_ms)
    route.fulfill(status=200, body='{"message": "I\'m fast"}', content_type="application/json")
