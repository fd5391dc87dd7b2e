"""Figures 3 and 5: from the 202 to ``running``, and trivial jobs per second, against
the floor of the AWS calls on the same path.

The floor is a pipeline of bare calls with the product's shape: the benchmark itself
plays the API (the quota's Query, one PutItem, one SendMessage) and
``bench.floor_worker`` plays the worker (receive, claim, result, delete) on a queue of its
own with the job queue's settings, in the same table. Product and floor take turns.

Queue-to-start is ``started_at`` (written by the claim, from the worker's clock) minus the
wall-clock time at which the client had read the 202 (for the floor: had the
SendMessage's answer): one clock, millisecond timestamps, no polling error. The worker is
idle before each job: each job is waited for, then a pause of 50-250 ms, so the worker
sits in its long poll when the message arrives.

Throughput keeps ``window`` jobs in flight (so the queue never holds more than that): a
submitting thread adds one as soon as one finishes; completion is read with GetItem by
the benchmark on both sides. Jobs per second = jobs / (first submit to last completion).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import FINAL, BenchStack, Submitted, epoch, progress, submit
from bench.stats import Comparison, Figure, Series, Target, ms, p50, p99
from chalicelib.jobs import Job, to_item, to_message, utc_now
from chalicelib.queue import MESSAGE_GROUP
from infra.run import PROJECT_DIR

QUEUE_TO_START_LIMIT_MS = 100.0
THROUGHPUT_TARGET = Target(low=0.7)
RETENTION = timedelta(days=7)
FLOOR_QUEUE = "heavy-jobs-bench-floor.fifo"


class Floor:
    """The bare pipeline: submit as the API does, consumed by ``bench.floor_worker``."""

    def __init__(self, stack: BenchStack, queue_url: str) -> None:
        self.stack = stack
        self.queue_url = queue_url

    def submit(self) -> Submitted:
        self.stack.read_quota()  # before the job's created_at, as in the API
        job = Job.new(n=0, now=utc_now(), retention=RETENTION)
        self.stack.client("dynamodb").put_item(
            TableName=self.stack.table_name,
            Item=to_item(job),
            ConditionExpression="attribute_not_exists(job_id)",
        )
        self.stack.client("sqs").send_message(
            QueueUrl=self.queue_url,
            MessageBody=to_message(job),
            MessageGroupId=MESSAGE_GROUP,
            MessageDeduplicationId=job.job_id,
        )
        return Submitted(job.job_id, time.time())


@contextmanager
def floor_running(stack: BenchStack) -> Iterator[Floor]:
    queue_url = stack.create_queue_like_jobs(FLOOR_QUEUE)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.floor_worker", "--queue-url", queue_url,
         "--table", stack.table_name],
        cwd=PROJECT_DIR,
        env=stack.environment(),
    )  # fmt: skip
    floor = Floor(stack, queue_url)
    try:
        warm = floor.submit()  # its import and first calls, before any sample
        stack.wait_job(warm.job_id, lambda j: j.status.value == "succeeded", timeout=60)
        yield floor
    finally:
        process.terminate()
        process.wait(10)


# --- figure 3 ----------------------------------------------------------------------------


def _queue_to_start(stack: BenchStack, submitted: Submitted) -> tuple[float, float]:
    """Seconds from the 202 to started_at, and from created_at to started_at."""
    job = stack.wait_job(submitted.job_id, lambda j: j.status.value in FINAL, interval=0.02)
    started = epoch(job.started_at)
    return started - submitted.accepted_at, started - epoch(job.created_at)


def figure_3(stack: BenchStack, floor: Floor, sizes: Sizes) -> Figure:
    product = Series("queue_to_start", "s")
    product_created = Series("created_to_start", "s")
    bare = Series("floor_queue_to_start", "s")
    bare_created = Series("floor_created_to_start", "s")
    rng = random.Random(3)
    progress(f"figure 3: queue-to-start, {sizes.queue_samples} jobs each")
    with HttpClient(stack.url) as api:
        for i in range(sizes.queue_samples):
            for side in ("product", "floor") if i % 2 == 0 else ("floor", "product"):
                time.sleep(rng.uniform(0.05, 0.25))
                if side == "product":
                    to_start, from_created = _queue_to_start(stack, submit(api, 0))
                    product.add(to_start)
                    product_created.add(from_created)
                else:
                    to_start, from_created = _queue_to_start(stack, floor.submit())
                    bare.add(to_start)
                    bare_created.add(from_created)
    figure = Figure("3", "Queue-to-start: from the 202 to running, worker idle")
    count = f"{product.count} / {bare.count}"
    figure.comparisons = [
        Comparison(
            "3", "queue-to-start p50, from the 202 to running (negative: running before "
            "the client had read its 202) vs floor", 1000 * p50(product.samples),
            1000 * p50(bare.samples), "ms", "202 → running", "floor", count,
            absolute_limit=QUEUE_TO_START_LIMIT_MS,
            note=f"target: p50 ≤ {QUEUE_TO_START_LIMIT_MS:g} ms",
        ),
        Comparison(
            "3", "queue-to-start p50 from created_at (before the PutItem) vs floor (bare "
            "PutItem, SendMessage → long poll → claim)", 1000 * p50(product_created.samples),
            1000 * p50(bare_created.samples), "ms", "created → running", "floor", count,
        ),
        Comparison(
            "3", "queue-to-start p99 from created_at vs floor",
            1000 * p99(product_created.samples), 1000 * p99(bare_created.samples), "ms",
            "created → running", "floor", count,
        ),
    ]  # fmt: skip
    figure.notes.append(
        "From created_at (before the PutItem) to started_at, p50 "
        f"{1000 * p50(product_created.samples):.1f} ms; from the 202, "
        f"{1000 * p50(product.samples):.1f} ms. Timestamps: started_at is written by the "
        "worker's claim; the 202's time is the client's wall clock (same machine)."
    )
    figure.series = [
        Series(s.name, "ms", ms(s.samples)) for s in (product, product_created, bare, bare_created)
    ]
    return figure


# --- figure 5 ----------------------------------------------------------------------------


def run_batch(
    stack: BenchStack, submit_one: Callable[[], Submitted], jobs: int, window: int
) -> float:
    """Jobs per second through a pipeline with at most ``window`` jobs in flight."""
    slots = threading.Semaphore(window)
    outstanding: deque[str] = deque()
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            for _ in range(jobs):
                slots.acquire()
                outstanding.append(submit_one().job_id)
        except BaseException as error:  # surfaced by the caller below
            errors.append(error)

    start = time.perf_counter()
    thread = threading.Thread(target=submitter, name="submitter", daemon=True)
    thread.start()
    done = 0
    deadline = time.monotonic() + 120 + jobs
    while done < jobs:
        if errors:
            raise errors[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {jobs} jobs finished; log:\n{stack.log_tail()}")
        if outstanding:
            job = stack.job(outstanding[0])
            if job is not None and job.status.value in FINAL:
                outstanding.popleft()
                done += 1
                slots.release()
                continue
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    thread.join(10)
    return jobs / elapsed


def figure_5(stack: BenchStack, floor: Floor, sizes: Sizes) -> Figure:
    product = Series("throughput", "jobs/s")
    bare = Series("floor_throughput", "jobs/s")
    with HttpClient(stack.url) as api:
        for round_ in range(sizes.throughput_rounds):
            progress(
                f"figure 5: {sizes.throughput_jobs} trivial jobs each, "
                f"round {round_ + 1}/{sizes.throughput_rounds}"
            )
            sides: list[tuple[Series, Callable[[], Submitted]]] = [
                (product, lambda: submit(api, 0)),
                (bare, floor.submit),
            ]
            for series, submit_one in sides if round_ % 2 == 0 else reversed(sides):
                series.add(
                    run_batch(stack, submit_one, sizes.throughput_jobs, sizes.throughput_window)
                )
    figure = Figure("5", "Throughput of trivial jobs (n = 0), queue kept shallow")
    figure.comparisons = [
        Comparison(
            "5", "trivial jobs per second, end to end vs floor (the AWS calls each job needs)",
            p50(product.samples), p50(bare.samples), "jobs/s", "end to end", "floor",
            f"{product.count} / {bare.count} batches", THROUGHPUT_TARGET,
        ),
    ]  # fmt: skip
    figure.notes.append(
        f"Batches of {sizes.throughput_jobs} jobs with at most {sizes.throughput_window} in "
        "flight (so at most that many messages on the queue); the median batch is compared. "
        "Each job's calls: PutItem, SendMessage (API); ReceiveMessage, UpdateItem (claim), "
        "ChangeMessageVisibility (the message hold), UpdateItem (result), DeleteMessageBatch "
        "(worker)."
    )
    figure.series = [product, bare]
    return figure
