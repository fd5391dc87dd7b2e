"""countPrimes on the local stack as real processes: a worker SIGKILLed mid-sieve, and
the next one resuming from the checkpoint to the published count."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.e2e.conftest import Stack
from tests.e2e.test_faults import run_killing_the_worker_midway, started, succeeded_logged
from tests.waiting import wait_for

# pi(10^9) (OEIS A006880): 240 segments of the sieve, about 20 s of work here. Long
# enough that the kill, made once a checkpoint shows a third done, lands mid-sieve:
# checkpoints are written at most once a second, and pi(10^8) (2 s) could finish first.
BELOW, PRIMES = 10**9, 50_847_534


def test_killed_worker_count_primes_resumes_from_its_checkpoint(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    answer = requests.post(
        f"{stack.url}/jobs", json={"kind": "countPrimes", "input": {"below": BELOW}}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    job, progress = run_killing_the_worker_midway(stack, job_id, 120, 300)

    assert job["result"] == {"count": PRIMES} and job["attempts"] == 2
    assert progress == sorted(progress)  # never fell back: it resumed from the checkpoint
    runs = started(stack, job_id)
    assert [r["attempt"] for r in runs] == [1, 2]
    assert runs[0].get("state") is None  # a fresh start (the logger leaves out None)
    assert runs[1]["state"]["low"] >= 0.3 * BELOW  # from the checkpoint, not from 0
    # The worker writes its log line after the job's item: wait for it, then count.
    wait_for(lambda: succeeded_logged(stack), 30, "the worker's 'Job succeeded' log line")
    assert succeeded_logged(stack) == 1
