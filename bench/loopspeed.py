"""Figure 4: the loop's speed inside the worker against a bare loop in a plain process.

Inside the worker the loop runs as the product runs it: ``heavy_load`` in chunks, with
``ctx.report`` between chunks (a clock check; a checkpoint write, which is also where
cancellation and the lease are checked, at most once per
JOBS_PROGRESS_INTERVAL_SECONDS). Its speed is n / (finished_at - started_at), both
written by the worker. The bare loop is ``for i in range(n): pass`` in a function of a
fresh process (``bench.loop``), timed inside it. They alternate, one at a time, so each
has a core to itself; the ratio is the median of each round's pair, because this
machine's speed drifts by a quarter between rounds a minute apart (seen in the first full
run: 72 M it/s on both sides in round 1, 50-60 on both in rounds 2 and 3).

The second line does the same for the second kind, countPrimes (POST /jobs): numbers
sieved per second in the worker against the same sieve in a plain process
(``bench.sieve``), alternated the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import BenchStack, epoch, progress, submit
from bench.stats import Comparison, Figure, Series, Target, p50
from infra.run import PROJECT_DIR

LOOP_TARGET = Target(low=0.95)


def worker_rate(stack: BenchStack, api: HttpClient, n: int) -> tuple[float, int]:
    """Iterations per second of one job of ``n`` in the worker, and its checkpoints' count
    estimate (whole progress intervals it ran)."""
    submitted = submit(api, n)
    # The speed comes from the job's own timestamps, so the job is read only once a
    # second: reading it (the benchmark and moto) must not take CPU the bare loop gets.
    job = stack.wait_job(
        submitted.job_id, lambda j: j.status.value == "succeeded", timeout=600, interval=1.0
    )
    seconds = epoch(job.finished_at) - epoch(job.started_at)
    return n / seconds, int(seconds)


def bare_rate(n: int) -> float:
    output = subprocess.run(
        [sys.executable, "-m", "bench.loop", str(n)],
        cwd=PROJECT_DIR, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return n / float(output)


def worker_sieve_rate(stack: BenchStack, api: HttpClient, below: int) -> float:
    """Numbers sieved per second by one countPrimes job in the worker."""
    body = json.dumps({"kind": "countPrimes", "input": {"below": below}}).encode()
    _, data = api.timed("POST", "/jobs", body, {"Content-Type": "application/json"}, expect=202)
    job = stack.wait_job(
        json.loads(data)["job_id"],
        lambda j: j.status.value == "succeeded",
        timeout=600,
        interval=1.0,
    )
    return below / (epoch(job.finished_at) - epoch(job.started_at))


def bare_sieve_rate(below: int) -> float:
    output = subprocess.run(
        [sys.executable, "-m", "bench.sieve", str(below)],
        cwd=PROJECT_DIR, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return below / float(output.split()[0])


def sieve_comparison(
    stack: BenchStack, api: HttpClient, sizes: Sizes
) -> tuple[Comparison, Series, Series]:
    worker = Series("worker_sieve_rate", "numbers/s")
    bare = Series("bare_sieve_rate", "numbers/s")
    pairs: list[float] = []
    for round_ in range(sizes.sieve_rounds):
        progress(f"figure 4: countPrimes, below = {sizes.sieve_below:,}, round {round_ + 1}")
        for side in ("worker", "bare") if round_ % 2 == 0 else ("bare", "worker"):
            if side == "worker":
                worker.add(worker_sieve_rate(stack, api, sizes.sieve_below))
            else:
                bare.add(bare_sieve_rate(sizes.sieve_below))
        pairs.append(worker.samples[-1] / bare.samples[-1])
    comparison = Comparison(
        "4", "countPrimes speed, in the worker (reports, checkpoints) vs a bare sieve",
        p50(worker.samples) / 1e6, p50(bare.samples) / 1e6, "M numbers/s", "worker",
        "bare sieve", f"{worker.count} / {bare.count} runs", LOOP_TARGET,
        note="ratio: the median of each round's worker/bare pair",
        paired_ratios=tuple(pairs),
    )  # fmt: skip
    return comparison, worker, bare


def figure_4(stack: BenchStack, sizes: Sizes) -> Figure:
    worker = Series("worker_loop_rate", "iterations/s")
    bare = Series("bare_loop_rate", "iterations/s")
    checkpoints = 0
    pairs: list[float] = []
    with HttpClient(stack.url) as api:
        for round_ in range(sizes.loop_rounds):
            progress(f"figure 4: loop speed, n = {sizes.loop_n:,}, round {round_ + 1}")
            for side in ("worker", "bare") if round_ % 2 == 0 else ("bare", "worker"):
                if side == "worker":
                    rate, saved = worker_rate(stack, api, sizes.loop_n)
                    worker.add(rate)
                    checkpoints += saved
                else:
                    bare.add(bare_rate(sizes.loop_n))
            pairs.append(worker.samples[-1] / bare.samples[-1])
        sieve, worker_sieve, bare_sieve = sieve_comparison(stack, api, sizes)
    figure = Figure("4", "Loop speed in the worker against a bare loop")
    figure.comparisons = [
        Comparison(
            "4", "loop speed, in the worker (progress, checkpoints, cancel checks) vs bare",
            p50(worker.samples) / 1e6, p50(bare.samples) / 1e6, "M it/s", "worker", "bare loop",
            f"{worker.count} / {bare.count} runs", LOOP_TARGET,
            note="ratio: the median of each round's worker/bare pair",
            paired_ratios=tuple(pairs),
        ),
        sieve,
    ]  # fmt: skip
    rates = ", ".join(
        f"{w / 1e6:.1f}/{b / 1e6:.1f}" for w, b in zip(worker.samples, bare.samples, strict=True)
    )
    figure.notes.append(f"Per round, worker/bare in M it/s: {rates}.")
    figure.notes.append(
        f"n = {sizes.loop_n:,} per run; the worker's runs wrote about {checkpoints} "
        "checkpoints in all (one per JOBS_PROGRESS_INTERVAL_SECONDS, default 1 s)."
    )
    figure.notes.append(
        f"countPrimes below {sizes.sieve_below:,} per run (POST /jobs), against "
        "`python -m bench.sieve`: the same segmented sieve without the job around it."
    )
    figure.series = [worker, bare, worker_sieve, bare_sieve]
    return figure
