"""Job kinds on the dashboard, in a real browser against a scripted API under /dev.

The kind selector and the form come from GET /kinds (each kind's input_schema, as the
API reference, docs/api.md, documents it); jobs are sent to POST /jobs; failed and
cancelled jobs get a Retry button; each row shows the kind and a short input summary; the list can
be filtered by kind. A stage without GET /kinds keeps today's n form (tests/e2e/
test_dashboard.py runs every one of its tests against such a stage).
"""

# The browser and page fixtures come from test_dashboard.py: tests naming them as
# parameters redefine the imported names, which is how pytest fixtures work.
# ruff: noqa: F811

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, Route, expect

from infra.emulator import free_port
from tests.e2e.test_dashboard import (  # noqa: F401 - browser and page: fixtures
    JOB_ID,
    NEW_JOB_ID,
    PHONE,
    Console,
    FakeStage,
    browser,
    fake_job,
    kind_field,
    page,
)

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"


def integer(**schema: Any) -> dict[str, Any]:
    return {"type": "integer", **schema}


def kind(
    name: str, properties: dict[str, Any], required: list[str], description: str = ""
) -> dict[str, Any]:
    return {
        "kind": name,
        "description": description or f"The {name} kind.",
        "input_schema": {
            "type": "object",
            "title": name,
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        "result_schema": {"type": "object"},
    }


# GET /kinds: the two real kinds as the contract gives them, and one with every field type.
KINDS = [
    kind(
        "countPrimes",
        {
            "below": integer(
                title="below", minimum=2, maximum=10**10, description="Count below this."
            )
        },
        ["below"],
    ),
    kind(
        "everyType",
        {
            "size": integer(title="Size", minimum=1, description="How many."),
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
            "label": {
                "type": "string",
                "minLength": 3,
                "maxLength": 8,
                "pattern": "^[a-z]+$",
                "description": HOSTILE,
            },
            "fast": {"type": "boolean", "default": True, "description": "Skip the checks."},
            "mode": {"type": "string", "enum": ["quick", "thorough"], "default": "thorough"},
        },
        ["size", "label"],
        description="Every field type " + HOSTILE,
    ),
    kind(
        "heavyLoad",
        {
            "n": integer(
                title="n", minimum=0, maximum=10**10, default=300_000_000, description="How far."
            )
        },
        [],
    ),
]


@pytest.fixture
def stage(page: tuple[Page, Console]) -> FakeStage:
    tab, _ = page
    fake = FakeStage(origin=f"http://127.0.0.1:{free_port()}", jobs=[fake_job()], kinds=KINDS)
    tab.route(f"{fake.origin}/**", fake.handle)
    return fake


def open_page(tab: Page, stage: FakeStage, kind_name: str | None = None) -> None:
    tab.goto(f"{stage.origin}/dev/")
    expect(tab.get_by_label("Job kind")).to_be_visible()
    if kind_name:
        tab.get_by_label("Job kind").select_option(kind_name)


def posted_jobs(stage: FakeStage) -> list[str]:
    return [r.post_data or "" for r in stage.api_calls("/dev/jobs") if r.method == "POST"]


def test_the_form_follows_the_selected_kinds_input_schema(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    open_page(tab, stage)
    kinds = tab.get_by_label("Job kind")
    expect(kinds.locator("option")).to_have_text(["countPrimes", "everyType", "heavyLoad"])
    expect(kinds).to_have_value("heavyLoad")  # the service's classic job comes first
    expect(tab.get_by_label("Loop count (n)")).to_be_hidden()  # the older stage's form
    n = kind_field(tab, "n")
    expect(n).to_have_value("300000000")  # its default
    expect(n).not_to_have_attribute("aria-required", "true")
    expect(tab.locator("#field-0-help")).to_have_text(
        "How far. A whole number from 0 to 10,000,000,000. Separators such as 1_000_000 are"
        " fine. Default: 300,000,000."
    )

    kinds.select_option("countPrimes")
    expect(tab.locator("#kind-help")).to_have_text("The countPrimes kind.")
    below = kind_field(tab, "below")
    expect(below).to_have_value("")
    expect(below).to_have_attribute("aria-required", "true")
    expect(below).to_have_attribute("inputmode", "numeric")
    expect(tab.locator("#field-0-help")).to_have_text(
        "Count below this. A whole number from 2 to 10,000,000,000. Separators such as"
        " 1_000_000 are fine. Required."
    )
    expect(tab.locator(".field[data-field] .required-mark")).to_have_text([" *"])
    expect(n).to_have_count(0)

    kinds.select_option("everyType")
    expect(tab.locator("#kind-help")).to_have_text("Every field type " + HOSTILE)
    size = kind_field(tab, "Size (size)")  # a title, with the field's name
    expect(size).to_have_attribute("aria-required", "true")
    expect(tab.locator("#field-0-help")).to_have_text(
        "How many. A whole number, at least 1. Separators such as 1_000_000 are fine. Required."
    )
    ratio = kind_field(tab, "ratio")
    expect(ratio).to_have_value("0.5")
    expect(ratio).to_have_attribute("inputmode", "decimal")
    expect(tab.locator("#field-1-help")).to_have_text("A number from 0 to 1. Default: 0.5.")
    label = kind_field(tab, "label")
    expect(tab.locator("#field-2-help")).to_have_text(
        HOSTILE + " From 3 to 8 characters. It must match ^[a-z]+$. Required."
    )
    expect(label).to_have_attribute("aria-describedby", "field-2-help form-message")
    fast = kind_field(tab, "fast")
    expect(fast).to_have_attribute("type", "checkbox")
    expect(fast).to_be_checked()  # its default
    expect(tab.locator("#field-3-help")).to_have_text("Skip the checks.")
    mode = kind_field(tab, "mode")
    expect(mode.locator("option")).to_have_text(["quick", "thorough"])
    expect(mode.locator("option:checked")).to_have_text("thorough")  # its default
    # Descriptions are API text: shown as text, never as markup.
    assert tab.locator("main img, main b").count() == 0
    assert tab.title() == "heavy-jobs"
    assert console.errors() == []


@pytest.mark.parametrize(
    ("kind_name", "name", "value", "message"),
    [
        ("countPrimes", "below", "", "Enter below: it is required."),
        ("countPrimes", "below", "1", "below must be at least 2."),
        ("countPrimes", "below", "10_000_000_001", "below must be at most 10,000,000,000."),
        ("countPrimes", "below", "3.5e8", "Enter below as a whole number, such as 1000000."),
        ("heavyLoad", "n", "-1", "n must be at least 0."),
        ("heavyLoad", "n", "lots", "Enter n as a whole number, such as 300000000."),
        ("everyType", "ratio", "1.5", "ratio must be at most 1."),
        ("everyType", "ratio", "half", "Enter ratio as a number, such as 1.5."),
        ("everyType", "label", "ab", "label needs at least 3 characters."),
        ("everyType", "label", "abcdefghi", "label takes at most 8 characters."),
        ("everyType", "label", "Abc", "label must match ^[a-z]+$."),
    ],
)
def test_a_bad_value_is_explained_not_sent(
    page: tuple[Page, Console],
    stage: FakeStage,
    kind_name: str,
    name: str,
    value: str,
    message: str,
) -> None:
    tab, _ = page
    open_page(tab, stage, kind_name)
    if kind_name == "everyType":  # the other required fields valid
        kind_field(tab, "Size (size)").fill("3")
        if name != "label":
            kind_field(tab, "label").fill("abc")
    control = kind_field(tab, name)
    control.fill(value)
    control.press("Enter")
    expect(tab.locator("#form-message")).to_have_text(message)
    expect(control).to_have_attribute("aria-invalid", "true")
    expect(control).to_be_focused()
    assert posted_jobs(stage) == []

    # Corrected, it is sent, and no field is marked any longer.
    control.fill({"below": "1000", "n": "5", "ratio": "0.25", "label": "abc"}[name])
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_contain_text(f"Queued job {NEW_JOB_ID[:8]}")
    assert len(posted_jobs(stage)) == 1
    expect(tab.locator("[aria-invalid]")).to_have_count(0)


def test_the_body_sent_to_post_jobs(page: tuple[Page, Console], stage: FakeStage) -> None:
    tab, console = page
    open_page(tab, stage, "countPrimes")
    kind_field(tab, "below").fill("1_000,000")
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_have_text(
        f"Queued job {NEW_JOB_ID[:8]} (countPrimes: below = 1,000,000)."
    )

    # Every type, exactly as JSON: integers exact at any size, the boolean unchecked,
    # the enum's other value; a blank optional field is left to its default.
    tab.get_by_label("Job kind").select_option("everyType")
    kind_field(tab, "Size (size)").fill("123456789012345678901")
    kind_field(tab, "ratio").fill("")
    kind_field(tab, "label").fill("abc")
    kind_field(tab, "fast").uncheck()
    kind_field(tab, "mode").select_option("quick")
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_contain_text(f"Queued job {NEW_JOB_ID[:8]} (everyType")

    tab.get_by_label("Job kind").select_option("heavyLoad")  # its default, as shown
    tab.get_by_role("button", name="Submit job").click()
    expect(tab.locator("#form-message")).to_have_text(
        f"Queued job {NEW_JOB_ID[:8]} (heavyLoad: n = 300,000,000)."
    )
    assert posted_jobs(stage) == [
        '{"kind": "countPrimes", "input": {"below": 1000000}}',
        '{"kind": "everyType", "input": {"size": 123456789012345678901, "label": "abc",'
        ' "fast": false, "mode": "quick"}}',
        '{"kind": "heavyLoad", "input": {"n": 300000000}}',
    ]
    assert stage.api_calls("/dev/heavy") == []
    assert console.errors() == []


def test_an_api_error_is_shown_on_the_field_it_names(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    stage.submit_error = (
        400,
        {"error": {"code": "invalid_input", "message": "/input/below: must be >= 2"}},
    )
    open_page(tab, stage, "countPrimes")
    below = kind_field(tab, "below")
    below.fill("7")
    below.press("Enter")
    expect(tab.locator("#form-message")).to_have_text("Not submitted: /input/below: must be >= 2")
    expect(below).to_have_attribute("aria-invalid", "true")
    expect(below).to_be_focused()

    # A refused key (API Gateway's 403) marks the key field, and no field of the form.
    stage.submit_error = (403, {"message": "Forbidden"})
    below.press("Enter")
    expect(tab.locator("#form-message")).to_have_text(
        "Not submitted: Forbidden: this stage needs an API key: enter yours under “API key”, or ask"
        " the operator for one (make api-key STAGE=… CLIENT=…)."
    )
    expect(tab.locator("[aria-invalid]")).to_have_count(1)
    expect(tab.locator("#api-key")).to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#api-key")).to_be_focused()

    # An error about no field and not about the key marks none.
    stage.submit_error = (403, {"error": {"code": "cross_site_request", "message": "Refused."}})
    tab.locator("#api-key").fill("k")
    below.press("Enter")
    expect(tab.locator("#form-message")).to_have_text("Not submitted: Refused.")
    expect(tab.locator("[aria-invalid]")).to_have_count(0)


def test_a_client_over_its_quota_is_told_why_and_when_to_try_again(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    message = "Client alice has 100 jobs queued or running, its most; one must finish first."
    stage.submit_error = (429, {"error": {"code": "quota_exceeded", "message": message}})
    stage.submit_error_headers = {"Retry-After": "30"}
    open_page(tab, stage, "countPrimes")
    below = kind_field(tab, "below")
    below.fill("1000")
    below.press("Enter")
    expect(tab.locator("#form-message")).to_have_text(
        f"Not submitted: {message} Try again in 30 s."
    )
    expect(tab.locator("#form-message")).to_have_class("message error")
    expect(tab.locator("#live-state")).to_contain_text("Live")  # the list is not slowed
    assert [e for e in console.errors() if "429" not in e] == []


def kind_job(job_id: str, status: str, **overrides: Any) -> dict[str, Any]:
    job = fake_job(
        job_id=job_id,
        status=status,
        kind="countPrimes",
        input={"below": 1000},
        error="no" if status == "failed" else None,
    )
    return {**job, **overrides}


STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


def test_retry_on_failed_and_cancelled_jobs_only(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    ids = {status: f"{i}0000000-0000-4000-8000-000000000000" for i, status in enumerate(STATUSES)}
    stage.jobs = [kind_job(ids[status], status) for status in STATUSES]
    tab.add_init_script("localStorage.setItem('heavy-jobs:api-key:/dev/', 'secret-key-1')")
    open_page(tab, stage)
    for status, job_id in ids.items():
        row = tab.locator(f'tr[data-job-id="{job_id}"]')
        expect(row.locator(".status")).to_have_text(status)
        retry = row.get_by_role("button", name=f"Retry job {job_id[:8]}")
        expect(retry).to_have_count(1 if status in ("failed", "cancelled") else 0)
        expect(row.get_by_role("button", name="Cancel job")).to_have_count(
            1 if status in ("queued", "running") else 0
        )

    failed = ids["failed"]
    tab.get_by_role("button", name=f"Retry job {failed[:8]}").click()
    expect(tab.locator("#announcer")).to_have_text(
        f"Job {failed[:8]} retried as job {NEW_JOB_ID[:8]}."
    )
    (retried,) = stage.api_calls(f"/dev/jobs/{failed}/retry")
    assert retried.method == "POST" and retried.headers["x-api-key"] == "secret-key-1"
    new_row = tab.locator(f'tr[data-job-id="{NEW_JOB_ID}"]')
    expect(new_row.locator(".retry-of")).to_have_text(f"retry of {failed[:8]}")
    expect(new_row.locator(".input")).to_have_text("countPrimesbelow = 1,000")
    # GET /kinds is not metered: it goes without the key.
    (kinds_call,) = stage.api_calls("/dev/kinds")
    assert "x-api-key" not in kinds_call.headers

    # Refused (409: the job is no longer retryable): said, and the button is back.
    stage.submit_error = (409, {"error": {"code": "not_retryable", "message": "Not retryable."}})
    cancelled = ids["cancelled"]
    tab.get_by_role("button", name=f"Retry job {cancelled[:8]}").click()
    expect(tab.locator("#announcer")).to_have_text(
        f"Job {cancelled[:8]} was not retried: Not retryable."
    )
    expect(tab.get_by_role("button", name=f"Retry job {cancelled[:8]}")).to_be_enabled()
    assert console.errors() == []


def test_the_kind_filter_asks_the_api_for_that_kind(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, _ = page
    open_page(tab, stage)
    kinds = tab.get_by_label("Kind", exact=True)
    expect(kinds.locator("option")).to_have_text(
        ["all kinds", "countPrimes", "everyType", "heavyLoad"]
    )

    def query(request: Request) -> dict[str, list[str]]:
        return parse_qs(urlsplit(request.url).query)

    with tab.expect_request(lambda r: "kind=" in r.url) as sent:
        kinds.select_option("countPrimes")
    assert query(sent.value) == {"limit": ["20"], "kind": ["countPrimes"]}
    with tab.expect_request(lambda r: "status=" in r.url) as sent:
        tab.get_by_label("Show").select_option("failed")
    assert query(sent.value) == {"limit": ["20"], "status": ["failed"], "kind": ["countPrimes"]}
    with tab.expect_request(lambda r: "/dev/jobs?" in r.url and "kind=" not in r.url) as sent:
        kinds.select_option("")
    assert query(sent.value) == {"limit": ["20"], "status": ["failed"]}


def test_each_row_shows_its_kind_and_input_as_text(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    long_input = {"words": "\U0001f600" * 100}  # cut between characters, not inside one
    stage.jobs = [
        kind_job(JOB_ID, "succeeded", result={"count": 168}),
        kind_job("1" * 8, "queued", kind=HOSTILE, input={HOSTILE: HOSTILE, "on": True}),
        kind_job("2" * 8, "succeeded", kind="heavyLoad", input={"n": 5}, n=5, result=5),
        kind_job("3" * 8, "queued", input=long_input),
        fake_job(job_id="4" * 8, n=42),  # an older stage's job: no kind, no input
    ]
    open_page(tab, stage)
    rows = tab.locator("tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.nth(0).locator(".kind-name")).to_have_text("countPrimes")
    expect(rows.nth(0).locator(".input-summary")).to_have_text("below = 1,000")
    expect(rows.nth(0).locator(".result")).to_have_text("count = 168")
    expect(rows.nth(1).locator(".kind-name")).to_have_text(HOSTILE)
    expect(rows.nth(1).locator(".input-summary")).to_have_text(
        (HOSTILE + " = " + json.dumps(HOSTILE) + ", on = true")[:59] + "…"
    )
    expect(rows.nth(2).locator(".input-summary")).to_have_text("n = 5")
    expect(rows.nth(2).locator(".result")).to_have_text("5")
    summary = "words = " + json.dumps(long_input["words"], ensure_ascii=False)
    expect(rows.nth(3).locator(".input-summary")).to_have_text(summary[:59] + "…")
    expect(rows.nth(3).locator(".input-summary")).to_have_attribute("title", summary)
    expect(rows.nth(4).locator(".kind-name")).to_have_text("")
    expect(rows.nth(4).locator(".input-summary")).to_have_text("n = 42")
    assert tab.locator("main img, main b, tbody script").count() == 0
    assert tab.title() == "heavy-jobs"
    assert console.errors() == []


def test_the_phone_layout_and_labels_with_kinds(
    page: tuple[Page, Console], stage: FakeStage
) -> None:
    tab, console = page
    stage.jobs = [kind_job(JOB_ID, "failed", input={"label": "y" * 200})]
    tab.set_viewport_size(PHONE)
    open_page(tab, stage, "everyType")
    row = tab.locator(f'tr[data-job-id="{JOB_ID}"]')
    expect(row.get_by_role("button", name=f"Retry job {JOB_ID[:8]}")).to_be_visible()
    expect(row.locator(".input")).to_have_attribute("data-label", "Kind and input")
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # Every control has a visible label and its help is where aria-describedby points.
    controls = tab.locator("#submit-form input:visible, #submit-form select:visible, #kind-filter")
    assert controls.count() == 8  # the kind, its five fields, Run at, the kind filter
    missing = tab.evaluate(
        """() => [...document.querySelectorAll("input, select")]
            .filter((c) => !c.closest("[hidden]"))
            .filter((c) => !c.labels.length || !c.labels[0].textContent.trim()
              || (c.getAttribute("aria-describedby") || "").split(" ").filter(Boolean)
                   .some((id) => !document.getElementById(id)))
            .map((c) => c.id)"""
    )
    assert missing == []
    # Keyboard only: the kind, then its fields in order, then Run at (a stop for each of
    # its parts: day, month, year, hours...), then the submit button.
    tab.get_by_label("Job kind").focus()
    order = []
    for _ in range(16):
        tab.keyboard.press("Tab")
        focused = tab.evaluate("document.activeElement.id")
        if not order or order[-1] != focused:
            order.append(focused)
        if focused == "submit-button":
            break
    assert order == [
        "field-0", "field-1", "field-2", "field-3", "field-4", "run-at", "submit-button"
    ]  # fmt: skip
    assert console.errors() == []


@pytest.mark.parametrize("answer", [404, 500, "not a list"])
def test_without_get_kinds_the_page_keeps_the_n_form(
    page: tuple[Page, Console], answer: int | str
) -> None:
    tab, console = page
    fake = FakeStage(origin=f"http://127.0.0.1:{free_port()}", jobs=[fake_job()], kinds=KINDS)

    def kinds_route(route: Route, request: Request) -> None:
        if urlsplit(request.url).path == "/dev/kinds":
            fake.requests.append(request)
            if answer == "not a list":
                route.fulfill(status=200, body='{"kinds": {}}', content_type="application/json")
            else:
                route.fulfill(status=int(answer), body="{}", content_type="application/json")
        else:
            fake.handle(route, request)

    tab.route(f"{fake.origin}/**", kinds_route)
    tab.goto(f"{fake.origin}/dev/")
    n_field = tab.get_by_label("Loop count (n)")
    n_field.fill("1000")
    n_field.press("Enter")
    expect(tab.locator("#form-message")).to_have_text("Queued job 0b7f2c9e (n = 1,000).")
    assert [r.post_data for r in fake.api_calls("/dev/heavy")] == ['{"n": 1000}']
    expect(tab.get_by_label("Job kind")).to_be_hidden()
    expect(tab.get_by_label("Kind", exact=True)).to_be_hidden()
    # A failed job, but an older stage has no retry.
    expect(tab.locator(f'tr[data-job-id="{JOB_ID}"] .status')).to_have_text("failed")
    expect(tab.get_by_role("button", name="Retry job")).to_have_count(0)
    assert console.errors() == []


def test_a_field_of_another_type_is_typed_as_json(page: tuple[Page, Console]) -> None:
    # GET /kinds promises four types and enums; a later kind might declare another: its
    # value is typed as JSON (and the API, which knows the type, has the last word).
    tab, console = page
    future = kind("future", {"tags": {"type": "array", "description": "Labels."}}, ["tags"])
    stage = FakeStage(origin=f"http://127.0.0.1:{free_port()}", jobs=[], kinds=[future])
    tab.route(f"{stage.origin}/**", stage.handle)
    open_page(tab, stage)
    tags = kind_field(tab, "tags")
    expect(tab.locator("#field-0-help")).to_have_text("Labels. A JSON value. Required.")
    tags.fill('["a", 2')
    tags.press("Enter")
    expect(tab.locator("#form-message")).to_have_text('Enter tags as JSON, such as "text" or 42.')
    assert posted_jobs(stage) == []
    tags.fill('[ "a", 2 ]')
    tags.press("Enter")
    expect(tab.locator("#form-message")).to_contain_text(f"Queued job {NEW_JOB_ID[:8]}")
    assert posted_jobs(stage) == ['{"kind": "future", "input": {"tags": ["a",2]}}']
    assert console.errors() == []
