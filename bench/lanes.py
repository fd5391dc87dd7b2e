"""Figure 10: lanes. A backlog of jobs that wait on I/O drains over 4 lanes against 1;
the same with jobs that count (CPU-bound), on this machine's cores.

A stack of its own, on a copy of the project whose stage declares ``LANES`` lanes keyed
by kind (``"lanes": 4, "lane_key": "kind"``: applying it renders the worker's reserved
concurrency, 4), with the worker in ``aws`` mode (the mapping as AWS documents it:
infra/event_source/modes.py), so the figure also shows that N lanes behind reserved
concurrency N are never throttled. The copy gets kinds of its own (``kind_modules``;
none ships): for each lane one that waits (``time.sleep``, as a job waiting on a remote
call does) and one that counts (heavyLoad's loop), each named so that it lands in that
lane.

After every kind ran once (each instance's cold start), the same backlog twice, side by
side on the same stack: in one lane (every job of lane 0's kind: one message group, one
job at a time, as a stage with one lane runs it), then spread over the lanes (the kinds in
turn). First ``lanes_io_jobs`` waiting jobs of ``lanes_io_ms``, then ``lanes_cpu_jobs``
counting to ``lanes_cpu_n``. Each drain runs from the first POST to the last job's
``finished_at``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.burst import _dead_letters, _wait_final
from bench.client import HttpClient, HttpError
from bench.sizes import Sizes
from bench.stack import STAGE, WORKER_ARGS, function_name, progress, raise_quotas
from bench.stats import Comparison, Figure, Series, Target
from chalicelib.jobs import lane_of
from infra import lanes as infra_lanes
from infra.emulator import free_port
from infra.event_source.modes import Mode
from infra.run import Services, copy_app

NUMBER = "10"
LANES = 4
# The target: the I/O backlog drains at least 3x faster with LANES lanes than with one.
IO_SPEEDUP = 3.0
SUBMIT_ATTEMPTS = 5

# A kind that waits n milliseconds, reporting every 0.1 s (as a job waiting on I/O).
WAIT_KIND = """
import time

from chalicelib.kinds import Kind
from chalicelib.kinds.heavy_load import Input


def wait(input, ctx):
    end = time.monotonic() + input.n / 1000
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        ctx.report(1 - max(left, 0) * 1000 / max(input.n, 1), None)
    return input.n


KIND = Kind("{name}", "Waits n ms.", Input, wait, int, lambda input, settings: 1)
"""
# A kind that counts to n, as heavyLoad does (CPU-bound).
COUNT_KIND = """
from chalicelib.kinds import Kind
from chalicelib.kinds.heavy_load import Input, heavy_load

KIND = Kind("{name}", "Counts to n.", Input, heavy_load, int, lambda input, settings: 1)
"""


def kind_names(prefix: str, lanes: int) -> list[str]:
    """One kind name per lane among ``lanes`` (``prefix`` and a number), lane 0 first."""
    names: dict[int, str] = {}
    for i in range(1000):
        names.setdefault(lane_of(f"{prefix}{i}", lanes), f"{prefix}{i}")
        if len(names) == lanes:
            break
    return [names[lane] for lane in range(lanes)]


def kind_modules(lanes: int) -> dict[str, str]:
    """The benchmark's own kinds, relative path -> module text: a waiting and a counting
    kind per lane."""
    modules = {}
    for prefix, template in (("wait", WAIT_KIND), ("count", COUNT_KIND)):
        for name in kind_names(prefix, lanes):
            modules[f"chalicelib/kinds/{name}.py"] = template.replace("{name}", name)
    return modules


def declare_lanes(project: Path, lanes: int) -> None:
    """The stage's lanes, keyed by kind, in a project copy's config (rendered into the
    app's environment and the worker's reserved concurrency when the stage is applied)."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][STAGE].update(lanes=lanes, lane_key="kind")
    path.write_text(json.dumps(config, indent=2) + "\n")


@contextmanager
def lanes_running(workdir: Path, lanes: int) -> Iterator[Services]:
    """A stack whose stage has ``lanes`` lanes, with the benchmark's kinds for LANES
    lanes, its worker in aws mode."""
    log_path = workdir / f"lanes-{lanes}.log"
    with log_path.open("w") as log:
        services = Services(
            project_dir=workdir / f"lanes-{lanes}", stage=STAGE, api_port=free_port(),
            emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
            event_source_mode=Mode.AWS.value,
        )  # fmt: skip
        try:
            project = copy_app(services.project_dir)
            raise_quotas(project)
            declare_lanes(project, lanes)
            for relative, text in kind_modules(LANES).items():
                (project / relative).write_text(text)
            services.start_all(worker=True)
            yield services
        finally:
            services.stop_all()


