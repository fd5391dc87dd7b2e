"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

One test runs against a real local stack (``make_stack``): it submits a job through the
form and sees it succeed, then cancels a running job with its button. The others serve
the page and a scripted API through Playwright's request interception, under a stage
prefix as API Gateway does, to check what a real stack cannot easily produce: hostile
text in the API's answers, a missing API key, a hidden tab.

Chromium must be installed (``apt-get install -y chromium``; ``.ci/run`` does it): if it
is missing these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from chalicelib import dashboard
from infra.browser import ChromiumMissing, chromium
from infra.emulator import free_port
from tests.e2e.conftest import Stack

# A second or so of counting, and a job far longer than the test.
SHORT_N = 100_000_000
LONG_N = 10_000_000_000
PHONE = {"width": 390, "height": 844}


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
    n_field = tab.get_by_label("Loop count (n)")

    # Submit from the keyboard: type n with separators, press Enter.
    n_field.fill(f"{SHORT_N:_}")
    with tab.expect_response(lambda r: r.url.endswith("/heavy")) as posted:
        n_field.press("Enter")
    assert posted.value.status == 202
    short_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{short_id}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row.locator(".result")).to_have_text(f"{SHORT_N:,}")
    expect(row.locator(".progress-text")).to_have_text("100%")
    expect(row.locator(".run-time")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(row.get_by_role("button")).to_have_count(0)
    expect(tab.locator("#announcer")).to_contain_text(f"Job {short_id[:8]} succeeded")

    # A job far longer than the test: cancel it with its button once it runs.
    n_field.fill(str(LONG_N))
    with tab.expect_response(lambda r: r.url.endswith("/heavy")) as posted:
        tab.get_by_role("button", name="Submit job").click()
    long_id = posted.value.json()["job_id"]
    row = tab.locator(f'tr[data-job-id="{long_id}"]')
    expect(row.locator(".status")).to_have_text("running", timeout=30_000)
    expect(row.locator(".progress-text")).to_contain_text("left", timeout=10_000)
    assert tab.locator("tbody tr").first.get_attribute("data-job-id") == long_id  # newest first

    row.get_by_role("button", name=f"Cancel job {long_id[:8]}").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(tab.locator("#announcer")).to_contain_text(f"Job {long_id[:8]} is cancelled")
    assert stack.job(long_id)["status"] == "cancelled"

    tab.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    tab.set_viewport_size(PHONE)
    expect(row.locator(".status")).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    tab.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)
    assert console.errors() == []


# --- against a scripted API, under a stage prefix ----------------------------------------

JOB_ID = "0b7f2c9e-5d1a-4c3e-9f00-2a6b8c4d1e7f"


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
    require_key: str | None = None

    def handle(self, route: Route, request: Request) -> None:
        self.requests.append(request)
        path = urlsplit(request.url).path
        page = dashboard.page()
        if path in ("/dev", "/dev/") and request.method == "GET":
            route.fulfill(status=200, body=page.html, headers=page.headers)
        elif path == "/dev/jobs" and request.method == "GET":
            self._json(route, 200, {"jobs": self.jobs, "next": None})
        elif path == "/dev/heavy" and request.method == "POST":
            if self.require_key and request.headers.get("x-api-key") != self.require_key:
                self._json(route, 403, {"message": "Forbidden"})
            else:
                n = json.loads(request.post_data or "{}")["n"]
                self._json(route, 202, {"job_id": JOB_ID, "status": "queued", "n": n})
        else:
            self._json(route, 403, {"message": "Missing Authentication Token"})

    @staticmethod
    def _json(route: Route, status: int, body: dict[str, Any]) -> None:
        route.fulfill(status=status, body=json.dumps(body), content_type="application/json")

    def api_calls(self, path: str, since: int = 0) -> list[Request]:
        return [r for r in self.requests[since:] if urlsplit(r.url).path == path]


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
    assert {urlsplit(r.url).path for r in stage.requests[1:]} == {"/dev/jobs", "/dev/heavy"}
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


def test_api_key_is_kept_per_stage_and_sent(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, _ = page
    stage.require_key = "secret-key-1"
    tab.goto(f"{stage.origin}/dev/")
    n_field = tab.get_by_label("Loop count (n)")
    n_field.fill("5")
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_contain_text("needs an API key")
    expect(n_field).to_have_attribute("aria-invalid", "true")

    tab.get_by_text("API key", exact=True).click()  # open the <details>
    tab.get_by_label("API key (required to submit on the prod stage)").fill("secret-key-1")
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_have_text("Queued job 0b7f2c9e (n = 5).")
    assert stage.api_calls("/dev/heavy")[-1].headers["x-api-key"] == "secret-key-1"
    stored = tab.evaluate("localStorage.getItem('heavy-jobs:api-key:/dev/')")
    assert stored == "secret-key-1"

    tab.reload()
    expect(tab.get_by_label("API key (required to submit on the prod stage)")).to_have_value(
        "secret-key-1"
    )


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
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#live-state")).to_contain_text("Live")
    # Waiting through Playwright, not time.sleep: the sync API runs the route handler
    # (our fake API) only while a Playwright call is pumping its events.
    tab.wait_for_timeout(2200)
    assert len(stage.api_calls("/dev/jobs")) >= 2  # about one a second

    _set_hidden(tab, True)
    expect(tab.locator("#live-state")).to_have_text("Paused while this tab is hidden.")
    before = len(stage.requests)
    tab.wait_for_timeout(2500)
    assert stage.api_calls("/dev/jobs", since=before) == []

    _set_hidden(tab, False)
    expect(tab.locator("#live-state")).to_contain_text("Live")
    assert len(stage.api_calls("/dev/jobs", since=before)) >= 1


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
