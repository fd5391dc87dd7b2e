"""Recurring schedules on a live local stack: POST /schedules makes an EventBridge
Scheduler schedule in the emulator, the local Scheduler (infra/event_source/scheduler.py)
fires it, and the firing function submits the job, once, owned by the schedule's client.

A rate schedule without a start date fires at once on creation, as EventBridge Scheduler
documents it ("Schedule types in EventBridge Scheduler"), so the test waits on that first
fire rather than on a minute boundary; cron fire times, in a time zone, are checked with an
injected clock (tests/infra/event_source/test_scheduler.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from tests.e2e.conftest import Stack
from tests.waiting import wait_for


def scheduled_jobs(stack: Stack, name: str) -> list[dict[str, Any]]:
    jobs = requests.get(f"{stack.url}/jobs?limit=100", timeout=10).json()["jobs"]
    return [job for job in jobs if job["schedule"] == name]


def test_a_schedule_fires_on_the_local_stack(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    body = {"name": "hourly", "kind": "heavyLoad", "input": {"n": 1000}, "schedule": "rate(1 hour)"}
    created = requests.post(f"{stack.url}/schedules", json=body, timeout=30)
    assert created.status_code == 201, created.text

    def fired() -> list[dict[str, Any]] | None:
        jobs = scheduled_jobs(stack, "hourly")
        return jobs if jobs and all(job["status"] == "succeeded" for job in jobs) else None

    jobs = wait_for(fired, 60, lambda: f"no job of the schedule; log:\n{stack.log[-4000:]}")
    assert len(jobs) == 1
    assert jobs[0]["client"] == "anonymous" and jobs[0]["input"] == {"n": 1000}
    assert stack.log.count("function=heavy-jobs-local-fire_schedule") == 1

    paused = requests.post(f"{stack.url}/schedules/hourly/pause", timeout=30)
    assert paused.json()["state"] == "paused"
    assert requests.delete(f"{stack.url}/schedules/hourly", timeout=30).status_code == 204
    assert scheduled_jobs(stack, "hourly") == jobs
