"""Figure 8: a burst of short jobs through Lambda's SQS mapping as AWS documents it
(``EVENT_SOURCE_MODE=aws``: five pollers, throttles, backoff), this checkout's design
against today's, the previous release's.

Two stacks, one after the other, each with an emulator of its own on free ports, both
served by this checkout's ``chalice local`` and event source in ``aws`` mode:

- *previous release*: commit ``PREVIOUS_RELEASE`` taken with ``git archive``, unchanged:
  its app, and its template (a standard job queue) applied by its own ``infra.stack``;
- *this checkout*: the app and template here, applied by ``infra.run.Services``.

On both, the worker's timeout is shortened to ``WORKER_TIMEOUT_SECONDS`` (so the job
queue's visibility timeout, derived from it, is a minute at most: 6x on the previous
release, 1x here): a batch the mapping drops at its visibility timeout comes back within
the figure rather than after the default 90 or 15 minutes. Everything else is
each design's default.

The burst: ``jobs`` back-to-back ``POST /heavy`` of ``n`` (about a second of counting),
then each job is read through the API until all are final. Everything is computed from
the jobs' own timestamps (``created_at``, ``started_at`` from the claim, ``finished_at``)
and, for throttles and drops, from the event source's log lines.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from bench.client import HttpClient
from bench.sizes import Sizes
from bench.stack import FINAL, REGION, STAGE, WORKER_ARGS, function_name, progress
from bench.stats import Comparison, Figure, Series, Target, ms, p50, p99
from infra import lanes as infra_lanes
from infra.emulator import free_port
from infra.event_source.modes import Mode
from infra.run import PROJECT_DIR, Services, copy_app

PREVIOUS_RELEASE = "aa910a9"  # today's design: a standard job queue behind the mapping
WORKER_FUNCTION = infra_lanes.WORKER
WORKER_TIMEOUT_SECONDS = 10
# Checkpoint-and-continue margin: under the shortened timeout, far above a 1 s job.
TIMEOUT_MARGIN_SECONDS = "2"
IDLE_P99_LIMIT_MS = 1000.0  # idle between consecutive jobs, p99


@dataclass
class Burst:
    """What one design did with the burst."""

    design: str
    jobs: list[dict[str, Any]]  # the API's view of each job, in submission order
    seconds: float  # from the first POST to the last job final, as the client saw it
    throttles: int = 0  # the event source's "throttle" lines for the worker
    releases: int = 0  # ... and its "release" lines: batches dropped at visibility timeout
    dead_letters: int = 0  # messages in the dead-letter queue at the end

    def _times(self, job: dict[str, Any], name: str) -> float:
        return datetime.fromisoformat(job[name].replace("Z", "+00:00")).timestamp()

    @property
    def ran(self) -> list[dict[str, Any]]:
        """The jobs that started, in the order they started."""
        started = [j for j in self.jobs if j.get("started_at")]
        return sorted(started, key=lambda j: self._times(j, "started_at"))

    @property
    def run_seconds(self) -> list[float]:
        return [
            self._times(j, "finished_at") - self._times(j, "started_at")
            for j in self.ran
            if j.get("finished_at")
        ]

    @property
    def total_seconds(self) -> float:
        """First job created to last job finished."""
        first = min(self._times(j, "created_at") for j in self.jobs)
        return max(self._times(j, "finished_at") for j in self.ran) - first

    @property
    def overhead_seconds(self) -> float:
        """The burst's time beyond its jobs' own: what the worker spent not running one
        (the jobs' speed, which the machine's load moves, cancels out)."""
        return self.total_seconds - sum(self.run_seconds)

    @property
    def idle_gaps(self) -> list[float]:
        """Seconds between a job's end and the next job's start, in start order."""
        ran = self.ran
        return [
            self._times(later, "started_at") - self._times(earlier, "finished_at")
            for earlier, later in itertools.pairwise(ran)
        ]

    @property
    def inversions(self) -> int:
        """Pairs of jobs that started in the opposite order to their submission."""
        rank = {j["job_id"]: i for i, j in enumerate(self.jobs)}
        order = [rank[j["job_id"]] for j in self.ran]
        return sum(1 for i, a in enumerate(order) for b in order[i + 1 :] if a > b)

    @property
    def failed(self) -> int:
        return sum(1 for j in self.jobs if j["status"] != "succeeded")

    @property
    def retried(self) -> int:
        return sum(1 for j in self.jobs if int(j.get("attempts") or 0) > 1)

    def describe(self) -> str:
        gaps, busy = self.idle_gaps, sum(self.run_seconds)
        return (
            f"{self.design}: {len(self.jobs)} jobs, total {self.total_seconds:.1f} s for "
            f"{busy:.1f} s of runs ({self.total_seconds / busy:.2f}x); "
            f"idle between jobs p50 {1000 * p50(gaps):.0f} ms, p99 {1000 * p99(gaps):.0f} ms, "
            f"max {1000 * max(gaps, default=0):.0f} ms; {self.inversions} pairs started out "
            f"of submission order; {self.failed} not succeeded, {self.retried} retried, "
            f"{self.dead_letters} dead-lettered; {self.throttles} throttled invocations, "
            f"{self.releases} batches dropped at their visibility timeout"
        )


def previous_release(workdir: Path) -> Path:
    """The previous release's tree (``git archive``), as it was committed."""
    target = workdir / f"release-{PREVIOUS_RELEASE}"
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "archive", PREVIOUS_RELEASE],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def shorten_worker_timeout(project: Path) -> None:
    """The worker's timeout and continuation margin, in a project's config (any release)."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["lambda_functions"][WORKER_FUNCTION]["lambda_timeout"] = WORKER_TIMEOUT_SECONDS
    stage = config["stages"][STAGE]
    stage.setdefault("environment_variables", {})["JOBS_TIMEOUT_MARGIN_SECONDS"] = (
        TIMEOUT_MARGIN_SECONDS
    )
    path.write_text(json.dumps(config, indent=2))


@contextmanager
def design_running(
    workdir: Path, design: str, release: Path | None
) -> Iterator[tuple[Services, Path]]:
    """A stack of ``design`` with its worker in aws mode: the previous release's tree
    (applied by its own infra) when ``release`` is given, else this checkout; and the
    path of the stack's log."""
    log_path = workdir / f"{design}.log"
    with log_path.open("w") as log:
        services = Services(
            project_dir=workdir / design, stage=STAGE, api_port=free_port(),
            emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
            event_source_mode=Mode.AWS.value,
        )  # fmt: skip
        try:
            services.start_emulator()
            if release is None:
                shorten_worker_timeout(copy_app(services.project_dir))
                services.apply_infra()
            else:
                shorten_worker_timeout(release)
                # Its own infra.stack (`-m` finds the release's `infra` first in its tree)
                # writes the stage's resource names into the release's config.
                subprocess.run(
                    [sys.executable, "-m", "infra.stack", "apply", "--stage", STAGE],
                    cwd=release, env=services.environment(), check=True, capture_output=True,
                )  # fmt: skip
                copy_app(services.project_dir, release)
            services.start_api()
            services.start_worker()
            yield services, log_path
        finally:
            services.stop_all()


