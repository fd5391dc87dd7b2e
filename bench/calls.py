"""The AWS calls each operation of the product makes, counted where they arrive.

    python -m bench.calls [--jobs 20] [--run-seconds 5]

Starts moto (with the speed-ups) in this process with a counter on every action it
serves, runs the product on it exactly as ``make run`` does (``infra.run.Services``
reuses the endpoint), and counts, operation by operation: a submission (``POST
/heavy``), the run of a trivial job through the worker, a job of a few seconds (its
checkpoints), a listing page (``GET /jobs?limit=20``) and one run of the recovery sweep.
It also reads a job record back to size it (DynamoDB bills writes per started KB), and
runs the sweep again over a backlog. Only the product's calls are counted: its processes
sign with their own access key, the harness's waits and fills with another.
Prints a Markdown table; docs/capacity.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import growth
from bench.backlog import Target
from bench.client import HttpClient
from bench.stack import FINAL, STAGE, WORKER_ARGS, BenchStack
from infra.emulator import HOST, free_port
from infra.run import Services, copy_app

# The access key the product's processes sign with here (the emulator accepts any); the
# harness's own calls (waiting for jobs, filling a backlog) use BenchStack's.
PRODUCT_KEY = "product-calls"
BACKLOG = 10_000  # queued jobs under the second sweep: what the sweep reads grows with it

_counts: Counter[tuple[str, str]] = Counter()
_lock = threading.Lock()


@contextmanager
def counting_emulator() -> Iterator[int]:
    """An in-process moto server (speed-ups applied) counting each (service, action)."""
    import logging

    from moto.core.responses import BaseResponse
    from moto.server import ThreadedMotoServer

    from infra import moto_speedups

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_speedups.apply()
    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        # Only the product's calls: the harness signs its own with other credentials.
        if f"Credential={PRODUCT_KEY}/" in self.headers.get("Authorization", ""):
            with _lock:
                _counts[(self.service_name, self._get_action())] += 1
        return original(self)

    BaseResponse.call_action = call_action  # type: ignore[method-assign]
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        # moto imports each service's code at its first request: do it now, so that
        # infra.run's quick probe (1 s) finds the endpoint answering, even on a busy machine.
        import boto3

        session = boto3.session.Session(
            aws_access_key_id="warm-up", aws_secret_access_key="test", region_name="us-east-1"
        )
        url = f"http://{HOST}:{port}"
        session.client("sqs", endpoint_url=url).list_queues()
        session.client("dynamodb", endpoint_url=url).list_tables()
        session.client("cloudformation", endpoint_url=url).list_stacks()
        yield port
    finally:
        server.stop()
        BaseResponse.call_action = original  # type: ignore[method-assign]
        moto_speedups.revert()


def counted(action: Callable[[], Any]) -> dict[str, int]:
    """The calls ``action`` caused, by "service:Action"."""
    with _lock:
        _counts.clear()
    action()
    with _lock:
        return {f"{s}:{a}": n for (s, a), n in sorted(_counts.items())}


def per(calls: dict[str, int], jobs: int) -> dict[str, float]:
    return {name: round(n / jobs, 2) for name, n in calls.items()}


def measure(jobs: int, run_seconds: float) -> dict[str, Any]:
    with counting_emulator() as port, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        project = copy_app(workdir / "project")
        log_path = workdir / "stack.log"
        with log_path.open("w") as log, _environment(AWS_ACCESS_KEY_ID=PRODUCT_KEY):
            # The emulator port already answers: Services uses that endpoint, as make run
            # uses a LocalStack it finds there.
            services = Services(
                project_dir=project, stage=STAGE, api_port=free_port(), emulator_port=port,
                output=log, worker_args=WORKER_ARGS,
            )  # fmt: skip
            try:
                stack = BenchStack(services, services.start_all(worker=False), project, log_path)
                return _scenario(stack, jobs, run_seconds)
            finally:
                services.stop_all()


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _settle(stack: BenchStack) -> None:
    """Until the job queue has nothing in flight: the worker's last delete is done."""
    sqs = stack.client("sqs")
    for _ in range(600):
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        if attributes["ApproximateNumberOfMessagesNotVisible"] == "0":
            return
        time.sleep(0.05)
    raise RuntimeError("a message stayed in flight")


