"""Figure 11: how close to its ``run_at`` a job that runs later starts, on the
local stack with its lane free (docs/later.md: within 1 s at p99).

On a stack of its own, with the worker started and warm (a first job through the delay
queue warms the forwarder too), ``Sizes.later_jobs`` rounds of, alternated:

- a job submitted with ``delay_seconds`` = ``Sizes.later_delay_seconds`` (the delay
  queue's path: its message waits there, and ``forward_delayed`` puts it on the job queue
  at its time), each awaited before the next so its lane is free at its time; its
  lateness is the worker's ``started_at`` minus the job's ``run_at``;
- a job submitted to run at once, its ``started_at`` minus its ``created_at``: what
  starting a job with a free lane costs at all, the floor the later job stands on.

The comparison is the later jobs' p99 lateness against the immediate jobs' p99
queue-to-start, with the absolute limit of 1 s. A job that ever started before its
``run_at`` (a negative lateness) fails the figure: it must never happen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import FINAL, BenchStack, epoch, progress
from bench.stats import Comparison, Figure, Series, ms, p50, p99
from chalicelib.jobs import Job

NUMBER = "11"
LIMIT_MS = 1000.0


def figure_11(workdir: Path, sizes: Sizes) -> Figure:
    (workdir / "later").mkdir(parents=True, exist_ok=True)
    late: list[float] = []
    floor: list[float] = []
    with BenchStack.running(workdir / "later") as stack, HttpClient(stack.url) as api:
        progress(f"figure {NUMBER}: own stack up: API {stack.url}")
        stack.start_worker(api)
        _run(stack, api, 1)  # warms the forwarder's execution environment
        for round_ in range(sizes.later_jobs):
            if round_ % 10 == 0:
                progress(f"figure {NUMBER}: round {round_ + 1} of {sizes.later_jobs}")
            job = _run(stack, api, sizes.later_delay_seconds)
            if job.run_at is None:
                raise RuntimeError(f"a job submitted later has no run_at: {job}")
            late.append(epoch(job.started_at) - epoch(job.run_at))
            now = _run(stack, api, None)
            floor.append(epoch(now.started_at) - epoch(now.created_at))
        if stack.services.dead():
            raise RuntimeError(f"{stack.services.dead()} died; log:\n{stack.log_tail()}")
    if min(late) < 0:
        raise RuntimeError(f"a job started {-min(late):.3f} s before its run_at")
    figure = Figure(NUMBER, "Jobs that run later: start after run_at, lane free")
    figure.comparisons = [
        Comparison(
            NUMBER,
            "start after run_at p99 (delay queue) vs start after created_at p99 (at once)",
            1000 * p99(late), 1000 * p99(floor), "ms", "later", "at once",
            f"{len(late)} / {len(floor)}", absolute_limit=LIMIT_MS,
        ),
        Comparison(
            NUMBER, "start after run_at p50 vs start after created_at p50",
            1000 * p50(late), 1000 * p50(floor), "ms", "later", "at once",
            f"{len(late)} / {len(floor)}",
        ),
    ]  # fmt: skip
    figure.notes.append(
        f"Later jobs were submitted {sizes.later_delay_seconds} s ahead; none started "
        f"before its run_at (earliest: {1000 * min(late):.1f} ms after it)."
    )
    figure.series = [
        Series("start after run_at", "ms", ms(late)),
        Series("start after created_at (at once)", "ms", ms(floor)),
    ]
    return figure


def _run(stack: BenchStack, api: HttpClient, delay_seconds: int | None) -> Job:
    """Submit a trivial job (``delay_seconds`` ahead, or at once) and wait for its end."""
    body: dict[str, object] = {"n": 0}
    if delay_seconds is not None:
        body["delay_seconds"] = delay_seconds
    headers = {"Content-Type": "application/json"}
    _, data = api.timed("POST", "/heavy", json.dumps(body).encode(), headers, expect=202)
    job_id = json.loads(data)["job_id"]
    time.sleep(delay_seconds or 0)
    return stack.wait_job(job_id, lambda j: j.status.value in FINAL, timeout=120)
