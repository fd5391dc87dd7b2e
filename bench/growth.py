"""Figure 9: what a backlog costs. The product's operations at growing queue depths, each
beside the bare AWS calls on the same emulator at the same depth and table size.

On a stack of its own (the other figures' conditions stay as they were), for each depth
(``Sizes.growth_depths``):

1. A backlog of that many queued jobs is written straight to the emulator
   (``bench.backlog``: the API's record and message shapes, in batches).
2. With no worker running, rounds of, in a random order: ``POST /heavy`` (n = 0),
   ``GET /jobs?limit=20``, ``GET /jobs?client=anonymous&limit=20`` (one client's
   listing: the API's caller's own jobs, while the backlog is another client's), and
   each bare call of ``bench.backlog.BareCalls``. At depth 0
   the queue is drained every few rounds, so "empty" stays empty; deeper, the depth grows
   by the rounds' own sends (the notes give the range).
3. The recovery sweep, as the local event source runs it (``bench.sweep_runner``: its
   handler in an execution environment of its own), once to warm up, then timed.
4. The worker (the local event source, as `make run` starts it) is started; drain throughput
   is the rate at which the first jobs of the queue finish, from the worker's own
   ``finished_at`` stamps (first to last of ``growth_drain_jobs``, the first one's cold
   start excluded). At depth 0 that many jobs are queued first: the shallow queue.
5. The worker is stopped; before the next depth the queues are emptied and every record
   made is deleted. A long poll the stopped worker left open may take the next backlog's
   first message: the worker releases it as it stops, or the next one takes it back as it
   starts (``infra/event_source/receives.py``), so the next drain does not wait for it.

6. Once, after the depths: the minutely release of jobs that run later, its read of the
   later index (``release_reads``) with none waiting and with ``Sizes.later_waiting``
   (10,000) waiting a day ahead: the same Queries, the same entries read (none).

The comparisons hold each measurement at ``growth_target_depth`` (10,000) against the
same at depth 0; the issue's targets: POST /heavy p50 and GET /jobs p50 at most 2x,
drain throughput at least 0.5x; and one client's listing p50 at most 2x: it reads only
that client's index partitions, so another client's backlog does not slow it. The
chart (``growth.png``) plots every operation against depth.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench import sweep_runner
from bench.backlog import (
    LISTING_FLOOR,
    RETENTION,
    SWEEP_FLOOR,
    WRITE_BATCH,
    BareCalls,
    Target,
    chunks,
    sample_round,
)
from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import FINAL, STAGE, BenchStack, epoch, function_name, progress
from bench.stats import Comparison, Figure, Series, ms, p50, p99
from bench.stats import Target as Goal
from chalicelib.clients import ANONYMOUS
from chalicelib.jobs import SHARDS, Job, to_item, utc_now
from chalicelib.store import JobTable
from chalicelib.worker import RELEASE_AHEAD_SECONDS, RELEASE_LIMIT_PER_SHARD
from infra import lanes as infra_lanes
from infra.deploy import event_stream
from infra.event_source import mappings
from infra.run import PROJECT_DIR

NUMBER = "9"
CHART_NAME = "growth.png"
POST = "POST /heavy"
LIST = "GET /jobs?limit=20"
# The API's callers are anonymous on the bench's stage (no keys); the backlog is another
# client's (bench.backlog.BACKLOG_CLIENT).
CLIENT_LIST = f"GET /jobs?client={ANONYMOUS}&limit=20"
SWEEP = "recovery sweep"
DRAIN = "drain"
AT_MOST_TWICE = Goal(high=2.0)
AT_LEAST_HALF = Goal(low=0.5)
WORKER = "growth-worker"
# The worker's handler, disabled while the job events catch up with a backlog (_drain),
# and the event functions that must catch up first (the stream's publisher, the fan-out).
JOB_HANDLER = infra_lanes.WORKER
EVENT_HANDLERS = (event_stream.HANDLER, "deliver_webhooks")
# Neither event function invoked for this long, the webhooks queue empty: caught up.
EVENTS_QUIET_SECONDS = 3.0
EVENTS_CATCH_UP_TIMEOUT_SECONDS = 1200
DRAIN_EVERY = 5  # rounds between drains of the empty queue


@dataclass
class Depth:
    """Everything measured at one depth; times in seconds."""

    depth: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    sweep_ms: list[float] = field(default_factory=list)
    drain_per_second: float = float("nan")
    queue_depths: list[int] = field(default_factory=list)  # messages, sampled during rounds
    fill_seconds: float = 0.0
    job_ids: list[str] = field(default_factory=list)  # every record made at this depth
    errors: dict[str, int] = field(default_factory=dict)  # 5xx answers, per operation

    def p50_ms(self, name: str) -> float:
        return 1000 * p50(self.samples[name])


def figure_9(workdir: Path, sizes: Sizes) -> Figure:
    started = time.monotonic()
    (workdir / "growth").mkdir(parents=True, exist_ok=True)
    with BenchStack.running(workdir / "growth") as stack:
        progress(f"figure 9: own stack up: API {stack.url}")
        target = Target.of(
            stack.client("dynamodb"), stack.client("sqs"), stack.table_name, stack.queue_url
        )
        results = []
        for depth in sizes.growth_depths:
            results.append(_measure(stack, target, depth, sizes))
            if depth != sizes.growth_depths[-1]:
                target.empty(results[-1].job_ids)
        release = release_reads(stack, sizes)
        if stack.services.dead():
            raise RuntimeError(f"{stack.services.dead()} died; log:\n{stack.log_tail()}")
    figure = _figure(results, sizes, time.monotonic() - started)
    figure.comparisons.append(release.comparison(sizes))
    figure.notes.append(release.note())
    figure.series += release.series()
    return figure


RELEASE = "release's read (jobs that run later)"
RELEASE_READS = 20


@dataclass
class ReleaseReads:
    """The minutely release's read of the later index (JobTable.due_later, as
    Worker.release_due makes it), timed with none and with ``waiting`` jobs waiting for a
    run_at a day ahead, none due: how many entries it read each time."""

    waiting: int
    empty_ms: list[float]
    full_ms: list[float]
    entries_read: tuple[int, int]

    def comparison(self, sizes: Sizes) -> Comparison:
        return Comparison(
            NUMBER, f"{RELEASE} p50 at {self.waiting:,} waiting vs none",
            p50(self.full_ms), p50(self.empty_ms), "ms", f"{self.waiting:,} waiting", "none",
            f"{len(self.full_ms)} / {len(self.empty_ms)}", AT_MOST_TWICE,
        )  # fmt: skip

    def note(self) -> str:
        return (
            f"{RELEASE}: {SHARDS} Queries of the later index up to now + the look-ahead, "
            f"{self.entries_read[0]} entries read with none waiting and "
            f"{self.entries_read[1]} with {self.waiting:,} waiting a day ahead: its cost per "
            "minute is a constant, however many jobs wait."
        )

    def series(self) -> list[Series]:
        return [
            Series(f"{RELEASE}, none waiting", "ms", self.empty_ms),
            Series(f"{RELEASE}, {self.waiting} waiting", "ms", self.full_ms),
        ]


def release_reads(stack: BenchStack, sizes: Sizes) -> ReleaseReads:
    """Time the release's read with no job waiting, then with ``sizes.later_waiting``
    written (BatchWriteItem) to run a day from now."""
    table = JobTable(stack.client("dynamodb"), stack.table_name)

    def read() -> tuple[float, int]:
        before = utc_now() + timedelta(seconds=RELEASE_AHEAD_SECONDS)
        start = time.perf_counter()
        entries = table.due_later(before, RELEASE_LIMIT_PER_SHARD)
        return 1000 * (time.perf_counter() - start), len(entries)

    read()  # warm
    empty = [read() for _ in range(RELEASE_READS)]
    progress(f"figure 9: writing {sizes.later_waiting:,} jobs that run later")
    run_at = utc_now() + timedelta(days=1)
    waiting = [
        Job.new(n=0, now=utc_now(), run_at=run_at, later=True, retention=RETENTION)
        for _ in range(sizes.later_waiting)
    ]
    ddb = stack.client("dynamodb")
    for chunk in chunks(waiting, WRITE_BATCH):
        ddb.batch_write_item(
            RequestItems={stack.table_name: [{"PutRequest": {"Item": to_item(j)}} for j in chunk]}
        )
    if not table.due_later(run_at + timedelta(seconds=1), 1):
        raise RuntimeError("the jobs written to run later are not in the later index")
    full = [read() for _ in range(RELEASE_READS)]
    stack.delete_jobs([j.job_id for j in waiting])
    return ReleaseReads(
        sizes.later_waiting,
        [ms for ms, _ in empty],
        [ms for ms, _ in full],
        (max(n for _, n in empty), max(n for _, n in full)),
    )


def _measure(stack: BenchStack, target: Target, depth: int, sizes: Sizes) -> Depth:
    result = Depth(depth)
    progress(f"figure 9: depth {depth:,}: filling")
    fill_started = time.monotonic()
    backlog = target.fill(depth)
    result.fill_seconds = time.monotonic() - fill_started
    bare = BareCalls(target)
    posted: list[str] = []
    head: list[str] = []
    with HttpClient(stack.url) as api:

        def answered(name: str, method: str, path: str, body: bytes | None, expect: int) -> Any:
            # A 5xx (e.g. the API's bounded AWS client timing out on a loaded machine)
            # is what a user saw: its time is a sample, and it is counted, not hidden.
            headers = {"Content-Type": "application/json"} if body else {}
            start = time.perf_counter()
            status, data = api.request(method, path, body, headers)
            elapsed = time.perf_counter() - start
            if status != expect:
                if status < 500:
                    raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
                result.errors[name] = result.errors.get(name, 0) + 1
                return elapsed, None
            return elapsed, data

        def post() -> float:
            elapsed, data = answered(POST, "POST", "/heavy", b'{"n": 0}', 202)
            if data is not None:
                posted.append(json.loads(data)["job_id"])
            return float(elapsed)

        def listing() -> float:
            return float(answered(LIST, "GET", "/jobs?limit=20", None, 200)[0])

        def client_listing() -> float:
            path = CLIENT_LIST.removeprefix("GET ")
            return float(answered(CLIENT_LIST, "GET", path, None, 200)[0])

        operations = {POST: post, LIST: listing, CLIENT_LIST: client_listing, **bare.operations()}
        bare.warm()
        for operation in operations.values():
            for _ in range(3):
                operation()
        if depth == 0:
            stack.drain()
        result.samples = {name: [] for name in operations}
        rng = random.Random(depth)
        progress(f"figure 9: depth {depth:,}: {sizes.growth_samples} rounds")
        for round_ in range(sizes.growth_samples):
            if round_ % 10 == 0:
                result.queue_depths.append(target.depth())
            for name, seconds in sample_round(operations, rng).items():
                result.samples[name].append(seconds)
            if depth == 0 and (round_ + 1) % DRAIN_EVERY == 0:
                stack.drain()
        result.queue_depths.append(target.depth())
    # The first run warms the sweep's execution environment up; the others are timed.
    result.sweep_ms = sweep_runs(stack, sizes.growth_sweep_runs + 1)[1:]

    progress(f"figure 9: depth {depth:,}: draining {sizes.growth_drain_jobs} jobs")
    if depth < sizes.growth_drain_jobs:
        stack.drain()
        head = target.fill(sizes.growth_drain_jobs, mirror=False)
    else:
        head = backlog[: sizes.growth_drain_jobs]
    result.drain_per_second = _drain(stack, head)
    result.job_ids = backlog + posted + bare.created + head
    return result


def sweep_runs(stack: BenchStack, runs: int) -> list[float]:
    """Durations (ms) of ``runs`` invocations of the sweep, in one execution environment."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.sweep_runner", "--project-dir", str(stack.project),
         "--stage", STAGE, "--runs", str(runs)],
        cwd=PROJECT_DIR, env=stack.environment(), capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    lines = [x for x in completed.stdout.splitlines() if x.startswith(sweep_runner.RESULT + " ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"the sweep runner failed: {completed.stderr[-3000:]}")
    invocations = json.loads(lines[-1].removeprefix(sweep_runner.RESULT + " "))
    failed = [i for i in invocations if i["status"] != "returned"]
    if failed:
        raise RuntimeError(f"a sweep failed: {failed}")
    return [float(i["duration_ms"]) for i in invocations]


def _drain(stack: BenchStack, head: list[str]) -> float:
    """Start the worker, wait for the jobs of ``head`` (the front of the queue) to
    finish, stop it; jobs per second between the first and the last one's finish.

    The local event source that runs the worker also runs the job events' functions
    (the table stream's publisher and the webhooks' fan-out). Started on a backlog
    written in seconds, they would publish its every insert (10,000 at the deepest)
    while the worker drains, on the same two cores; on AWS each function has execution
    environments of its own. So the worker's mapping starts disabled (as ``make pause``
    disables it), the event functions catch up with the backlog, and then the worker is
    enabled and its drain timed; its own jobs' events are published meanwhile, at every
    depth alike."""
    mappings.set_enabled(stack.project, STAGE, JOB_HANDLER, False)
    stack.services.start_worker(WORKER)
    try:
        _wait_for_events_to_catch_up(stack)
        mappings.set_enabled(stack.project, STAGE, JOB_HANDLER, True)
        stack.wait_job(head[-1], lambda j: j.status.value in FINAL, timeout=120 + 2 * len(head))
    finally:
        stack.services.processes.pop(WORKER).stop()
    first, last = stack.job(head[0]), stack.job(head[-1])
    if first is None or last is None:
        raise RuntimeError("a drained job vanished")
    span = epoch(last.finished_at) - epoch(first.finished_at)
    return (len(head) - 1) / span if span > 0 else float("nan")


def _wait_for_events_to_catch_up(stack: BenchStack) -> None:
    """Until the event functions have been invoked at least once and then neither has
    been for EVENTS_QUIET_SECONDS, with no message waiting on the webhooks queue.

    Messages in flight are not waited for: the runner stopped after the last depth's
    drain may have left a long poll open that took a few (a standard queue's receive
    cannot be taken back, infra/event_source/receives.py), and those stay hidden for the
    queue's visibility timeout, a minute, whatever this runner does."""
    sqs = stack.client("sqs")
    invocations = _Counted(
        stack.log_path, [f"function={function_name(h, stack.project)} " for h in EVENT_HANDLERS]
    )
    deadline = time.monotonic() + EVENTS_CATCH_UP_TIMEOUT_SECONDS
    seen, quiet_since = -1, time.monotonic()
    try:
        while True:
            invoked = invocations.count()
            attributes = sqs.get_queue_attributes(
                QueueUrl=stack.outputs["WebhookQueueUrl"],
                AttributeNames=["ApproximateNumberOfMessages"],
            )["Attributes"]
            waiting = int(attributes["ApproximateNumberOfMessages"])
            now = time.monotonic()
            if invoked != seen or waiting:
                seen, quiet_since = invoked, now
            elif invoked and now - quiet_since >= EVENTS_QUIET_SECONDS:
                return
            if now > deadline:
                raise RuntimeError(
                    f"the job events did not catch up with the backlog in "
                    f"{EVENTS_CATCH_UP_TIMEOUT_SECONDS} s; the stack's log ends:\n"
                    f"{stack.log_tail()}"
                )
            time.sleep(0.5)
    finally:
        invocations.close()


class _Counted:
    """How often any of ``names`` occurs in the log at ``path`` so far, reading what was
    appended since the last count only (the whole log again at every poll would read
    gigabytes over a deep backlog's catch-up)."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self._log = path.open(errors="replace")
        self._names = names
        self._partial = ""  # the last line, until it ends
        self._total = 0

    def count(self) -> int:
        lines, _, self._partial = (self._partial + self._log.read()).rpartition("\n")
        self._total += sum(lines.count(name) for name in self._names)
        return self._total

    def close(self) -> None:
        self._log.close()


# --- the figure -----------------------------------------------------------------------------


def _figure(results: list[Depth], sizes: Sizes, seconds: float) -> Figure:
    by_depth = {r.depth: r for r in results}
    empty, deep = by_depth[0], by_depth[sizes.growth_target_depth]
    figure = Figure(NUMBER, "Cost against backlog depth: the product beside the bare AWS calls")
    at = f"{deep.depth:,} queued"
    count = f"{len(deep.samples[POST])} / {len(empty.samples[POST])}"

    def latency(label: str, name: str, goal: Goal | None = None, q: float = 50) -> Comparison:
        def pick(r: Depth) -> float:
            return 1000 * (p50(r.samples[name]) if q == 50 else p99(r.samples[name]))

        return Comparison(
            NUMBER, label, pick(deep), pick(empty), "ms", at, "empty queue", count, goal
        )

    figure.comparisons = [
        latency(f"{POST} p50 at {at} vs an empty queue", POST, AT_MOST_TWICE),
        latency(f"{LIST} p50 at {at} vs an empty table", LIST, AT_MOST_TWICE),
        latency(
            f"{CLIENT_LIST} p50 (one client's) at {at} of another client vs none",
            CLIENT_LIST,
            AT_MOST_TWICE,
        ),
        Comparison(
            NUMBER, f"worker's drain, trivial jobs per second, at {at} vs a shallow queue",
            deep.drain_per_second, empty.drain_per_second, "jobs/s", at, "shallow",
            f"{sizes.growth_drain_jobs} jobs each", AT_LEAST_HALF,
        ),
        latency(f"{POST} p99 at {at} vs an empty queue", POST, q=99),
        Comparison(
            NUMBER, f"one run of the recovery sweep at {at} vs an empty table",
            p50(deep.sweep_ms), p50(empty.sweep_ms), "ms", at, "empty table",
            f"{len(deep.sweep_ms)} / {len(empty.sweep_ms)} runs",
        ),
    ]  # fmt: skip
    bare_names = [n for n in empty.samples if n not in (POST, LIST, CLIENT_LIST)]
    for name in bare_names:
        figure.comparisons.append(latency(f"emulator alone: {name} p50 at {at} vs empty", name))
    figure.notes += _notes(results, bare_names, sizes, seconds)
    for r in results:
        figure.series += [
            Series(f"{name}@{r.depth}", "ms", ms(values)) for name, values in r.samples.items()
        ]
        figure.series.append(Series(f"{SWEEP}@{r.depth}", "ms", r.sweep_ms))
        figure.series.append(Series(f"{DRAIN}@{r.depth}", "jobs/s", [r.drain_per_second]))
        figure.series.append(Series(f"queue depth@{r.depth}", "messages", list(r.queue_depths)))
    return figure


def _notes(results: list[Depth], bare: list[str], sizes: Sizes, seconds: float) -> list[str]:
    header = ["depth (queued jobs)", f"{POST} p50", f"{POST} p99", f"{LIST} p50",
              f"{CLIENT_LIST} p50", SWEEP, "drain, jobs/s", *bare]  # fmt: skip
    rows = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" for _ in header) + " |",
    ]
    for r in results:
        cells = [
            f"{r.depth:,}",
            f"{r.p50_ms(POST):.1f}",
            f"{1000 * p99(r.samples[POST]):.1f}",
            f"{r.p50_ms(LIST):.1f}",
            f"{r.p50_ms(CLIENT_LIST):.1f}",
            f"{p50(r.sweep_ms):.0f}",
            f"{r.drain_per_second:.1f}",
            *(f"{r.p50_ms(name):.1f}" for name in bare),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    ranges = ", ".join(
        f"{r.depth:,}: {min(r.queue_depths):,}-{max(r.queue_depths):,}" for r in results
    )
    fills = ", ".join(
        f"{r.depth:,} in {r.fill_seconds:.1f} s" for r in results if r.depth
    )  # fmt: skip
    empty, deep = results[0], results[-1]

    def grew(name: str) -> float:
        return deep.p50_ms(name) - empty.p50_ms(name)

    floor = grew("PutItem") + grew("SendMessage")
    shares = (
        f"From {empty.depth:,} to {deep.depth:,} queued jobs, {POST} p50 moved by "
        f"{grew(POST):+.1f} ms, of which its bare calls (PutItem + SendMessage) by "
        f"{floor:+.1f} ms: the rest, {grew(POST) - floor:+.1f} ms, is the product's. "
        f"{LIST} p50 moved by {grew(LIST):+.1f} ms, its bare calls ({LISTING_FLOOR}) by "
        f"{grew(LISTING_FLOOR):+.1f} ms; one client's ({CLIENT_LIST}, the backlog being "
        f"another client's) by {grew(CLIENT_LIST):+.1f} ms. One run of the recovery sweep "
        f"went from {p50(empty.sweep_ms):.0f} to {p50(deep.sweep_ms):.0f} ms, its bare calls "
        f"({SWEEP_FLOOR}) from {empty.p50_ms(SWEEP_FLOOR):.1f} to "
        f"{deep.p50_ms(SWEEP_FLOOR):.1f} ms: the sweep reads only the jobs that lost their "
        "message (none here) and the running ones, so neither grows with the backlog."
    )
    return [
        shares,
        "p50 in ms unless said otherwise (the sweep: median of "
        f"{sizes.growth_sweep_runs} warm runs); the bare calls are the emulator's share.",
        "",
        *rows,
        "",
        f"Messages on the job queue while the rounds ran, per depth: {ranges}.",
        f"Backlogs written (records and messages, in batches): {fills or 'none'}.",
        "Answers with a 5xx status (their time is among the samples): "
        + (", ".join(f"{r.depth:,}: {r.errors}" for r in results if r.errors) or "none")
        + ".",
        f"This figure took {seconds:.0f} s of the run, its own stack included.",
    ]


def draw_chart(figure: Figure, path: Path) -> None:
    """Cost against depth: latencies (product solid, bare calls dashed), sweep, drain."""
    # The series measured at each depth ("name@depth"; not the release's, measured apart).
    series = {s.name: s for s in figure.series if "@" in s.name}
    depths = sorted({int(n.rsplit("@", 1)[1]) for n in series})
    names = list(dict.fromkeys(n.rsplit("@", 1)[0] for n in series))
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    product_colours = iter(["#000000", "#c62828", "#1565c0", "#6a1b9a"])
    # The bare calls in tab20's light shades, the product in dark ones: never the same.
    bare_colours = iter([plt.get_cmap("tab20")((2 * i + 1) % 20) for i in range(len(names))])
    for name in names:
        if name in (DRAIN, "queue depth"):
            continue
        values = [p50(series[f"{name}@{d}"].samples) for d in depths]
        product = name in (POST, LIST, CLIENT_LIST, SWEEP)
        left.plot(depths, values, marker="o", linestyle="-" if product else "--",
                  linewidth=2.5 if product else 1,
                  color=next(product_colours if product else bare_colours),
                  label=name if product else f"bare: {name}")  # fmt: skip
    left.set_xscale(
        "symlog", linthresh=max(1, min(d for d in depths if d) if len(depths) > 1 else 1)
    )
    left.set_yscale("log")
    left.set_xlabel("queued jobs (backlog depth)")
    left.set_ylabel("p50, ms (log scale)")
    left.set_title("Cost per operation: product (solid) and bare AWS calls (dashed)", fontsize=10)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, loc="upper left")
    drains = [series[f"{DRAIN}@{d}"].samples[0] for d in depths]
    right.plot(depths, drains, marker="o", color="#2e7d32")
    right.set_xscale(
        "symlog", linthresh=max(1, min(d for d in depths if d) if len(depths) > 1 else 1)
    )
    right.set_ylim(bottom=0)
    right.set_xlabel("queued jobs (backlog depth)")
    right.set_ylabel("trivial jobs per second")
    right.set_title("The worker's drain throughput", fontsize=10)
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