def run_burst(services: Services, log_path: Path, design: str, sizes: Sizes) -> Burst:
    """Submit the burst, wait until every job is final, read what happened."""
    with HttpClient(services.api_url) as api:
        # The worker's cold start, before the burst: a trivial job, run to the end.
        warm = api.json("POST", "/heavy", {"n": 0}, expect=202)["job_id"]
        _wait_final(api, [warm], sizes.burst_timeout_seconds)
        began = time.monotonic()
        ids = [
            api.json("POST", "/heavy", {"n": sizes.burst_n}, expect=202)["job_id"]
            for _ in range(sizes.burst_jobs)
        ]
        jobs = _wait_final(api, ids, sizes.burst_timeout_seconds)
        seconds = time.monotonic() - began
    worker = function_name(WORKER_FUNCTION)
    lines = log_path.read_text(errors="replace").splitlines()
    return Burst(
        design=design,
        jobs=jobs,
        seconds=seconds,
        throttles=sum(f" throttle function={worker} " in line for line in lines),
        releases=sum(f" release function={worker} " in line for line in lines),
        dead_letters=_dead_letters(services),
    )


def _wait_final(api: HttpClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    while len(final) < len(ids):
        for job_id in ids:
            if job_id in final:
                continue
            job = api.json("GET", f"/jobs/{job_id}")
            if job["status"] in FINAL:
                final[job_id] = job
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(final)} jobs not final after {timeout:.0f} s")
        time.sleep(0.2)
    return [final[job_id] for job_id in ids]


def _dead_letters(services: Services) -> int:
    """Messages in the stage's dead-letter queue(s): what SQS gave up on."""
    sqs = boto3.client(
        "sqs", endpoint_url=services.endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    total = 0
    for url in sqs.list_queues().get("QueueUrls", []):
        if "dlq" in url.rsplit("/", 1)[1]:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            total += sum(int(v) for v in attributes.values())
    return total


def figure_8(workdir: Path, sizes: Sizes) -> Figure:
    progress(
        f"figure 8: a burst of {sizes.burst_jobs} jobs (n = {sizes.burst_n:,}) in aws mode, "
        f"this checkout against release {PREVIOUS_RELEASE}"
    )
    release = previous_release(workdir)
    with design_running(workdir, "previous", release) as (services, log):
        previous = run_burst(services, log, f"release {PREVIOUS_RELEASE}", sizes)
    progress(previous.describe())
    with design_running(workdir, "current", None) as (services, log):
        current = run_burst(services, log, "this checkout", sizes)
    progress(current.describe())
    figure = Figure("8", "A burst of short jobs through AWS's SQS mapping (aws mode)")
    count = f"{len(current.jobs)} / {len(previous.jobs)}"
    gaps = f"{len(current.idle_gaps)} / {len(previous.idle_gaps)}"
    names = ("this checkout", f"release {PREVIOUS_RELEASE}")
    figure.comparisons = [
        Comparison(
            "8", "burst: first job created to last finished, beyond the sum of run times",
            current.overhead_seconds, previous.overhead_seconds, "s", *names, count,
            target=Target(high=1.0),
        ),
        Comparison(
            "8", "burst: idle between consecutive jobs, p99", 1000 * p99(current.idle_gaps),
            1000 * p99(previous.idle_gaps), "ms", *names, gaps,
            absolute_limit=IDLE_P99_LIMIT_MS,
        ),
        Comparison(
            "8", "burst: idle between consecutive jobs, p50", 1000 * p50(current.idle_gaps),
            1000 * p50(previous.idle_gaps), "ms", *names, gaps,
        ),
    ]  # fmt: skip
    for burst, key in ((current, "current"), (previous, "previous")):
        figure.series += [
            Series(f"burst_{key}_idle_gaps", "ms", ms(burst.idle_gaps)),
            Series(f"burst_{key}_run_seconds", "s", burst.run_seconds),
        ]
        figure.notes.append(burst.describe() + ".")
    return figure
