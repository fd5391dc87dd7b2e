"""Jobs that run later on the live local stack (docs/later.md): a job submitted a few
seconds ahead waits off the job queue and starts at its time, within the precision the
page states (generous bounds here: `make bench`'s figure 11 measures it), never
before; one cancelled before its time never starts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import requests

from tests.e2e.conftest import Stack
from tests.waiting import wait_for

DELAY_SECONDS = 3


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_job_submitted_a_few_seconds_ahead_starts_at_its_time(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    # Warm: a first job through the delay queue starts the forwarder's and the worker's
    # sandboxes (a cold start on a loaded machine can take seconds; the precision is
    # that of a warm stack).
    warm = requests.post(f"{stack.url}/heavy", json={"n": 1, "delay_seconds": 1}, timeout=30)
    stack.wait_for_job(warm.json()["job_id"], lambda j: j["status"] == "succeeded", timeout=180)
    later = requests.post(
        f"{stack.url}/jobs",
        json={"kind": "heavyLoad", "input": {"n": 1000}, "delay_seconds": DELAY_SECONDS},
        timeout=30,
    )
    assert later.status_code == 202, later.text
    job = later.json()
    assert job["status"] == "queued" and job["run_at"] is not None
    cancelled = requests.post(
        f"{stack.url}/heavy", json={"n": 1000, "delay_seconds": DELAY_SECONDS}, timeout=30
    ).json()
    assert requests.post(f"{stack.url}/jobs/{cancelled['job_id']}/cancel", timeout=10).ok
    assert stack.depth() == 0  # neither is on the job queue before its time

    done = stack.wait_for_job(job["job_id"], lambda j: j["status"] == "succeeded", timeout=120)
    late = (moment(done["started_at"]) - moment(done["run_at"])).total_seconds()
    assert 0 <= late < 5, late  # never early; on time, with room for a loaded machine
    # The cancelled one's message came and went without starting it.
    wait_for(lambda: stack.depth() == 0 and stack.depth("DelayQueueUrl") == 0, 60, "empty queues")
    assert stack.job(cancelled["job_id"])["status"] == "cancelled"
    assert stack.job(cancelled["job_id"])["attempts"] == 0
