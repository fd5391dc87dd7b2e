"""Waiting for results over real HTTP: Prefer: wait and ?wait=N hold only their own
request; /fast keeps answering meanwhile."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import requests

from tests.e2e.conftest import Stack
from tests.e2e.test_local_stack import SECONDS_OF_WORK, latencies


def test_prefer_wait_returns_the_result_of_a_short_job(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    response = requests.post(
        f"{stack.url}/heavy", json={"n": 1000}, headers={"Prefer": "wait=20"}, timeout=30
    )
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded" and response.json()["result"] == 1000


def test_prefer_wait_gives_the_202_after_about_n_seconds_for_a_long_job(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    start = time.monotonic()
    response = requests.post(
        f"{stack.url}/heavy",
        json={"n": 50 * SECONDS_OF_WORK},
        headers={"Prefer": "wait=2"},
        timeout=30,
    )
    waited = time.monotonic() - start
    assert response.status_code == 202 and "Location" in response.headers
    assert 2 <= waited < 10  # it waited the 2 s asked for, not for the job
    requests.post(f"{stack.url}/jobs/{response.json()['job_id']}/cancel", timeout=10)


def test_fast_stays_fast_while_requests_wait(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    fast = f"{stack.url}/fast"
    latencies(fast, 50)
    idle = latencies(fast, 200)
    job_id = stack.submit(50 * SECONDS_OF_WORK)["job_id"]
    waiters = [
        threading.Thread(
            target=requests.get, args=(f"{stack.url}/jobs/{job_id}?wait=8",), kwargs={"timeout": 30}
        )
        for _ in range(5)
    ]
    for waiter in waiters:
        waiter.start()
    during = latencies(fast, 200)
    # Started before the measurement and still waiting after it: they waited through it.
    assert all(w.is_alive() for w in waiters)
    for waiter in waiters:
        waiter.join()

    assert statistics.median(during) < 3 * statistics.median(idle), (
        statistics.median(idle),
        statistics.median(during),
    )
    requests.post(f"{stack.url}/jobs/{job_id}/cancel", timeout=10)
