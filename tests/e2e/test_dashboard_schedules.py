"""Jobs that run later and recurring schedules on the dashboard, in a real browser against a
scripted API under /dev (Playwright's request interception, as in test_dashboard.py).

The browser runs in Europe/Paris, so "in this browser's time zone" is not UTC: a Run at of
09:30 on 1 June 2030 (summer time, UTC+2) is sent as 07:30Z. The scripted stage answers
/schedules as the API reference describes them (a stage without them answers 403, as API
Gateway answers an unknown route: the panel stays hidden).
"""

# The browser fixture comes from test_dashboard.py: tests naming it as a parameter
# redefine the imported name, which is how pytest fixtures work.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from infra.emulator import free_port
from tests.e2e.test_dashboard import (  # noqa: F401 - browser: a fixture
    JOB_ID,
    NEW_JOB_ID,
    PHONE,
    Console,
    FakeStage,
    browser,
    fake_job,
    kind_field,
)
from tests.e2e.test_dashboard_kinds import KINDS

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
# 09:30 in Paris on a summer day, and the same moment as the API writes it.
LOCAL_RUN_AT = "2030-06-01T09:30"
RUN_AT = "2030-06-01T07:30:00.000Z"
RUN_AT_TEXT = "runs Jun 1, 2030, 9:30 AM"


def schedule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "kind": "countPrimes",
        "input": {"below": 1000},
        "schedule": "cron(0 2 * * ? *)",
        "timezone": "Europe/Paris",
        "state": "enabled",
        "client": "alice",
        "created_at": "2026-12-01T00:00:00.000Z",
        "next_fire_at": "2030-01-01T01:00:00.000Z",
        **overrides,
    }


@dataclass
class ScheduleStage(FakeStage):
    """FakeStage with /schedules: None is a stage without them (403, as an unknown route)."""

    schedules: list[dict[str, Any]] | None = None
    schedule_error: tuple[int, dict[str, Any]] | None = None

    def handle(self, route: Route, request: Request) -> None:
        path = urlsplit(request.url).path
        if self.schedules is None or not path.startswith("/dev/schedules"):
            super().handle(route, request)
            return
        self.requests.append(request)
        parts = [unquote(part) for part in path.split("/")[3:]]
        method = request.method
        found = [s for s in self.schedules if parts and s["name"] == parts[0]]
        if method == "GET" and not parts:
            self._json(route, 200, {"schedules": self.schedules})
        elif method == "POST" and not parts and self.schedule_error:
            self._json(route, *self.schedule_error)
        elif method == "POST" and not parts:
            made = schedule(**json.loads(request.post_data or "{}"))
            self.schedules = [*self.schedules, made]
            self._json(route, 201, made)
        elif not found:
            error = {"code": "schedule_not_found", "message": f"No schedule {parts[0]!r}."}
            self._json(route, 404, {"error": error})
        elif method == "POST" and parts[1:] in (["pause"], ["resume"]):
            found[0]["state"] = "paused" if parts[1] == "pause" else "enabled"
            self._json(route, 200, found[0])
        elif method == "DELETE" and len(parts) == 1:
            self.schedules = [s for s in self.schedules if s is not found[0]]
            route.fulfill(status=204, body="")
        else:
            self._json(route, 403, {"message": "Missing Authentication Token"})

    def schedule_calls(self) -> list[tuple[str, str, dict[str, list[str]]]]:
        """(method, path, query) of each request about schedules."""
        return [
            (r.method, urlsplit(r.url).path, parse_qs(urlsplit(r.url).query))
            for r in self.requests
            if urlsplit(r.url).path.startswith("/dev/schedules")
        ]


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(
        locale="en-US", timezone_id="Europe/Paris", viewport={"width": 1280, "height": 800}
    )
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


def make_stage(tab: Page, **fields: Any) -> ScheduleStage:
    stage = ScheduleStage(origin=f"http://127.0.0.1:{free_port()}", jobs=[fake_job()], **fields)
    tab.route(f"{stage.origin}/**", stage.handle)
    return stage


def posted(stage: FakeStage, path: str) -> list[Any]:
    return [json.loads(r.post_data or "") for r in stage.api_calls(path) if r.method == "POST"]


# --- Run at -----------------------------------------------------------------------------


