"""The benchmark's own local stack, and what the figures do with it.

A copy of the project (as the end-to-end tests make one) runs on free ports, started by
``infra.run.Services`` exactly as ``make run`` starts it: moto's server, the template
applied as the ``local`` stage, ``chalice local --no-autoreload`` and the local event
source. Never ports 4566 or 8000, so a ``make run`` of the user's is left alone.

One deviation from ``make run``: the recovery sweep (``@app.schedule``, every minute) is
slowed to once an hour. On AWS it is another Lambda function on other hardware; here its
cold start and its query would land at a random moment on the same two cores as the
figures being measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3

from bench.client import HttpClient
from chalicelib.clients import ANONYMOUS
from chalicelib.config import MAX_ACTIVE_PER_CLIENT, MAX_ACTIVE_SECONDS_PER_CLIENT
from chalicelib.jobs import ACTIVE, Job, active_key, from_item
from infra.emulator import free_port
from infra.policies import lambda_function_name
from infra.run import PROJECT_DIR, Services, copy_app

STAGE = "local"
REGION = "us-east-1"
WORKER_ARGS = ("--schedule-period-seconds", "3600")
# The largest n the API accepts (JOBS_MAX_N's default): minutes of counting, far longer
# than any window that needs the worker busy; such a job is cancelled afterwards.
LONG_N = 10**10
FINAL = ("succeeded", "failed", "cancelled")
# A client's quota, raised on the bench's stacks: figure 2 leaves 500 of one client's jobs
# queued (it drains the queue's messages, not the records), figure 9 its rounds' posts,
# over the default 100. The quota check itself still runs, reading the caller's active
# jobs (figure 9's backlog is another client's: chalicelib.service, "Quotas").
QUOTAS = {MAX_ACTIVE_PER_CLIENT: "100000", MAX_ACTIVE_SECONDS_PER_CLIENT: "100000000"}


def function_name(handler: str, project: Path = PROJECT_DIR) -> str:
    """``handler``'s function on the local stage, as the event source names it in its log
    (the app's name read from the project's .chalice/config.json)."""
    app_name = json.loads((project / ".chalice" / "config.json").read_text())["app_name"]
    return lambda_function_name(app_name, STAGE, handler)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# No quota at all (0 turns each limit off): no submission reads the active index.
QUOTAS_OFF = {MAX_ACTIVE_PER_CLIENT: "0", MAX_ACTIVE_SECONDS_PER_CLIENT: "0"}


def raise_quotas(project: Path, quotas: dict[str, str] = QUOTAS) -> None:
    """Set ``quotas`` in the stage's environment of a project copy (``chalice local`` gives
    its functions the stage's environment_variables)."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][STAGE].setdefault("environment_variables", {}).update(quotas)
    path.write_text(json.dumps(config, indent=2) + "\n")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    accepted_at: float  # wall clock (time.time()) when the 202 had been read


