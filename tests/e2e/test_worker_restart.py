"""Restarting the local worker alone (`make worker` in a terminal of its own) while jobs
keep coming: no job waits for the job queue's visibility timeout.

The worker polls as `make worker` does (20 s long polls, the stage's own schedule), so a
stopped worker's last long poll is still open in the emulator when jobs arrive. Stopped
by a signal, it lets that poll finish and makes what it took visible again; killed, the
next worker takes it back (infra/event_source/receives.py). Either way every job runs,
in submission order, soon after the new worker is up.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.e2e.conftest import Stack
from tests.waiting import wait_for

# How soon after the new worker is up (or after its submission, if later) each job must
# start: far below the job queue's visibility timeout, which is what a stranded message
# costs. Measured on this 2-core machine: about 3 s after a signal (the new worker's cold
# start), about 20 s after a kill (the dead worker's long poll, 20 s, must end before
# what it took can be taken back); the bounds leave room for a loaded machine.
AFTER_A_SIGNAL_SECONDS = 30
AFTER_A_KILL_SECONDS = 45
WORKER = "worker"


def restartable_stack(make_stack: Callable[..., Stack]) -> Stack:
    stack = make_stack(worker=False)
    stack.services.worker_args = ()  # as `make worker` runs it: 20 s polls
    stack.services.start_worker(WORKER)
    return stack


def polling(stack: Stack) -> bool:
    """Whether the worker has a receive of the job queue open (its journal says so)."""
    receives = (
        stack.services.project_dir
        / ".chalice/event-sources"
        / stack.services.stage
        / "process_job.receives"
    )
    return any(receives.glob("*.json"))


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Submitter:
    """Submits a small job every ``every`` seconds in a thread, until stopped, except while
    paused; remembers each job's id and when it was submitted (wall clock)."""

    def __init__(self, stack: Stack, every: float = 0.5) -> None:
        self.submitted: list[tuple[str, float]] = []
        self._stack, self._every = stack, every
        self._stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.running.wait(0.1):
                self.submitted.append((self._stack.submit(1000)["job_id"], time.time()))
                self._stop.wait(self._every)


def all_succeeded(stack: Stack, submitted: list[tuple[str, float]]) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        jobs = [stack.job(job_id) for job_id, _ in list(submitted)]
        return jobs if all(j["status"] == "succeeded" for j in jobs) else None

    jobs: list[dict[str, Any]] = wait_for(
        done, 120, lambda: f"every job to succeed; the log ends:\n{stack.log[-4000:]}"
    )
    return jobs


def check(
    jobs: list[dict[str, Any]], submitted: list[tuple[str, float]], up: float, bound: float
) -> None:
    starts = [moment(j["started_at"]) for j in jobs]
    assert starts == sorted(starts), "jobs started out of submission order"
    late = [
        (j["job_id"], round(start - max(at, up), 1))
        for j, start, (_, at) in zip(jobs, starts, submitted, strict=True)
        if start - max(at, up) > bound
    ]
    assert not late, f"started more than {bound} s late: {late}"


def test_a_worker_stopped_by_sigterm_and_restarted_runs_every_job_in_order_promptly(
    make_stack: Callable[..., Stack],
) -> None:
    stack = restartable_stack(make_stack)
    wait_for(lambda: polling(stack), 30, "the worker to poll")
    with Submitter(stack) as submitter:
        wait_for(lambda: len(submitter.submitted) >= 3, 30, "jobs to be submitted")
        # Stopped between jobs, as a user stops an idle worker: a job running at the
        # signal is interrupted like a crashed execution environment, and its message
        # waits for the job's hold or the queue's visibility timeout (Lambda's rule).
        submitter.running.clear()
        all_succeeded(stack, submitter.submitted)
        old = stack.services.processes.pop(WORKER)
        old.popen.send_signal(signal.SIGTERM)
        submitter.running.set()
        # Jobs keep arriving while it finishes its open long poll and exits.
        status = old.popen.wait(30)
        assert status == 0, f"the worker exited {status}; the log ends:\n{stack.log[-6000:]}"
        wait_for(lambda: len(submitter.submitted) >= 8, 30, "jobs submitted while stopped")
        up = time.time()
        stack.services.start_worker("worker2")
        wait_for(lambda: len(submitter.submitted) >= 14, 30, "jobs submitted after the restart")
    jobs = all_succeeded(stack, submitter.submitted)
    check(jobs, submitter.submitted, up, AFTER_A_SIGNAL_SECONDS)


def test_a_killed_worker_strands_no_job_once_another_starts(
    make_stack: Callable[..., Stack],
) -> None:
    stack = restartable_stack(make_stack)
    wait_for(lambda: polling(stack), 30, "the worker to poll")
    time.sleep(1)  # the journal entry is written just before the request leaves
    stack.services.processes.pop(WORKER).kill()  # SIGKILL: no chance to clean up
    submitted = [(stack.submit(1000)["job_id"], time.time()) for _ in range(3)]
    up = time.time()
    stack.services.start_worker("worker2")

    check(all_succeeded(stack, submitted), submitted, up, AFTER_A_KILL_SECONDS)
