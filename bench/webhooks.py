"""Figure 13: from a job's finish to its signed webhook arriving, on the shared stack
(docs/webhooks.md: within 1 s at p99), against a client that waits with ``?wait``.

The benchmark's receiver is ``jobs listen``'s own (jobs_cli.listen.Receiver: it
verifies each delivery's signature and keeps one per webhook-id), registered with
``POST /webhooks`` for ``job.succeeded`` only. ``Sizes.webhook_rounds`` rounds, each
with the lane free: a job of about a tenth of a second (``Sizes.webhook_n``) is
submitted, a second connection waits for it with ``GET /jobs/{id}?wait=20`` (the
polling a webhook replaces), and the round ends when both have heard of its finish.
Each side is the moment it heard (the receiver's handler, the wait's answer read)
minus the job's ``finished_at`` (the worker's clock: one machine, one clock). The
path a webhook takes: the table's stream (read about 4 times a second), the stream's
function's PutEvents, the bus's rule to the webhooks queue, the delivery function's
fan-out to a delivery message, and the delivery's signed POST.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import BenchStack, epoch, progress
from bench.stats import Comparison, Figure, Series, ms, p50, p99
from chalicelib.events import EventType
from infra.emulator import free_port
from jobs_cli.listen import Receiver

NUMBER = "13"
LIMIT_MS = 1000.0
# How long a round may take before the figure fails: a webhook this late is lost.
ROUND_TIMEOUT_SECONDS = 60.0


def figure_13(stack: BenchStack, sizes: Sizes) -> Figure:
    arrived: dict[str, float] = {}
    heard = threading.Condition()

    def show(event: dict[str, Any]) -> None:
        with heard:
            arrived[event["data"]["job_id"]] = time.time()
            heard.notify_all()

    receiver = Receiver(free_port(), show)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    pushed: list[float] = []
    polled: list[float] = []
    try:
        with HttpClient(stack.url) as api:
            endpoint = api.json(
                "POST",
                "/webhooks",
                {"url": receiver.url, "events": [EventType.SUCCEEDED.value]},
                expect=201,
            )
            receiver.secret = endpoint["secret"]
            try:
                progress(f"figure {NUMBER}: receiver at {receiver.url}")
                _round(stack, api, sizes, arrived, heard)  # warms the path's functions
                for round_ in range(sizes.webhook_rounds):
                    if round_ % 20 == 0:
                        progress(f"figure {NUMBER}: round {round_ + 1} of {sizes.webhook_rounds}")
                    push, poll = _round(stack, api, sizes, arrived, heard)
                    pushed.append(push)
                    polled.append(poll)
            finally:
                api.request("DELETE", f"/webhooks/{endpoint['id']}")
    finally:
        receiver.shutdown()
        receiver.server_close()
        serving.join()
    figure = Figure(NUMBER, "Signed webhooks: from a job's finish to its delivery")
    figure.comparisons = [
        Comparison(
            NUMBER,
            "webhook after finished_at p99 vs ?wait answer after finished_at p99",
            1000 * p99(pushed), 1000 * p99(polled), "ms", "webhook", "?wait",
            f"{len(pushed)} / {len(polled)}", absolute_limit=LIMIT_MS,
        ),
        Comparison(
            NUMBER, "webhook after finished_at p50 vs ?wait answer after finished_at p50",
            1000 * p50(pushed), 1000 * p50(polled), "ms", "webhook", "?wait",
            f"{len(pushed)} / {len(polled)}",
        ),
    ]  # fmt: skip
    figure.notes.append(
        f"Every one of the {len(pushed)} jobs' job.succeeded arrived, signed (the receiver "
        f"verifies each); the latest {1000 * max(pushed):.0f} ms after its finish."
    )
    figure.series = [
        Series("webhook after finished_at", "ms", ms(pushed)),
        Series("?wait answer after finished_at", "ms", ms(polled)),
    ]
    return figure


def _round(
    stack: BenchStack,
    api: HttpClient,
    sizes: Sizes,
    arrived: dict[str, float],
    heard: threading.Condition,
) -> tuple[float, float]:
    """One job: seconds from its finish to its webhook, and to its ``?wait`` answer."""
    body = json.dumps({"n": sizes.webhook_n}).encode()
    headers = {"Content-Type": "application/json"}
    _, data = api.timed("POST", "/heavy", body, headers, expect=202)
    job_id = json.loads(data)["job_id"]
    with HttpClient(stack.url, timeout=ROUND_TIMEOUT_SECONDS) as waiting:
        _, answer = waiting.timed("GET", f"/jobs/{job_id}?wait=20")
        answered = time.time()
    if json.loads(answer)["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} had not succeeded within its wait: {answer[:300]!r}")
    with heard:
        if not heard.wait_for(lambda: job_id in arrived, ROUND_TIMEOUT_SECONDS):
            raise RuntimeError(
                f"job {job_id}'s webhook did not arrive in {ROUND_TIMEOUT_SECONDS:.0f} s; "
                f"the stack's log ends:\n{stack.log_tail()}"
            )
        pushed_at = arrived[job_id]
    job = stack.job(job_id)
    if job is None or job.finished_at is None:
        raise RuntimeError(f"job {job_id} has no finished_at: {job}")
    finished = epoch(job.finished_at)
    return pushed_at - finished, answered - finished