@dataclass
class BenchStack:
    services: Services
    outputs: dict[str, str]
    project: Path
    log_path: Path
    _clients: dict[str, Any] = field(default_factory=dict)

    @classmethod
    @contextmanager
    def running(cls, workdir: Path, quotas: dict[str, str] = QUOTAS) -> Iterator[BenchStack]:
        """A stack on free ports with the API up and no worker yet, its clients' quotas
        ``quotas``; stopped on exit."""
        project = copy_app(workdir / "project")
        raise_quotas(project, quotas)
        log_path = workdir / "stack.log"
        with log_path.open("w") as log:
            services = Services(
                project_dir=project, stage=STAGE, api_port=free_port(),
                emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
            )  # fmt: skip
            try:
                yield cls(services, services.start_all(worker=False), project, log_path)
            finally:
                services.stop_all()

    @property
    def url(self) -> str:
        return self.services.api_url

    @property
    def table_name(self) -> str:
        return self.outputs["TableName"]

    @property
    def queue_url(self) -> str:
        return self.outputs["QueueUrl"]

    def client(self, service: str) -> Any:
        """A boto3 client on the stack's emulator (one per service, thread-safe)."""
        if service not in self._clients:
            self._clients[service] = self._session.client(
                service, endpoint_url=self.services.endpoint
            )
        return self._clients[service]

    @cached_property
    def _session(self) -> boto3.session.Session:
        return boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
        )

    def environment(self) -> dict[str, str]:
        """What the stack's own processes get: the emulator's endpoint and credentials."""
        return self.services.environment()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    # --- the worker ---------------------------------------------------------------------

    def start_worker(self, api: HttpClient) -> None:
        """Start the event source and wait out its cold start with a trivial job."""
        self.services.start_worker()
        job = submit(api, 0)
        self.wait_job(job.job_id, lambda j: j.status.value in FINAL, timeout=60)

    def settle_worker(self, api: HttpClient) -> None:
        """Return once the worker is idle: a trivial job queued now runs only after
        whatever the worker was doing (reserved concurrency 1) has ended."""
        job = submit(api, 0)
        self.wait_job(job.job_id, lambda j: j.status.value == "succeeded", timeout=60)

    @contextmanager
    def heavy_job_running(self, api: HttpClient) -> Iterator[str]:
        """A long heavy job counting in the worker for the duration of the block;
        cancelled afterwards, and the worker idle again before returning."""
        job = submit(api, LONG_N)
        self.wait_job(job.job_id, lambda j: j.status.value == "running", timeout=60)
        time.sleep(0.2)  # past the claim's writes and log lines: only the loop runs now
        try:
            yield job.job_id
        finally:
            still = self.job(job.job_id)
            api.json("POST", f"/jobs/{job.job_id}/cancel", {})
            if still is None or still.status.value != "running":
                raise RuntimeError(f"the heavy job stopped early: {still}")
            self.settle_worker(api)

    # --- the job table and the queue, directly -------------------------------------------

    def job(self, job_id: str) -> Job | None:
        item = (
            self.client("dynamodb")
            .get_item(TableName=self.table_name, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
            .get("Item")
        )
        return from_item(item) if item else None

    def wait_job(
        self,
        job_id: str,
        condition: Callable[[Job], bool],
        timeout: float = 60,
        interval: float = 0.01,
    ) -> Job:
        """Read the job (GetItem, not the API) until ``condition`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job is not None and condition(job):
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"job {job_id} is {job}, after {timeout} s; the stack's log ends:\n"
                    + self.log_tail()
                )
            time.sleep(interval)

    def drain(self, queue_url: str | None = None) -> int:
        """Delete every visible message of the queue; return how many."""
        sqs = self.client("sqs")
        url = queue_url or self.queue_url
        drained = 0
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return drained
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            drained += len(messages)

    def read_quota(self) -> None:
        """What a submission's quota check reads, as bare boto3 (a floor's share): one
        Query of the caller's partition of the active index (``anonymous``: the bench's
        stages have no keys), up to the stage's limit (chalicelib.store.JobTable.active)."""
        self.client("dynamodb").query(
            TableName=self.table_name,
            IndexName=ACTIVE.name,
            KeyConditionExpression="#active = :client",
            ExpressionAttributeNames={"#active": ACTIVE.partition_key},
            ExpressionAttributeValues={":client": {"S": active_key(ANONYMOUS)}},
            ScanIndexForward=True,
            Limit=int(QUOTAS[MAX_ACTIVE_PER_CLIENT]),
        )

    def delete_jobs(self, job_ids: list[str]) -> None:
        """Remove benchmark-made records, so later figures see a table like a fresh one."""
        ddb = self.client("dynamodb")
        for start in range(0, len(job_ids), 25):
            requests = [
                {"DeleteRequest": {"Key": {"job_id": {"S": job_id}}}}
                for job_id in job_ids[start : start + 25]
            ]
            ddb.batch_write_item(RequestItems={self.table_name: requests})

    def create_queue_like_jobs(self, name: str) -> str:
        """A queue with the job queue's kind (FIFO or not) and visibility timeout (for the
        floor's own worker); a FIFO queue's ``name`` ends in ``.fifo``."""
        sqs = self.client("sqs")
        names = ["VisibilityTimeout", "FifoQueue", "ContentBasedDeduplication"]
        current = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        attributes = {k: v for k, v in current["Attributes"].items() if k in names}
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url


# --- the API ------------------------------------------------------------------------------


def submit(api: HttpClient, n: int) -> Submitted:
    """POST /heavy {"n": n}; the job's id and when its 202 arrived."""
    body = json.dumps({"n": n}).encode()
    _, data = api.timed("POST", "/heavy", body, {"Content-Type": "application/json"}, expect=202)
    accepted_at = time.time()
    return Submitted(job_id=json.loads(data)["job_id"], accepted_at=accepted_at)


def epoch(moment: datetime | None) -> float:
    if moment is None:
        raise ValueError("the job has no such timestamp yet")
    return moment.timestamp()


@contextmanager
def bare_loop_running() -> Iterator[None]:
    """A bare loop counting in a plain process (no AWS, no worker) during the block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.loop", str(10**13)],
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.2)  # past the interpreter's start-up: only the loop runs now
        yield
    finally:
        process.kill()
        process.wait()