def post(api: HttpClient, kind: str, n: int) -> str:
    """Submit one job; a 503 (the store did not answer in time: a loaded machine) is
    retried, as the API's answer says to."""
    for attempt in range(SUBMIT_ATTEMPTS):
        try:
            body = api.json("POST", "/jobs", {"kind": kind, "input": {"n": n}}, expect=202)
        except HttpError as error:
            if " 503 " not in str(error) or attempt == SUBMIT_ATTEMPTS - 1:
                raise
            time.sleep(1)
        else:
            return str(body["job_id"])
    raise AssertionError("unreachable")


def _moment(job: dict[str, Any], name: str) -> float:
    return datetime.fromisoformat(job[name].replace("Z", "+00:00")).timestamp()


@dataclass
class Drain:
    """One backlog on one stack."""

    seconds: float  # first POST to the last job's finished_at
    jobs: list[dict[str, Any]]

    @property
    def run_seconds(self) -> list[float]:
        return [_moment(job, "finished_at") - _moment(job, "started_at") for job in self.jobs]

    @property
    def lanes_used(self) -> int:
        return len({job["lane"] for job in self.jobs})


def drain(api: HttpClient, kinds: list[str], jobs: int, n: int, timeout: float) -> Drain:
    began = time.time()
    ids = [post(api, kinds[i % len(kinds)], n) for i in range(jobs)]
    final = _wait_final(api, ids, timeout)
    failed = [job for job in final if job["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[0]}")
    return Drain(max(_moment(job, "finished_at") for job in final) - began, final)


def figure_10(workdir: Path, sizes: Sizes) -> Figure:
    progress(
        f"figure {NUMBER}: {sizes.lanes_io_jobs} waiting jobs of {sizes.lanes_io_ms} ms and "
        f"{sizes.lanes_cpu_jobs} counting jobs (n = {sizes.lanes_cpu_n:,}), in 1 lane and "
        f"over {LANES}, aws mode"
    )
    waits, counts = kind_names("wait", LANES), kind_names("count", LANES)
    timeout = sizes.lanes_timeout_seconds
    with lanes_running(workdir, LANES) as services, HttpClient(services.api_url) as api:
        warm = [post(api, kind, 0) for kind in waits + counts]  # every instance's cold start
        _wait_final(api, warm, timeout)
        # One lane: every job of one kind (lane 0's); then the same spread over the lanes.
        io_one = drain(api, waits[:1], sizes.lanes_io_jobs, sizes.lanes_io_ms, timeout)
        io_many = drain(api, waits, sizes.lanes_io_jobs, sizes.lanes_io_ms, timeout)
        cpu_one = drain(api, counts[:1], sizes.lanes_cpu_jobs, sizes.lanes_cpu_n, timeout)
        cpu_many = drain(api, counts, sizes.lanes_cpu_jobs, sizes.lanes_cpu_n, timeout)
        log = (workdir / f"lanes-{LANES}.log").read_text(errors="replace")
        throttles = log.count(f" throttle function={function_name(infra_lanes.WORKER)} ")
        dead_letters = _dead_letters(services)
    progress(
        f"I/O: {io_one.seconds:.1f} s in 1 lane, {io_many.seconds:.1f} s over {LANES}; "
        f"CPU: {cpu_one.seconds:.1f} s, {cpu_many.seconds:.1f} s"
    )
    figure = Figure(NUMBER, f"Lanes: a backlog drained over {LANES} lanes against 1")
    names = (f"{LANES} lanes", "1 lane")
    io_count = f"{sizes.lanes_io_jobs} / {sizes.lanes_io_jobs}"
    cpu_count = f"{sizes.lanes_cpu_jobs} / {sizes.lanes_cpu_jobs}"
    figure.comparisons = [
        Comparison(
            NUMBER, f"backlog of jobs waiting {sizes.lanes_io_ms} ms (I/O): time to drain",
            io_many.seconds, io_one.seconds, "s", *names, io_count,
            target=Target(high=round(1 / IO_SPEEDUP, 3)),
        ),
        Comparison(
            NUMBER, "backlog of counting jobs (CPU-bound): time to drain; no target: "
            "2 cores bound it at 0.5x at best",
            cpu_many.seconds, cpu_one.seconds, "s", *names, cpu_count,
        ),
    ]  # fmt: skip
    for key, run in (("io_one", io_one), ("io_many", io_many), ("cpu_one", cpu_one),
                     ("cpu_many", cpu_many)):  # fmt: skip
        figure.series.append(Series(f"lanes_{key}_run_seconds", "s", run.run_seconds))
    figure.notes += [
        f"I/O backlog: {io_one.seconds:.1f} s in 1 lane, {io_many.seconds:.1f} s over "
        f"{io_many.lanes_used} lanes; CPU backlog: {cpu_one.seconds:.1f} s, "
        f"{cpu_many.seconds:.1f} s.",
        f"Throttled batches {throttles}, dead letters {dead_letters} (reserved concurrency "
        f"{LANES} for {LANES} lanes).",
    ]
    return figure