def test_run_at_is_read_in_the_browsers_zone_and_sent_in_utc(page: tuple[Page, Console]) -> None:
    tab, console = page
    stage = make_stage(tab, kinds=KINDS)
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#run-at-help")).to_contain_text("(Europe/Paris)")
    tab.get_by_label("Job kind").select_option("countPrimes")
    kind_field(tab, "below").fill("100")
    run_at = tab.get_by_label("Run at (optional)")
    run_at.fill(LOCAL_RUN_AT)
    with tab.expect_response(lambda r: r.request.method == "POST"):
        tab.get_by_role("button", name="Submit job").click()
    assert posted(stage, "/dev/jobs") == [
        {"kind": "countPrimes", "input": {"below": 100}, "run_at": RUN_AT}
    ]
    expect(tab.locator("#form-message")).to_have_text(
        f"Queued job {NEW_JOB_ID[:8]} (countPrimes: below = 100), to run Jun 1, 2030, 9:30 AM."
    )
    # Cleared: the job runs now, and the body says nothing of when.
    run_at.fill("")
    with tab.expect_response(lambda r: r.request.method == "POST"):
        tab.get_by_role("button", name="Submit job").click()
    assert posted(stage, "/dev/jobs")[1] == {"kind": "countPrimes", "input": {"below": 100}}
    assert console.errors() == []


def test_run_at_on_a_stage_without_kinds_goes_to_post_heavy(page: tuple[Page, Console]) -> None:
    tab, _ = page
    stage = make_stage(tab)
    tab.goto(f"{stage.origin}/dev/")
    tab.get_by_label("Loop count (n)").fill("1000")
    tab.get_by_label("Run at (optional)").fill(LOCAL_RUN_AT)
    with tab.expect_request(lambda r: r.method == "POST") as sent:
        tab.get_by_role("button", name="Submit job").click()
    assert sent.value.post_data == f'{{"n": 1000, "run_at": "{RUN_AT}"}}'


def test_a_run_at_in_the_past_is_explained_not_sent(page: tuple[Page, Console]) -> None:
    tab, _ = page
    stage = make_stage(tab, kinds=KINDS)
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.get_by_label("Job kind")).to_be_visible()
    run_at = tab.get_by_label("Run at (optional)")
    run_at.fill("2020-01-01T09:00")
    run_at.press("Enter")
    expect(tab.locator("#form-message")).to_have_text(
        "Run at is in the past: pick a later time, or clear it to run now."
    )
    expect(run_at).to_have_attribute("aria-invalid", "true")
    expect(run_at).to_be_focused()
    assert posted(stage, "/dev/jobs") == []


def test_a_job_waiting_for_its_time_shows_when_and_its_detail_shows_lane_and_schedule(
    page: tuple[Page, Console],
) -> None:
    tab, console = page
    waiting = fake_job(
        status="queued", error=None, progress=0, started_at=None, finished_at=None,
        run_at=RUN_AT, lane=3, schedule=HOSTILE,
    )  # fmt: skip
    queued = fake_job(job_id=NEW_JOB_ID, status="queued", error=None, started_at=None)
    stage = make_stage(tab)
    stage.jobs = [waiting, queued]
    tab.goto(f"{stage.origin}/dev/")
    mark = tab.locator(f'tr[data-job-id="{JOB_ID}"] .runs-at')
    expect(mark).to_have_text(RUN_AT_TEXT)
    expect(mark).to_have_attribute("datetime", RUN_AT)
    expect(tab.locator(f'tr[data-job-id="{NEW_JOB_ID}"] .runs-at')).to_have_text("")
    expect(tab.locator(f'tr[data-job-id="{NEW_JOB_ID}"] .status')).to_have_text("queued")

    tab.get_by_role("link", name=f"Details of job {JOB_ID[:8]}").click()
    detail = tab.locator("#job-detail")
    expect(detail.locator('[data-field="lane"]')).to_have_text("3")
    expect(detail.locator('[data-field="run at"]')).to_have_text(RUN_AT)
    expect(detail.locator('[data-field="schedule"]')).to_have_text(HOSTILE)
    assert tab.locator("main img, main b").count() == 0

    tab.set_viewport_size(PHONE)
    expect(mark).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The job's time came: it runs, and the mark goes.
    stage.jobs = [{**waiting, "status": "running", "started_at": RUN_AT}, queued]
    expect(mark).to_have_text("", timeout=15_000)
    assert console.errors() == []


# --- the Schedules panel -------------------------------------------------------------------


