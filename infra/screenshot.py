"""Regenerate the README's picture of the dashboard from a real run.

    python -m infra.screenshot [--output docs/dashboard.png]

``make screenshot`` is this command. It starts a local stack of its own (moto server,
``chalice local`` and the worker, on free ports, as ``make run`` does), runs jobs until
there is one in each state the page shows (succeeded, cancelled, running, queued), takes
the page's picture in headless Chromium (``infra.browser``) and stops everything. About
half a minute; the stack's output is shown only if something fails.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import ViewportSize

from infra.browser import chromium
from infra.emulator import free_port
from infra.run import PROJECT_DIR, Services

DEFAULT_OUTPUT = PROJECT_DIR / "docs" / "dashboard.png"
VIEWPORT: ViewportSize = {"width": 1200, "height": 760}
# Loop counts for this kind of machine (about 10^8 iterations a second).
QUICK_N, SHORT_N, CANCELLED_N, RUNNING_N, QUEUED_N = (
    1_000,
    200_000_000,
    900_000_000,
    4 * 10**9,
    10**9,
)
SHOWN_PROGRESS = 0.35  # the running job's bar, when the picture is taken


def _wait(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Jobs:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def submit(self, n: int) -> str:
        response = self.session.post(f"{self.url}/heavy", json={"n": n}, timeout=10)
        response.raise_for_status()
        return str(response.json()["job_id"])

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def cancel(self, job_id: str) -> None:
        self.session.post(f"{self.url}/jobs/{job_id}/cancel", timeout=10).raise_for_status()

    def reaches(self, job_id: str, check: Callable[[dict[str, Any]], bool]) -> None:
        _wait(f"job {job_id}", lambda: check(self.get(job_id)))


def stage_jobs(jobs: Jobs) -> list[str]:
    """One job in each state, oldest first; returns the ids still unfinished."""
    jobs.reaches(jobs.submit(QUICK_N), lambda j: j["status"] == "succeeded")
    jobs.reaches(jobs.submit(SHORT_N), lambda j: j["status"] == "succeeded")
    cancelled = jobs.submit(CANCELLED_N)
    jobs.reaches(cancelled, lambda j: j["status"] == "running" and j["progress"] > 0.2)
    jobs.cancel(cancelled)
    jobs.reaches(cancelled, lambda j: j["status"] == "cancelled")
    running = jobs.submit(RUNNING_N)
    queued = jobs.submit(QUEUED_N)
    jobs.reaches(running, lambda j: j["status"] == "running" and j["progress"] >= SHOWN_PROGRESS)
    return [running, queued]


def take(url: str, output: Path) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT, locale="en-US", color_scheme="light")
        page.goto(f"{url}/")
        page.locator("#job-rows tr").nth(4).wait_for()
        page.wait_for_timeout(1500)  # a poll or two: the running job's time left settles
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), full_page=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.screenshot", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    log = io.StringIO()
    services = Services(api_port=free_port(), emulator_port=free_port(), output=log)
    try:
        services.start_all()
        jobs = Jobs(services.api_url)
        unfinished = stage_jobs(jobs)
        take(services.api_url, args.output)
        for job_id in unfinished:
            jobs.cancel(job_id)
    except Exception as error:
        services.stop_all()
        sys.stderr.write(log.getvalue())
        print(f"screenshot failed: {error}", file=sys.stderr)
        return 1
    services.stop_all()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
