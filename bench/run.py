"""The whole benchmark, in the order that keeps each figure's conditions clean.

1. Cold start and package (figure 6), and the in-process baselines: before any stack,
   on a quiet machine.
2. A stack without a worker: POST /heavy against its floor (figure 2).
3. The worker started and warm; the floor's worker beside it: queue-to-start (3) and
   throughput (5).
4. Loop speed (4), /fast latency (1), /fast under load (7), a job's finish to its
   webhook (13).
5. With that stack stopped: a burst through AWS's mapping (8), on two stacks of its own.
6. On a stack of its own, once the others are done: cost against backlog depth (9).
7. On a stack of its own with four lanes: a backlog in one lane and spread over four (10).
8. On a stack of its own: how close to its run_at a job that runs later starts (11).
9. On a stack of its own: bulk submission (12).

``--only 9`` (or ``--only 9,10``) measures just those figures, into ``--out``.

A figure that fails does not lose the others: it is reported as failed, with its error,
beside everything measured before and after it (when the shared stack fails, each figure
still to be measured on it is reported with that error), the files are written, and the
run exits 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench import (
    bulk,
    burst,
    coldstart,
    fast,
    growth,
    lanes,
    later,
    loopspeed,
    queueing,
    report,
    submit,
    webhooks,
)
from bench.client import HttpClient
from bench.machine import describe, load_average
from bench.sizes import FULL, SMOKE, Sizes
from bench.stack import BenchStack, progress
from bench.stats import Figure
from infra.run import PROJECT_DIR

ORDER = (
    *("1", "2", "3", "4", "5", "6", "7", "8", "9"),
    *(lanes.NUMBER, later.NUMBER, bulk.NUMBER, webhooks.NUMBER),
)
# The figures measured on the shared stack (the rest start their own or none).
ON_SHARED_STACK = frozenset({"1", "2", "3", "4", "5", "7", webhooks.NUMBER})


def measure(workdir: Path, sizes: Sizes, only: frozenset[str] = frozenset(ORDER)) -> list[Figure]:
    """Measure the figures in ``only`` (all by default), in ORDER; a figure that raises
    is a failed figure (``Figure.failed``), and the rest are measured all the same."""
    if only != frozenset(ORDER):
        return _measure_some(workdir, sizes, only)
    figures: dict[str, Figure] = {}
    _attempt(figures, "6", lambda: coldstart.figure_6(workdir, sizes))
    try:
        with BenchStack.running(workdir) as stack:
            progress(f"stack up: API {stack.url}, emulator {stack.services.endpoint}")
            _attempt(figures, "2", lambda: submit.figure_2(stack, sizes))
            with HttpClient(stack.url) as api:
                stack.start_worker(api)
            with queueing.floor_running(stack) as floor:
                _attempt(figures, "3", lambda: queueing.figure_3(stack, floor, sizes))
                _attempt(figures, "5", lambda: queueing.figure_5(stack, floor, sizes))
            _attempt(figures, "4", lambda: loopspeed.figure_4(stack, sizes))
            _attempt(figures, "1", lambda: fast.figure_1(stack, sizes))
            _attempt(figures, "7", lambda: fast.figure_7(stack, sizes))
            _attempt(figures, webhooks.NUMBER, lambda: webhooks.figure_13(stack, sizes))
            if stack.services.dead():
                raise RuntimeError(f"{stack.services.dead()} died; log:\n{stack.log_tail()}")
    except Exception as error:
        # The shared stack failed: what it still owed fails with it; what it measured
        # before stays (a process that died may have skewed it: the error says which).
        for number in sorted(ON_SHARED_STACK - figures.keys(), key=ORDER.index):
            figures[number] = _failed(number, error)
        progress(f"the shared stack failed: {error!r}")
    _attempt(figures, "8", lambda: burst.figure_8(workdir, sizes))
    _attempt(figures, "9", lambda: growth.figure_9(workdir, sizes))
    _attempt(figures, lanes.NUMBER, lambda: lanes.figure_10(workdir, sizes))
    _attempt(figures, later.NUMBER, lambda: later.figure_11(workdir, sizes))
    _attempt(figures, bulk.NUMBER, lambda: bulk.figure_12(workdir, sizes))
    return [figures[n] for n in ORDER]


def _measure_some(workdir: Path, sizes: Sizes, only: frozenset[str]) -> list[Figure]:
    """The figures that need no shared stack (main() refuses the others alone)."""
    alone = {
        "6": lambda: coldstart.figure_6(workdir, sizes),
        "8": lambda: burst.figure_8(workdir, sizes),
        "9": lambda: growth.figure_9(workdir, sizes),
        lanes.NUMBER: lambda: lanes.figure_10(workdir, sizes),
        later.NUMBER: lambda: later.figure_11(workdir, sizes),
        bulk.NUMBER: lambda: bulk.figure_12(workdir, sizes),
    }
    figures: dict[str, Figure] = {}
    for number in ORDER:
        if number in only:
            _attempt(figures, number, alone[number])
    return list(figures.values())


def _attempt(figures: dict[str, Figure], number: str, measure_one: Callable[[], Figure]) -> None:
    """Measure one figure into ``figures``; if it raises, record it as failed and go on."""
    try:
        figures[number] = measure_one()
    except Exception as error:
        figures[number] = _failed(number, error)
        progress(f"figure {number} failed: {error!r}")


def _failed(number: str, error: Exception) -> Figure:
    return Figure.failed(number, f"{type(error).__name__}: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the local stack; write BENCHMARKS.md, a chart and raw samples.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that it runs, proves nothing"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write everything into this directory (default: BENCHMARKS.md at the project's "
        "root, the chart and the JSON in bench/results/)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated figures to measure alone (6, 8, 9, 10, 11, 12); needs --out",
    )
    args = parser.parse_args(argv)
    only = frozenset(ORDER) if args.only is None else frozenset(args.only.split(","))
    if not only <= frozenset(ORDER):
        parser.error(f"--only: no figure {', '.join(sorted(only - frozenset(ORDER)))}")
    if args.only is not None and args.out is None:
        parser.error("--only writes a partial report: give it --out DIR")
    if only & ON_SHARED_STACK and only != frozenset(ORDER):
        parser.error("--only supports figures 6, 8, 9, 10, 11 and 12 (the others share one stack)")
    sizes = SMOKE if args.smoke else FULL
    if args.out is None:
        markdown_path, results_dir = (
            PROJECT_DIR / "BENCHMARKS.md",
            PROJECT_DIR / "bench" / "results",
        )
    else:
        markdown_path, results_dir = args.out / "BENCHMARKS.md", args.out
    machine = describe(PROJECT_DIR)
    workdir = Path(tempfile.mkdtemp(prefix="heavy-jobs-bench-"))
    started = time.monotonic()
    try:
        figures = measure(workdir, sizes, only)
    except BaseException:
        progress(f"failed; the scratch directory (stack.log, project copy) is kept: {workdir}")
        raise
    run = report.Run(
        machine, figures, args.smoke, time.monotonic() - started, load_average(), asdict(sizes)
    )
    report.write(run, markdown_path, results_dir)
    failed = [f.number for f in figures if f.error]
    if args.keep_workdir or failed:
        progress(f"scratch directory kept (stack.log, project copy): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    progress(f"wrote {markdown_path} and {results_dir} in {run.seconds:.0f} s")
    if failed:
        progress(f"figure(s) {', '.join(failed)} failed: see their sections in {markdown_path}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
