"""`make pause STAGE=local` / `make resume STAGE=local` against a running local stack.

The stack runs as `make run` runs it (``infra.run.Services``), from a full copy of the
project, so the real `make` targets run in it; they find the stack's emulator through
``EMULATOR_PORT``, as a user's shell beside `make run` would. Paused, submitted jobs stay
queued (their messages wait on the queue, none received) while the worker and its
schedule keep running, and the API, the dashboard and `jobs list` say so; resumed, every
job runs once and none is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from infra.browser import chromium
from infra.emulator import free_port, port_is_free
from infra.run import Services
from jobs_cli.main import PAUSED_LINE
from tests.e2e.conftest import FAST_SETTINGS, STAGE, WORKER_ARGS, Stack, configure
from tests.e2e.test_cli import jobs
from tests.infra.harness import copy_project, isolated_environment, run_make
from tests.processes import is_running
from tests.waiting import wait_for

# About a tenth of a second of counting each.
N = 10_000_000
JOBS = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    project = copy_project(tmp_path / "project")
    configure(project, FAST_SETTINGS)
    log_path = tmp_path / "stack.log"
    with log_path.open("w") as log:
        services = Services(
            project_dir=project, stage=STAGE, api_port=free_port(),
            emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
        )  # fmt: skip
        try:
            yield Stack(services, services.start_all(), log_path), project
        finally:
            pids = [p.popen.pid for p in services.processes.values()]
            ports = [services.api_port, services.emulator_port]
            services.stop_all()
    assert not [pid for pid in pids if is_running(pid)], "a process outlived the stack"
    assert all(port_is_free(port) for port in ports), "a port is still taken"


def listing(stack: Stack) -> dict[str, Any]:
    response = requests.get(f"{stack.url}/jobs", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def sweeps(stack: Stack) -> int:
    """How many times the schedule has run the recovery sweep so far."""
    return stack.log.count("schedule='rate(1 minute)'")


def test_a_paused_local_worker_keeps_every_job_queued_until_resumed(
    stack: tuple[Stack, Path],
) -> None:
    running, project = stack
    env = isolated_environment(EMULATOR_PORT=str(running.services.emulator_port))
    assert listing(running)["paused"] is False

    paused = run_make(project, env, "pause", f"STAGE={STAGE}")

    assert "paused" in paused.stdout
    # It returned once the event source reported the mapping disabled (its state file):
    # from now on nothing is received. The runner logs that line just after writing the
    # file, and the line reaches the stack's log through a pipe, so it may come a moment
    # after `make pause` returned.
    wait_for(
        lambda: "process_job: event source disabled" in running.log,
        10,
        lambda: running.log[-3000:],
    )
    submitted = [running.submit(N)["job_id"] for _ in range(JOBS)]
    # The worker's other functions run on: wait out two sweeps, as time passing.
    seen = sweeps(running)
    wait_for(lambda: sweeps(running) >= seen + 2, 30, lambda: running.log[-3000:])
    assert {running.job(j)["status"] for j in submitted} == {"queued"}
    assert running.depth() == JOBS  # all waiting on the queue, none in flight
    # Everything that shows jobs says why they wait.
    assert listing(running)["paused"] is True
    listed = jobs("list", url=running.url)
    assert listed.returncode == 0 and PAUSED_LINE in listed.stderr
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{running.url}/")
        expect(page.locator("#paused-banner")).to_be_visible(timeout=10_000)
        page.close()

    resumed = run_make(project, env, "resume", f"STAGE={STAGE}")

    assert "resumed" in resumed.stdout
    for job_id in submitted:
        job = running.wait_for_job(job_id, lambda j: j["status"] == "succeeded")
        assert job["result"] == N and job["attempts"] == 1
    assert listing(running)["paused"] is False
    assert PAUSED_LINE not in jobs("list", url=running.url).stderr
    wait_for(lambda: running.depth() == 0, 30, "the job queue to drain")
    assert running.depth("DeadLetterQueueUrl") == 0  # none lost, none dead-lettered


def test_a_worker_paused_while_the_stack_was_down_starts_paused(
    stack: tuple[Stack, Path],
) -> None:
    """The mapping state outlives `make run` (a file); a new emulator's table does not,
    so the start records it again and the API keeps saying so."""
    running, project = stack
    services = running.services
    services.stop_all()
    env = isolated_environment(EMULATOR_PORT=str(services.emulator_port))

    paused = run_make(project, env, "pause", f"STAGE={STAGE}")  # nothing running

    assert "not recorded in the job table" in paused.stdout
    services.start_all()
    assert "the worker is paused" in running.log
    assert listing(running)["paused"] is True
    job_id = running.submit(N)["job_id"]

    run_make(project, env, "resume", f"STAGE={STAGE}")

    running.wait_for_job(job_id, lambda j: j["status"] == "succeeded")
    assert listing(running)["paused"] is False
