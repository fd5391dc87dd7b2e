"""``jobs watch``: a live progress bar with the loop's rate and the time left.

The worker writes a job's progress at most about once a second, so the job is read once
a second. The rate comes from the progress values seen to change, over the last
``RATE_WINDOW_SECONDS`` (the local clock only, so clock skew with the server does not
matter); until three changes have been seen, it is estimated from the job's own start.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from jobs_cli import render
from jobs_cli.client import FINAL_STATUSES, Api, Job

POLL_SECONDS = 1.0
RATE_WINDOW_SECONDS = 30.0


class RateEstimator:
    """Iterations per second over the recent changes of a job's progress."""

    def __init__(self, clock: Callable[[], float], window: float = RATE_WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, done: float) -> None:
        now = self._clock()
        if self._samples and done <= self._samples[-1][1]:
            return  # unchanged since the last write: no new information
        self._samples.append((now, done))
        while len(self._samples) > 3 and now - self._samples[0][0] > self._window:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 3:
            return None
        (first_time, first_done), (last_time, last_done) = self._samples[0], self._samples[-1]
        elapsed = last_time - first_time
        return (last_done - first_done) / elapsed if elapsed > 0 else None


def watch(
    api: Api,
    job_id: str,
    console: Console,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Job:
    """Show the job's progress until it finishes; return it as it ended."""
    next_read = clock() + POLL_SECONDS
    job = api.job(job_id)
    if job.get("status") in FINAL_STATUSES:
        return job
    estimator = RateEstimator(clock)
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        TextColumn("{task.fields[status]:<9}", markup=False),
        BarColumn(),
        # Not rich's TaskProgressColumn: it rounds, and 99.6% must not show as 100%.
        TextColumn("{task.fields[percent]:>4}", markup=False),
        TextColumn("{task.fields[rate]:>13}", markup=False),
        TextColumn("{task.fields[eta]}", markup=False),
        console=console,
        auto_refresh=False,
    )
    with progress:
        task = progress.add_task(
            job_id[:8], total=_total(job), status="", percent="", rate="", eta=""
        )
        while True:
            _show(progress, task, job, estimator, now())
            if job.get("status") in FINAL_STATUSES:
                return job
            sleep(max(0.0, next_read - clock()))
            next_read = clock() + POLL_SECONDS
            job = api.job(job_id)


def _total(job: Job) -> float:
    n = job.get("n")
    return float(n) if isinstance(n, int) and n > 0 else 1.0


def _show(
    progress: Progress, task: TaskID, job: Job, estimator: RateEstimator, now: datetime
) -> None:
    total = _total(job)
    done = min(1.0, max(0.0, float(job.get("progress") or 0))) * total
    estimator.observe(done)
    per_second = estimator.rate()
    if per_second is None:
        _, run_time = render.timings(job, now)
        per_second = done / run_time if run_time and done else None
    running = job.get("status") == "running"
    left = (total - done) / per_second if running and per_second else None
    progress.update(
        task,
        completed=done,
        status=str(job.get("status")),
        percent=render.percent(job.get("progress")),
        rate=render.rate(per_second) if running else "",
        eta=f"{render.duration(left)} left" if left is not None else "",
    )
    progress.refresh()
