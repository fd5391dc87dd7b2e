"""Figure 12: bulk submission. 1,000 jobs submitted one ``POST /jobs`` at a time, the same
1,000 in ``POST /jobs/batch`` requests of 100, and the floor of the batches: the same batch
calls made bare.

On a stack of its own, with no worker (every job stays queued). Each round submits the jobs
three ways, in a random order:

- singles: 1,000 ``POST /jobs`` (heavyLoad, n = 0), one after the other;
- batches: the same jobs as ``POST /jobs/batch`` requests of MAX_BATCH_JOBS items;
- bare: what the batches cannot do without, made with bare boto3 from the benchmark on the
  same emulator, table and queue: per 100 jobs, the BatchWriteItem calls of their records
  (25 a call, the API's items) and the SendMessageBatch calls of their messages (10 a call,
  to the FIFO job queue with the API's group and deduplication ids). The records and
  messages are built before the clock starts: the floor is the calls alone.

Each way is timed from its first request to its last answer; after each, the queue is
drained and the jobs made deleted, so every way starts from an empty queue. The stack has no
quota (``QUOTAS_OFF``): with one, each request reads the caller's active jobs, up to the
quota, and 1,000 queued jobs of one client under the other figures' raised quota would make
that read, not the submission, what is measured (a batch reads it once, a single POST once
per job; figure 2 measures one read). The ratios are the median of each round's pair
(``Comparison.paired_ratios``).
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import QUOTAS_OFF, BenchStack, progress
from bench.stats import Comparison, Figure, Series, Target, p50
from chalicelib.jobs import DEFAULT_KIND, Job, to_item, to_message, utc_now
from chalicelib.queue import SEND_BATCH_LIMIT, message_group
from chalicelib.requests import MAX_BATCH_JOBS

NUMBER = "12"
# The targets: batches at least 5x faster than singles, and within 1.3x of the
# bare batch calls.
FASTER = Target(low=5.0)
NEAR_FLOOR = Target(high=1.3)
RETENTION = timedelta(days=7)  # the API's default JOBS_RETENTION_DAYS
# BatchWriteItem's limit on items a call (DynamoDB API Reference, "BatchWriteItem").
WRITE_LIMIT = 25
JSON_TYPE = {"Content-Type": "application/json"}
ITEM = {"kind": DEFAULT_KIND, "input": {"n": 0}}
WAYS = ("singles", "batches", "bare")


def figure_12(workdir: Path, sizes: Sizes) -> Figure:
    # A directory of its own: the shared stack's project copy is already in workdir.
    (workdir / "bulk").mkdir(parents=True, exist_ok=True)
    with BenchStack.running(workdir / "bulk", QUOTAS_OFF) as stack:
        progress(
            f"figure {NUMBER}: bulk submission, "
            f"{sizes.bulk_rounds} rounds of {sizes.bulk_jobs} jobs"
        )
        return _measure(stack, sizes)


def _measure(stack: BenchStack, sizes: Sizes) -> Figure:
    api = HttpClient(stack.url)
    ddb, sqs = stack.client("dynamodb"), stack.client("sqs")
    per_batch = min(MAX_BATCH_JOBS, sizes.bulk_jobs)

    def singles(jobs: int) -> tuple[float, list[str]]:
        body = json.dumps(ITEM).encode()
        ids: list[str] = []
        start = time.perf_counter()
        for _ in range(jobs):
            _, data = api.timed("POST", "/jobs", body, JSON_TYPE, expect=202)
            ids.append(json.loads(data)["job_id"])
        return time.perf_counter() - start, ids

    def batches(jobs: int) -> tuple[float, list[str]]:
        ids: list[str] = []
        start = time.perf_counter()
        for first in range(0, jobs, per_batch):
            count = min(per_batch, jobs - first)
            body = json.dumps({"jobs": [ITEM] * count}).encode()
            _, data = api.timed("POST", "/jobs/batch", body, JSON_TYPE, expect=207)
            results = json.loads(data)["results"]
            if any(r["status"] != 202 for r in results):
                raise RuntimeError(f"a batch item was not made: {results}")
            ids.extend(r["job"]["job_id"] for r in results)
        return time.perf_counter() - start, ids

    def bare(jobs: int) -> tuple[float, list[str]]:
        made = [
            Job.new(kind=DEFAULT_KIND, input={"n": 0}, now=utc_now(), retention=RETENTION)
            for _ in range(jobs)
        ]
        groups = [made[first : first + per_batch] for first in range(0, jobs, per_batch)]
        writes = [
            [_writes(group[i : i + WRITE_LIMIT]) for i in range(0, len(group), WRITE_LIMIT)]
            for group in groups
        ]
        sends = [
            [
                _entries(group[i : i + SEND_BATCH_LIMIT])
                for i in range(0, len(group), SEND_BATCH_LIMIT)
            ]
            for group in groups
        ]
        start = time.perf_counter()
        writing = 0.0
        for group_writes, group_sends in zip(writes, sends, strict=True):
            write_start = time.perf_counter()
            for requests in group_writes:
                response = ddb.batch_write_item(RequestItems={stack.table_name: requests})
                if response.get("UnprocessedItems"):
                    raise RuntimeError("the emulator left items unprocessed")
            writing += time.perf_counter() - write_start
            for entries in group_sends:
                response = sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=entries)
                if response.get("Failed"):
                    raise RuntimeError(f"the emulator refused messages: {response['Failed']}")
        elapsed = time.perf_counter() - start
        bare_parts["BatchWriteItem"].add(writing)
        bare_parts["SendMessageBatch"].add(elapsed - writing)
        return elapsed, [job.job_id for job in made]

    bare_parts = {name: Series(name, "s") for name in ("BatchWriteItem", "SendMessageBatch")}
    ways = {"singles": singles, "batches": batches, "bare": bare}
    series = {name: Series(name, "s") for name in WAYS}

    def clean(ids: list[str]) -> None:
        stack.drain()
        stack.delete_jobs(ids)

    for name in WAYS:  # warm every path (the API's clients, the emulator's code paths)
        clean(ways[name](per_batch)[1])
    rng = random.Random(10)
    for round in range(sizes.bulk_rounds):
        order = list(WAYS)
        rng.shuffle(order)
        for name in order:
            seconds, ids = ways[name](sizes.bulk_jobs)
            series[name].add(seconds)
            clean(ids)
        progress(
            f"figure {NUMBER}: round {round + 1}: "
            + ", ".join(f"{n} {series[n].samples[-1]:.2f} s" for n in WAYS)
        )
    api.close()
    figure = _figure(series, sizes)
    parts = ", ".join(
        f"{name} {1000 * p50(part.samples[1:]) / sizes.bulk_jobs:.2f}"  # the warm-up left out
        for name, part in bare_parts.items()
    )
    figure.notes.append(f"The floor's parts per job, p50 of the rounds, in ms: {parts}.")
    return figure


def _writes(jobs: list[Job]) -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": to_item(job)}} for job in jobs]


def _entries(jobs: list[Job]) -> list[dict[str, Any]]:
    entries = []
    for index, job in enumerate(jobs):
        body = to_message(job)
        entries.append(
            {
                "Id": str(index),
                "MessageBody": body,
                "MessageGroupId": message_group(body),
                "MessageDeduplicationId": job.job_id,
            }
        )
    return entries


def _figure(series: dict[str, Series], sizes: Sizes) -> Figure:
    singles, batches, bare = (series[name].samples for name in WAYS)
    rounds = f"{len(singles)} / {len(batches)} rounds"
    jobs = f"{sizes.bulk_jobs:,}"
    figure = Figure(NUMBER, f"Bulk submission: {jobs} jobs in batches of {MAX_BATCH_JOBS}")
    figure.comparisons = [
        Comparison(
            NUMBER, f"{jobs} jobs: one POST /jobs each vs POST /jobs/batch of {MAX_BATCH_JOBS} "
            "(how many times faster the batches are)",
            p50(singles), p50(batches), "s", "singles", "batches", rounds, FASTER,
            paired_ratios=tuple(s / b for s, b in zip(singles, batches, strict=True)),
        ),
        Comparison(
            NUMBER, f"{jobs} jobs: POST /jobs/batch vs its floor (the same BatchWriteItem and "
            "SendMessageBatch calls, bare)",
            p50(batches), p50(bare), "s", "batches", "bare calls", rounds, NEAR_FLOOR,
            paired_ratios=tuple(b / f for b, f in zip(batches, bare, strict=True)),
        ),
    ]  # fmt: skip
    per_job = ", ".join(
        f"{name} {1000 * p50(series[name].samples) / sizes.bulk_jobs:.2f}" for name in WAYS
    )
    figure.notes.append(f"Per job, p50 of the rounds, in ms: {per_job}.")
    figure.series = list(series.values())
    return figure
