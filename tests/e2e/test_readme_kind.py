"""The job-kind walkthrough ("Add your own job kind" in docs/kinds.md), followed literally:
its example module is added to a copy of the project, and the kind shows up in GET /kinds,
the OpenAPI document, the dashboard's form (in the browser) and the CLI, answers as the
page shows, and a job of it runs end to end on the local stack, resuming from its
checkpoint after the worker is SIGKILLed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable

import requests
from playwright.sync_api import expect

from infra.browser import chromium
from infra.stack import PROJECT_DIR
from tests.e2e.conftest import Stack
from tests.e2e.test_cli import jobs
from tests.e2e.test_dashboard import kind_field
from tests.e2e.test_faults import run_killing_the_worker_midway, started

PAGE = (PROJECT_DIR / "docs/kinds.md").read_text()
SECTION = PAGE[PAGE.index("## Add your own job kind") :]
# The module, as the walkthrough says to save it.
MODULE_PATH = re.search(r"Save this as `([^`]+)`", SECTION).group(1)  # type: ignore[union-attr]
MODULE = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)  # type: ignore[union-attr]
# The console session after it: commands and the output the page shows for each.
KIND_DESCRIPTION = re.search(r'description="([^"]+)",\n    input=', MODULE).group(1)  # type: ignore[union-attr]
CONSOLE = re.search(r"```console\n(.*?)```", SECTION, re.S).group(1)  # type: ignore[union-attr]


def console_steps() -> list[tuple[str, str]]:
    lines = CONSOLE.strip().splitlines()
    return [(line[2:], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("$ ")]


def sum_of_squares(below: int) -> int:
    return (below - 1) * below * (2 * below - 1) // 6


def test_the_readme_kind_works_as_the_walkthrough_says(
    make_stack: Callable[..., Stack],
) -> None:
    assert MODULE_PATH == "chalicelib/kinds/sum_of_squares.py"
    stack = make_stack(extra_files={MODULE_PATH: MODULE})
    name = "sumOfSquares"

    (kind,) = [
        k
        for k in requests.get(f"{stack.url}/kinds", timeout=10).json()["kinds"]
        if k["kind"] == name
    ]
    assert kind["input_schema"]["required"] == ["below"]
    assert kind["input_schema"]["properties"]["step"]["default"] == 1
    assert kind["result_schema"]["properties"] == {"total": {"type": "integer"}}

    document = requests.get(f"{stack.url}/openapi.json", timeout=10).json()
    request = document["components"]["schemas"]["JobRequest"]
    assert request["discriminator"]["mapping"][name].endswith(f"/{name}Request")
    body = document["components"]["schemas"][f"{name}Request"]
    assert body["properties"]["input"]["properties"] == kind["input_schema"]["properties"]

    listed = jobs("kinds", url=stack.url)
    assert listed.returncode == 0 and name in listed.stdout

    # The dashboard's form for the kind, in the browser: generated from its declaration.
    with chromium() as browser:
        tab = browser.new_page(locale="en-US")
        tab.goto(f"{stack.url}/")
        tab.get_by_label("Job kind").select_option(name)
        expect(tab.locator("#kind-help")).to_have_text(KIND_DESCRIPTION)
        below, step = kind_field(tab, "below"), kind_field(tab, "step")
        expect(below).to_have_attribute("aria-required", "true")
        expect(below).to_have_value("")
        expect(step).to_have_value("1")  # its default
        expect(tab.locator("#field-1-help")).to_have_text(
            "Every step-th number. A whole number from 1 to 1,000. Separators such as"
            " 1_000_000 are fine. Default: 1."
        )
        below.fill("-1")
        below.press("Enter")
        expect(tab.locator("#form-message")).to_have_text("below must be at least 0.")

    for command, shown in console_steps():
        argv = shlex.split(command.replace("localhost:8000", stack.url))
        if argv[0] == "jobs":
            ran = jobs(*argv[1:], url=stack.url)
        else:
            ran = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert json.loads(ran.stdout) == json.loads(shown), (command, ran.stderr)

    below = 120_000_000  # several seconds of the loop
    answer = requests.post(
        f"{stack.url}/jobs", json={"kind": name, "input": {"below": below}}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    job, progress = run_killing_the_worker_midway(stack, job_id, 120, 240)
    assert job["result"] == {"total": sum_of_squares(below)} and job["attempts"] == 2
    assert progress == sorted(progress)
    runs = started(stack, job_id)
    assert [r["attempt"] for r in runs] == [1, 2]
    assert runs[1]["state"][0] >= 0.3 * below  # resumed from its checkpoint, not from 0


def test_the_module_is_not_part_of_the_project() -> None:
    """The walkthrough adds a kind; the project itself ships only its own two."""
    assert not (PROJECT_DIR / MODULE_PATH).exists()