def test_schedules_are_listed_created_paused_resumed_and_deleted(
    page: tuple[Page, Console],
) -> None:
    tab, console = page
    hourly = schedule(
        name="hourly", kind="heavyLoad", input={"n": 5}, schedule="rate(1 hour)",
        timezone="UTC", state="paused", client=HOSTILE,
    )  # fmt: skip
    stage = make_stage(tab, kinds=KINDS, schedules=[schedule(), hourly])
    tab.goto(f"{stage.origin}/dev/")
    panel = tab.get_by_role("region", name="Schedules")
    expect(panel).to_be_visible()
    nightly = panel.locator('tr[data-schedule="nightly"]')
    expect(nightly.locator("td")).to_have_text(
        ["nightly", "alice", "countPrimesbelow = 1,000", "cron(0 2 * * ? *)", "Europe/Paris",
         "enabled", "Jan 1, 2030, 2:00 AM", "PauseDelete"]
    )  # fmt: skip
    expect(nightly.locator("time")).to_have_attribute("datetime", "2030-01-01T01:00:00.000Z")
    paused = panel.locator('tr[data-schedule="hourly"]')
    expect(paused.locator(".next-fire")).to_have_text("—")  # a paused schedule does not fire
    expect(paused.locator(".client")).to_have_text(HOSTILE)

    # Create: the kind's own form, cron or rate, the browser's zone by default.
    panel.get_by_text("New schedule").click()
    expect(panel.get_by_label("Time zone")).to_have_value("Europe/Paris")
    panel.get_by_label("Name").fill("mornings")
    panel.get_by_label("Kind of job").select_option("countPrimes")
    panel.locator("#schedule-kind-fields").get_by_label(re.compile(r"^below")).fill("1_000_000")
    panel.get_by_label("Repeats").fill("0 9 ? * MON-FRI *")
    with tab.expect_response(lambda r: r.request.method == "POST") as made:
        panel.get_by_role("button", name="Create schedule").click()
    assert made.value.status == 201
    assert made.value.request.post_data_json == {
        "name": "mornings",
        "kind": "countPrimes",
        "input": {"below": 1_000_000},
        "schedule": "cron(0 9 ? * MON-FRI *)",
        "timezone": "Europe/Paris",
    }
    expect(panel.locator("#schedule-message")).to_have_text(
        "Created schedule mornings; it first fires Jan 1, 2030, 2:00 AM."
    )
    expect(panel.locator('tr[data-schedule="mornings"]')).to_be_visible()

    # Pause and resume: another client's schedule is addressed with ?client= (the operator).
    nightly.get_by_role("button", name="Pause schedule nightly").click()
    expect(nightly.locator(".state")).to_have_text("paused")
    nightly.get_by_role("button", name="Resume schedule nightly").click()
    expect(nightly.locator(".state")).to_have_text("enabled")
    expect(tab.locator("#announcer")).to_have_text("Schedule nightly is enabled.")

    # Delete asks first: dismissed, nothing is sent; accepted, it goes.
    nightly.get_by_role("button", name="Delete schedule nightly").click()
    expect(nightly).to_be_visible()
    tab.once("dialog", lambda dialog: dialog.accept())
    nightly.get_by_role("button", name="Delete schedule nightly").click()
    expect(nightly).to_have_count(0)
    changes = [(m, p, q) for m, p, q in stage.schedule_calls() if m != "GET"]
    assert changes == [
        ("POST", "/dev/schedules", {}),
        ("POST", "/dev/schedules/nightly/pause", {"client": ["alice"]}),
        ("POST", "/dev/schedules/nightly/resume", {"client": ["alice"]}),
        ("DELETE", "/dev/schedules/nightly", {"client": ["alice"]}),
    ]
    assert tab.locator("main img, main b").count() == 0
    assert console.errors() == []


