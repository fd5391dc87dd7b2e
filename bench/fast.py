"""Figures 1 and 7: how fast ``GET /fast`` answers, idle and while a heavy loop runs.

Figure 1 interleaves blocks of samples on one kept-alive connection: idle, a heavy job
counting in the worker, idle, a bare loop counting in a plain process (the control: what
any CPU-bound process on the other core costs, with no AWS call and no worker), ... and
idle again, so idle is measured before and after every busy block. The baseline is the
same loop run inside an API process (``bench.blocking_server``): threaded, as ``chalice
local`` is, and one request at a time, the classic blocking server.

Figure 7 runs many clients at once for a few seconds, idle and with a heavy job in the
worker, alternately.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import suppress

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import BenchStack, bare_loop_running, progress
from bench.stats import Comparison, Figure, Series, Target, ms, p50, p99
from infra.emulator import free_port, wait_until
from infra.run import PROJECT_DIR

P99_TARGET = Target(high=1.2)
BASELINE_LOOP_N = 10**12  # the threaded baseline's loop: killed with its server


def sample(client: HttpClient, count: int, pause: float) -> list[float]:
    """``count`` timed GET /fast, in seconds."""
    samples = []
    for _ in range(count):
        samples.append(client.timed("GET", "/fast")[0])
        if pause:
            time.sleep(pause)
    return samples


def fast_latency(stack: BenchStack, sizes: Sizes) -> tuple[Series, Series, Series]:
    """Idle, heavy-job-in-the-worker and bare-loop blocks, interleaved; in seconds."""
    idle = Series("fast_idle", "s")
    worker = Series("fast_worker_busy", "s")
    loop = Series("fast_bare_loop_busy", "s")
    with HttpClient(stack.url) as api, HttpClient(stack.url) as control:
        sample(api, 50, 0)  # warm the connection and the route
        for round_ in range(sizes.fast_rounds):
            progress(f"figure 1: /fast, round {round_ + 1}/{sizes.fast_rounds}")
            idle.extend(sample(api, sizes.fast_block, sizes.fast_pause))
            with stack.heavy_job_running(control):
                worker.extend(sample(api, sizes.fast_block, sizes.fast_pause))
            idle.extend(sample(api, sizes.fast_block, sizes.fast_pause))
            with bare_loop_running():
                loop.extend(sample(api, sizes.fast_block, sizes.fast_pause))
        idle.extend(sample(api, sizes.fast_block, sizes.fast_pause))
    return idle, worker, loop


def _start_baseline_server(threaded: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.blocking_server", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--threaded"] if threaded else command,
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            HttpClient(url, timeout=1).request("GET", "/fast")
        except OSError:
            return process.poll() is not None
        return True

    if not wait_until(answers, 15) or process.poll() is not None:
        process.kill()
        raise RuntimeError("the in-process baseline server did not start")
    return process, url


def _post_heavy_in_background(url: str, n: int) -> threading.Thread:
    def post() -> None:
        # The server is killed under it at the end of the busy window.
        with suppress(OSError):
            HttpClient(url).request("POST", f"/heavy?n={n}")

    thread = threading.Thread(target=post, name="baseline-heavy", daemon=True)
    thread.start()
    return thread


def in_process_baseline(sizes: Sizes) -> tuple[Series, Series, Series, Series]:
    """/fast idle and while the loop runs inside the serving process: threaded (rounds of
    a fresh server, idle block then busy block) and one request at a time."""
    threaded_idle = Series("inprocess_threaded_idle", "s")
    threaded_busy = Series("inprocess_threaded_busy", "s")
    for round_ in range(sizes.inprocess_rounds):
        progress(f"figure 1: in-process baseline, round {round_ + 1}/{sizes.inprocess_rounds}")
        process, url = _start_baseline_server(threaded=True)
        try:
            with HttpClient(url) as client:
                sample(client, 20, 0)
                threaded_idle.extend(sample(client, sizes.inprocess_block, sizes.fast_pause))
                heavy = _post_heavy_in_background(url, BASELINE_LOOP_N)
                time.sleep(0.2)
                threaded_busy.extend(sample(client, sizes.inprocess_block, sizes.fast_pause))
        finally:
            process.kill()
            process.wait()
        heavy.join(10)

    blocking_idle = Series("inprocess_blocking_idle", "s")
    blocking_busy = Series("inprocess_blocking_busy", "s")
    progress("figure 1: classic blocking baseline")
    process, url = _start_baseline_server(threaded=False)
    try:
        client = HttpClient(url)
        sample(client, 10, 0)
        blocking_idle.extend(sample(client, sizes.blocking_samples * 10, sizes.fast_pause))
        for _ in range(sizes.blocking_samples):
            heavy = _post_heavy_in_background(url, sizes.blocking_n)
            time.sleep(0.02)  # the loop has started: /fast now waits for it
            blocking_busy.extend(sample(client, 1, 0))
            heavy.join(60)
    finally:
        process.kill()
        process.wait()
    return threaded_idle, threaded_busy, blocking_idle, blocking_busy


def figure_1(stack: BenchStack, sizes: Sizes) -> Figure:
    idle, worker, loop = fast_latency(stack, sizes)
    t_idle, t_busy, b_idle, b_busy = in_process_baseline(sizes)
    counts = f"{worker.count} / {idle.count}"
    figure = Figure("1", "GET /fast latency: idle, heavy job in the worker, loop in the API")
    figure.comparisons = [
        Comparison(
            "1", "/fast p99, heavy job in the worker vs idle", 1000 * p99(worker.samples),
            1000 * p99(idle.samples), "ms", "busy (worker)", "idle", counts, P99_TARGET,
        ),
        Comparison(
            "1", "/fast p50, heavy job in the worker vs idle", 1000 * p50(worker.samples),
            1000 * p50(idle.samples), "ms", "busy (worker)", "idle", counts,
        ),
        Comparison(
            "1", "/fast p99, control: bare loop in a plain process vs idle",
            1000 * p99(loop.samples), 1000 * p99(idle.samples), "ms", "busy (bare loop)",
            "idle", f"{loop.count} / {idle.count}",
        ),
        Comparison(
            "1", "/fast p99, heavy job in the worker vs bare loop (the product's own cost)",
            1000 * p99(worker.samples), 1000 * p99(loop.samples), "ms", "busy (worker)",
            "busy (bare loop)", f"{worker.count} / {loop.count}",
        ),
        Comparison(
            "1", "baseline: /fast p99, loop inside a threaded API process vs its idle",
            1000 * p99(t_busy.samples), 1000 * p99(t_idle.samples), "ms", "busy (in-process)",
            "idle", f"{t_busy.count} / {t_idle.count}",
        ),
        Comparison(
            "1", "baseline: /fast p50, loop inside a threaded API process vs its idle",
            1000 * p50(t_busy.samples), 1000 * p50(t_idle.samples), "ms", "busy (in-process)",
            "idle", f"{t_busy.count} / {t_idle.count}",
        ),
        Comparison(
            "1", "baseline: /fast p50, classic blocking server (one request at a time)",
            1000 * p50(b_busy.samples), 1000 * p50(b_idle.samples), "ms", "busy (blocking)",
            "idle", f"{b_busy.count} / {b_idle.count}",
            note=f"its loop: n = {sizes.blocking_n:,}; /fast waits for the rest of it",
        ),
    ]  # fmt: skip
    for series in (idle, worker, loop, t_idle, t_busy, b_idle, b_busy):
        figure.series.append(Series(series.name, "ms", ms(series.samples)))
    first, last = idle.samples[: sizes.fast_block], idle.samples[-sizes.fast_block :]
    figure.notes.append(
        f"Idle p99 in the first idle block {1000 * p99(first):.3f} ms, in the last "
        f"{1000 * p99(last):.3f} ms (idle is sampled before and after every busy block)."
    )
    return figure


# --- figure 7 ------------------------------------------------------------------------------


def under_load(url: str, clients: int, seconds: float) -> tuple[list[float], float]:
    """``clients`` threads, each sending GET /fast one after another for ``seconds``; the
    latencies and the requests per second they achieved together."""
    results: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(samples: list[float]) -> None:
        with HttpClient(url) as http:
            start.wait()
            while time.perf_counter() < deadline[0]:
                samples.append(http.timed("GET", "/fast")[0])

    threads = [
        threading.Thread(target=client, args=(results[i],), name=f"load-{i}", daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    for thread in threads:
        thread.join(seconds + 60)
    merged = [s for r in results for s in r]
    return merged, len(merged) / seconds


def figure_7(stack: BenchStack, sizes: Sizes) -> Figure:
    idle = Series("load_idle", "s")
    busy = Series("load_worker_busy", "s")
    rates: dict[str, list[float]] = {"idle": [], "busy": []}

    def window(series: Series, kind: str) -> None:
        samples, rate = under_load(stack.url, sizes.load_clients, sizes.load_seconds)
        series.extend(samples)
        rates[kind].append(rate)

    with HttpClient(stack.url) as control:
        for round_ in range(sizes.load_rounds):
            progress(
                f"figure 7: {sizes.load_clients} clients, round {round_ + 1}/{sizes.load_rounds}"
            )
            window(idle, "idle")
            with stack.heavy_job_running(control):
                window(busy, "busy")
    counts = f"{busy.count} / {idle.count}"
    figure = Figure(
        "7",
        f"GET /fast under {sizes.load_clients} concurrent clients, heavy job in the worker",
    )
    figure.comparisons = [
        Comparison(
            "7", f"/fast p99, {sizes.load_clients} clients, heavy job in the worker vs idle",
            1000 * p99(busy.samples), 1000 * p99(idle.samples), "ms", "busy (worker)",
            "idle", counts,
        ),
        Comparison(
            "7", f"/fast p50, {sizes.load_clients} clients, heavy job in the worker vs idle",
            1000 * p50(busy.samples), 1000 * p50(idle.samples), "ms", "busy (worker)",
            "idle", counts,
        ),
        Comparison(
            "7", f"/fast requests per second, {sizes.load_clients} clients, busy vs idle",
            _mean(rates["busy"]), _mean(rates["idle"]), "req/s", "busy (worker)", "idle",
            f"{len(rates['busy'])} / {len(rates['idle'])} windows",
        ),
    ]  # fmt: skip
    figure.series = [Series(s.name, "ms", ms(s.samples)) for s in (idle, busy)]
    figure.notes.append(
        f"{sizes.load_rounds} windows of {sizes.load_seconds:g} s each, idle and busy "
        "alternated; the clients are threads of the benchmark process, on the same two cores."
    )
    return figure


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
