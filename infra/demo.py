"""The classic experiment, against a running ``make run``: a heavy job counts in the
worker while ``/fast`` keeps answering.

    python -m infra.demo [--url http://127.0.0.1:8000] [--n 1000000000]

It measures ``/fast`` idle, posts the heavy job, then until the job finishes calls
``/fast`` over and over and shows its latency beside the job's live progress, and ends
with the job's result and a comparison of ``/fast`` idle and during the job. In the
blocking server of the classic example, ``/fast`` would not answer at all until the
count finished.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import requests
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_N = 10**9  # about ten seconds of counting on a laptop core


def fast_latency_ms(session: requests.Session, url: str) -> float:
    start = time.perf_counter()
    session.get(f"{url}/fast", timeout=5).raise_for_status()
    return (time.perf_counter() - start) * 1000


def summary(label: str, samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{label}: {len(samples)} calls, p50 {statistics.median(samples):.2f} ms, "
        f"p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=DEFAULT_N)
    args = parser.parse_args(argv)
    console = Console()
    session = requests.Session()
    url = args.url.rstrip("/")
    try:
        idle = [fast_latency_ms(session, url) for _ in range(50)]
    except requests.RequestException as error:
        console.print(f"[red]No API at {url} ({type(error).__name__}); start it with `make run`.")
        return 2

    accepted = session.post(f"{url}/heavy", json={"n": args.n}, timeout=10)
    accepted.raise_for_status()
    location = accepted.headers["Location"]
    console.print(f"POST /heavy n={args.n:,} -> {accepted.status_code}, Location: {location}")

    busy: list[float] = []
    progress = Progress(
        TextColumn("[bold]job"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )  # fmt: skip
    task = progress.add_task("job", total=1.0, status="queued")
    job: dict[str, object] = {}
    with Live(console=console, refresh_per_second=8) as live:
        while job.get("status") not in ("succeeded", "failed", "cancelled"):
            busy.append(fast_latency_ms(session, url))
            job = session.get(location, timeout=10).json()
            progress.update(
                task,
                completed=float(job["progress"]),  # type: ignore[arg-type]
                status=job["status"],
            )
            table = Table.grid(padding=(0, 2))
            table.add_row(progress)
            table.add_row(
                f"/fast now {busy[-1]:6.2f} ms   "
                f"p50 {statistics.median(busy):6.2f} ms   max {max(busy):6.2f} ms"
            )
            live.update(table)
            time.sleep(0.05)

    console.print(f"job {job['status']}: result {job['result']}, attempts {job['attempts']}")
    console.print(summary("/fast idle      ", idle))
    console.print(summary("/fast during job", busy))
    return 0 if job["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