@pytest.mark.parametrize(
    ("name", "kind_of", "expression", "message", "marked"),
    [
        ("a b", "cron", "0 2 * * ? *", "Enter a name of 1 to 64 letters, digits, _ or -.",
         "#schedule-name"),
        ("ok", "cron", "0 2 * * ?", "A cron expression has six fields (minutes hours "
         "day-of-month month day-of-week year), such as 0 2 * * ? *.", "#schedule-expression"),
        ("ok", "rate", "hourly", "A rate is a number and a unit, such as 15 minutes or 1 hour.",
         "#schedule-expression"),
        ("ok", "rate", "", "Enter the rate expression, such as 1 hour.", "#schedule-expression"),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_explained_not_sent(
    page: tuple[Page, Console],
    name: str,
    kind_of: str,
    expression: str,
    message: str,
    marked: str,
) -> None:
    tab, _ = page
    stage = make_stage(tab, kinds=KINDS, schedules=[])
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator("#schedules-empty")).to_be_visible()
    tab.get_by_text("New schedule").click()
    tab.locator("#schedule-name").fill(name)
    tab.get_by_label("Expression type").select_option(kind_of)
    tab.locator("#schedule-expression").fill(expression)
    tab.get_by_role("button", name="Create schedule").click()
    expect(tab.locator("#schedule-message")).to_have_text(message)
    expect(tab.locator(marked)).to_have_attribute("aria-invalid", "true")
    expect(tab.locator(marked)).to_be_focused()
    assert posted(stage, "/dev/schedules") == []


def test_an_api_refusal_marks_the_field_it_is_about(page: tuple[Page, Console]) -> None:
    tab, _ = page
    taken = {"error": {"code": "schedule_exists", "message": "A schedule 'ok' exists."}}
    stage = make_stage(tab, kinds=KINDS, schedules=[], schedule_error=(409, taken))
    tab.goto(f"{stage.origin}/dev/")
    tab.get_by_text("New schedule").click()
    tab.locator("#schedule-name").fill("ok")
    tab.locator("#schedule-kind-fields").get_by_label(re.compile(r"^n")).fill("5")
    tab.locator("#schedule-expression").fill("0 2 * * ? *")
    tab.get_by_role("button", name="Create schedule").click()
    expect(tab.locator("#schedule-message")).to_have_text("Not created: A schedule 'ok' exists.")
    expect(tab.locator("#schedule-name")).to_have_attribute("aria-invalid", "true")
    stage.schedule_error = (400, {"error": {"code": "invalid_timezone", "message": "No zone."}})
    tab.get_by_role("button", name="Create schedule").click()
    expect(tab.locator("#schedule-timezone")).to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#schedule-name")).not_to_have_attribute("aria-invalid", "true")


def test_a_stage_without_schedules_hides_the_panel(page: tuple[Page, Console]) -> None:
    tab, console = page
    stage = make_stage(tab, kinds=KINDS)  # GET /schedules: 403, an unknown route
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.get_by_label("Job kind")).to_be_visible()
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"]')).to_be_visible()
    assert stage.api_calls("/dev/schedules")
    expect(tab.locator("#schedules-card")).to_be_hidden()
    assert console.errors() == []


def test_the_schedules_panel_on_a_phone_with_labels_and_the_key(
    page: tuple[Page, Console],
) -> None:
    tab, console = page
    stage = make_stage(tab, kinds=KINDS, schedules=[schedule(input={"below": 10**10})])
    tab.add_init_script("sessionStorage.setItem('heavy-jobs:api-key:/dev/', 'k1')")
    tab.set_viewport_size(PHONE)
    tab.goto(f"{stage.origin}/dev/")
    row = tab.locator('tr[data-schedule="nightly"]')
    expect(row.locator(".expression")).to_have_attribute("data-label", "Expression")
    expect(row.get_by_role("button", name="Pause schedule nightly")).to_be_visible()
    tab.get_by_text("New schedule").click()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Every control of the schedule form has a visible label, and its help exists.
    missing = tab.evaluate(
        """() => [...document.querySelectorAll("#schedule-form input, #schedule-form select")]
            .filter((c) => !((c.labels.length && c.labels[0].textContent.trim())
                             || c.getAttribute("aria-label"))
              || (c.getAttribute("aria-describedby") || "").split(" ").filter(Boolean)
                   .some((id) => !document.getElementById(id)))
            .map((c) => c.id)"""
    )
    assert missing == []
    calls = stage.api_calls("/dev/schedules")
    assert calls and all(r.headers.get("x-api-key") == "k1" for r in calls)
    assert console.errors() == []


@pytest.mark.parametrize("width", [1280, 1101, 1100, PHONE["width"]])
def test_waiting_jobs_and_schedules_fit_the_window_at_any_width(
    page: tuple[Page, Console], width: int
) -> None:
    tab, _ = page
    long = schedule(
        name="n" * 64, client="anonymous", input={"below": 10**10},
        schedule="cron(0/15 8-18 ? * MON-FRI 2026-2030)", timezone="America/Argentina/Buenos_Aires",
    )  # fmt: skip
    stage = make_stage(tab, kinds=KINDS, schedules=[long])
    stage.jobs = [
        fake_job(
            status="queued", error=None, started_at=None, finished_at=None, client="anonymous",
            kind="heavyLoad", input={"n": 10**10}, run_at=RUN_AT,
        )
    ]  # fmt: skip
    tab.set_viewport_size({"width": width, "height": 800})
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.locator(".runs-at")).to_have_text(RUN_AT_TEXT)
    expect(tab.locator("#schedule-rows tr")).to_have_count(1)
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for table in ("jobs", "schedules"):
        inside = tab.evaluate(
            f"() => document.getElementById('{table}').scrollWidth <="
            f" document.getElementById('{table}').closest('.card').clientWidth"
        )
        assert inside, table
