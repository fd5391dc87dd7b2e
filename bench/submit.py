"""Figure 2: ``POST /heavy`` latency against its floor, and n = 1 against n = 10**10.

The floor is what the route cannot do without: an HTTP round trip to the same server
(``GET /fast``), one Query of the caller's active jobs (the client's quota: the active
index's partition of ``anonymous``, the caller on the bench's stage without keys), one
PutItem of a job record (the item the API writes, with its index keys) and one
SendMessage of its message (to the FIFO job queue, with the message group and a
deduplication id, as the API sends it), made with bare boto3 from the benchmark on the
same emulator. Each iteration makes all six requests (POST n=1, POST n=10**10, /fast,
Query, PutItem, SendMessage) in a random order, so the two sides see the same machine,
the same table and the same queue depth; every few iterations the queue is drained and
the jobs made since are deleted, which keeps the queue and the client's active jobs
shallow. No worker runs meanwhile.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import timedelta

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import LONG_N, BenchStack, progress
from bench.stats import Comparison, Figure, Series, Target, mean, ms, p50, p99
from chalicelib.jobs import Job, to_item, to_message, utc_now
from chalicelib.queue import MESSAGE_GROUP

FLOOR_TARGET = Target(high=1.15)
# "n does not change it": the two medians within 10 % of each other.
SAME_TARGET = Target(low=1 / 1.1, high=1.1)
RETENTION = timedelta(days=7)  # the API's default JOBS_RETENTION_DAYS


def figure_2(stack: BenchStack, sizes: Sizes) -> Figure:
    ddb, sqs = stack.client("dynamodb"), stack.client("sqs")
    api = HttpClient(stack.url)
    created: list[str] = []
    depth = [0]  # messages on the queue since the last drain

    def post(n: int) -> Callable[[], float]:
        body = json.dumps({"n": n}).encode()

        def call() -> float:
            elapsed, data = api.timed(
                "POST", "/heavy", body, {"Content-Type": "application/json"}, expect=202
            )
            created.append(json.loads(data)["job_id"])
            depth[0] += 1
            return elapsed

        return call

    def fast() -> float:
        return api.timed("GET", "/fast")[0]

    pending: list[Job] = []

    def put_item() -> float:
        job = Job.new(n=1, now=utc_now(), retention=RETENTION)
        item = to_item(job)
        start = time.perf_counter()
        ddb.put_item(
            TableName=stack.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(job_id)",
        )
        elapsed = time.perf_counter() - start
        created.append(job.job_id)
        pending.append(job)
        return elapsed

    def query_active() -> float:
        start = time.perf_counter()
        stack.read_quota()
        return time.perf_counter() - start

    def send_message() -> float:
        job = pending.pop() if pending else Job.new(1, utc_now())
        start = time.perf_counter()
        sqs.send_message(
            QueueUrl=stack.queue_url,
            MessageBody=to_message(job),
            MessageGroupId=MESSAGE_GROUP,
            MessageDeduplicationId=job.job_id,
        )
        elapsed = time.perf_counter() - start
        depth[0] += 1
        return elapsed

    operations: dict[str, Callable[[], float]] = {
        "post_n1": post(1),
        "post_n_max": post(LONG_N),
        "fast": fast,
        "query_active": query_active,
        "put_item": put_item,
        "send_message": send_message,
    }
    series = {name: Series(name, "s") for name in operations}
    depths = Series("queue_depth_at_send", "messages")
    for operation in operations.values():  # warm every path (and the API's clients)
        for _ in range(10):
            operation()
    stack.drain()
    stack.delete_jobs(created)
    created.clear()
    depth[0] = 0
    rng = random.Random(2)
    progress(f"figure 2: POST /heavy against its floor, {sizes.submit_iterations} iterations")
    for iteration in range(sizes.submit_iterations):
        names = list(operations)
        rng.shuffle(names)
        for name in names:
            if name in ("post_n1", "post_n_max", "send_message"):
                depths.add(depth[0])
            series[name].add(operations[name]())
        if (iteration + 1) % sizes.drain_every == 0:
            stack.drain()
            stack.delete_jobs(created)
            created.clear()
            depth[0] = 0
    api.close()
    stack.drain()
    stack.delete_jobs(created)

    floor = Series(
        "floor",
        "s",
        [
            f + q + p + s
            for f, q, p, s in zip(
                series["fast"].samples,
                series["query_active"].samples,
                series["put_item"].samples,
                series["send_message"].samples,
                strict=True,
            )
        ],
    )
    post_all = Series("post_all", "s", series["post_n1"].samples + series["post_n_max"].samples)
    n1, nmax = series["post_n1"], series["post_n_max"]
    figure = Figure("2", "POST /heavy latency against its floor; n = 1 against n = 10**10")
    count = f"{post_all.count} / {floor.count}"
    figure.comparisons = [
        Comparison(
            "2", "POST /heavy p50 vs floor p50 (/fast + Query + PutItem + SendMessage)",
            1000 * p50(post_all.samples), 1000 * p50(floor.samples), "ms", "POST /heavy",
            "floor", count, FLOOR_TARGET,
        ),
        Comparison(
            "2", "POST /heavy p99 vs floor p99", 1000 * p99(post_all.samples),
            1000 * p99(floor.samples), "ms", "POST /heavy", "floor", count,
        ),
        Comparison(
            "2", "POST /heavy p50, n = 10**10 vs n = 1", 1000 * p50(nmax.samples),
            1000 * p50(n1.samples), "ms", "n = 10**10", "n = 1",
            f"{nmax.count} / {n1.count}", SAME_TARGET,
        ),
        Comparison(
            "2", "POST /heavy p99, n = 10**10 vs n = 1", 1000 * p99(nmax.samples),
            1000 * p99(n1.samples), "ms", "n = 10**10", "n = 1", f"{nmax.count} / {n1.count}",
        ),
    ]  # fmt: skip
    parts = ", ".join(
        f"{name} {1000 * p50(series[name].samples):.2f}"
        for name in ("fast", "query_active", "put_item", "send_message")
    )
    figure.notes.append(f"Floor parts, p50 in ms: {parts}.")
    figure.notes.append(
        f"Queue depth at each send: {min(depths.samples, default=0):.0f} to "
        f"{max(depths.samples, default=0):.0f} messages, mean {mean(depths.samples):.1f}, "
        "the same for the API's sends and the bare ones (no worker ran; the queue was "
        f"drained, and the jobs made deleted, every {sizes.drain_every} iterations)."
    )
    figure.series = [Series(s.name, "ms", ms(s.samples)) for s in (*series.values(), floor)]
    figure.series.append(depths)
    return figure