def _scenario(stack: BenchStack, jobs: int, run_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ids: list[str] = []
    with HttpClient(stack.url) as api:

        def submit_all() -> None:
            for _ in range(jobs):
                ids.append(api.json("POST", "/heavy", {"n": 0}, expect=202)["job_id"])

        results["submission (POST /heavy), per job"] = per(counted(submit_all), jobs)

        def submit_with_keys() -> None:
            for i in range(jobs):
                headers = {"Content-Type": "application/json", "Idempotency-Key": f"key-{i}"}
                status, data = api.request("POST", "/heavy", b'{"n": 0}', headers)
                if status != 202:
                    raise RuntimeError(f"POST /heavy with a key: {status} {data[:200]!r}")
                ids.append(json.loads(data)["job_id"])

        results["submission with an Idempotency-Key, per job"] = per(
            counted(submit_with_keys), jobs
        )
        item = stack.client("dynamodb").get_item(
            TableName=stack.table_name, Key={"job_id": {"S": ids[0]}}
        )["Item"]
        results["job record size, bytes"] = item_size(item)

        def run_all() -> None:
            stack.services.start_worker(growth.WORKER)
            for job_id in ids:
                stack.wait_job(job_id, lambda j: j.status.value in FINAL, timeout=120)
            _settle(stack)

        # Every job submitted above, keyed or not, runs here.
        results["trivial job through the worker, per job (incl. the worker's start)"] = per(
            counted(run_all), len(ids)
        )
        n = int(run_seconds * 50_000_000)  # the loop's rate here: ~5 x 10^7 per second

        def one_long() -> None:
            job_id = api.json("POST", "/heavy", {"n": n}, expect=202)["job_id"]
            stack.wait_job(job_id, lambda j: j.status.value in FINAL, timeout=120)
            _settle(stack)
            job = stack.job(job_id)
            assert job is not None and job.started_at and job.finished_at
            results["long job, seconds run"] = round(
                (job.finished_at - job.started_at).total_seconds(), 2
            )

        results["job of a few seconds, whole (submit + run)"] = counted(one_long)
        results["listing page (GET /jobs?limit=20), per page"] = per(
            counted(lambda: [api.timed("GET", "/jobs?limit=20") for _ in range(10)]), 10
        )
        stack.services.processes.pop(growth.WORKER).stop()
    results["recovery sweep, one run (a cold environment)"] = counted(
        lambda: growth.sweep_runs(stack, 1)
    )
    target = Target.of(
        stack.client("dynamodb"), stack.client("sqs"), stack.table_name, stack.queue_url
    )
    target.fill(BACKLOG, mirror=False)
    results[f"recovery sweep, one run, {BACKLOG:,} jobs queued"] = counted(
        lambda: growth.sweep_runs(stack, 1)
    )
    return results


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """DynamoDB's item size: attribute names plus values (strings as UTF-8, numbers as
    about one byte per two digits plus one, booleans one byte), as its docs count."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        kind, raw = next(iter(value.items()))
        if kind == "S":
            size += len(raw.encode())
        elif kind == "N":
            digits = len(raw.lstrip("-").replace(".", "").lstrip("0")) or 1
            size += (digits + 1) // 2 + 1
        else:
            size += 1
    return size


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, value in results.items():
        if isinstance(value, dict):
            calls = ", ".join(f"{k.split(':')[1]} {v:g}" for k, v in value.items())
            lines.append(f"| {name} | {calls} |")
        else:
            lines.append(f"| {name} | {value} |")
    return "\n".join(["| operation | AWS calls (or value) |", "| --- | --- |", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    # Long enough for the message hold to be extended (every stale_after / 3 = 10 s).
    parser.add_argument("--run-seconds", type=float, default=25.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure(args.jobs, args.run_seconds)
    print(markdown(results))
    print(json.dumps(results), file=sys.stderr)
    print(f"({time.monotonic() - started:.0f} s; stage {STAGE})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
