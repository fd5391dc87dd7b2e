"""Fault injection against the local stack as real processes: a killed worker, duplicate
and racing deliveries, poison, failing jobs, cancellation, Idempotency-Key, and a job
longer than the function's timeout."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests

from chalicelib.jobs import Job, from_item, to_item, to_message, utc_now
from tests.e2e.conftest import Stack
from tests.e2e.test_local_stack import SECONDS_OF_WORK
from tests.waiting import wait_for

# A kind module added to the copied project: the registry finds it like any other.
FAILING_KIND = """
from chalicelib.kinds import Kind
from chalicelib.kinds.heavy_load import Input


def explode(input, ctx):
    raise RuntimeError("injected failure")


KIND = Kind("explode", "Always fails.", Input, explode, int, lambda input, settings: 1)
"""


def log_records(stack: Stack, process: str = "worker") -> list[dict[str, Any]]:
    """The JSON log lines a process of the stack wrote (``name | {...}``)."""
    records = []
    for line in stack.log.splitlines():
        name, _, text = line.partition(" | ")
        if name.strip().startswith(process) and text.startswith('{"level"'):
            records.append(json.loads(text))
    return records


def succeeded_logged(stack: Stack) -> int:
    """How many "Job succeeded" lines the stack's workers have logged."""
    return sum(1 for r in log_records(stack) if r["message"] == "Job succeeded")


def started(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return [
        r for r in log_records(stack) if r["message"] == "Job started" and r.get("job_id") == job_id
    ]


def put_job(stack: Stack, kind: str, n: int) -> str:
    """A job of any kind, written and enqueued as POST /heavy would (which only makes
    heavyLoad jobs)."""
    job = Job.new(n=n, now=utc_now(), kind=kind, retention=timedelta(days=1))
    stack.client("dynamodb").put_item(TableName=stack.outputs["TableName"], Item=to_item(job))
    stack.send_raw(to_message(job))
    return job.job_id


def run_killing_the_worker_midway(
    stack: Stack, job_id: str, start_seconds: float, finish_seconds: float
) -> tuple[dict[str, Any], list[float]]:
    """SIGKILL the worker once the job's checkpoint shows a third done, start another, and
    wait for the job to succeed; return it and every progress seen along the way."""
    progress: list[float] = []

    def reached(fraction: float) -> bool:
        progress.append(stack.job(job_id)["progress"])
        return progress[-1] >= fraction

    wait_for(lambda: reached(0.3), start_seconds, "the job to get a third of the way")
    stack.services.processes["worker"].kill()  # SIGKILL, mid-job
    stack.services.start_worker("worker2")

    def finished() -> dict[str, Any] | None:
        job = stack.job(job_id)
        progress.append(job["progress"])
        return job if job["status"] == "succeeded" else None

    job = wait_for(finished, finish_seconds, lambda: f"the job to finish\n{stack.log[-4000:]}")
    return job, progress


def test_killed_worker_job_resumes_from_its_checkpoint(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    n = 8 * SECONDS_OF_WORK
    job_id = stack.submit(n)["job_id"]
    job, progress = run_killing_the_worker_midway(stack, job_id, 60, 120)

    assert job["result"] == n and job["attempts"] == 2
    assert progress == sorted(progress)  # never fell back: it resumed from the checkpoint
    runs = started(stack, job_id)
    assert [r["attempt"] for r in runs] == [1, 2]
    assert runs[1]["state"] >= 0.3 * n  # not from zero: heavyLoad's state is its count
    # The worker writes its log line after the job's item: wait for it, then count.
    wait_for(lambda: succeeded_logged(stack), 30, "the worker's 'Job succeeded' log line")
    assert succeeded_logged(stack) == 1


def message_of(stack: Stack, job_id: str) -> str:
    """The job's message, as the API (or the sweep) sends it."""
    item = stack.client("dynamodb").get_item(
        TableName=stack.outputs["TableName"], Key={"job_id": {"S": job_id}}
    )["Item"]
    return to_message(from_item(item))


def test_duplicate_deliveries_never_run_a_job_twice(make_stack: Callable[..., Stack]) -> None:
    """On the FIFO job queue (one message group: one message in flight) a duplicate sent
    while the job runs waits behind the run's message, even with a second worker ready to
    take it; once the run ended it is delivered and acknowledged, as is one sent later. A
    duplicate delivered while the job runs (possible only if the run's message hold
    lapsed) is covered in tests/chalicelib/test_worker.py."""
    stack = make_stack()
    stack.services.start_worker("worker2")  # a second worker could take a duplicate at once
    n = 3 * SECONDS_OF_WORK
    job_id = stack.submit(n)["job_id"]
    stack.wait_for_job(job_id, lambda j: j["status"] == "running")
    stack.send_raw(message_of(stack, job_id))  # duplicate of a running job (heartbeat fresh)
    # The case under test happened: the job (seconds of work, sized from the speed measured
    # at the start of the run) was still running when its duplicate was sent.
    assert stack.job(job_id)["status"] == "running"

    done = stack.wait_for_job(job_id, lambda j: j["status"] == "succeeded")
    stack.send_raw(message_of(stack, job_id))  # duplicate of a finished job
    wait_for(lambda: stack.depth() == 0, 20, "the duplicates to be acknowledged")

    assert stack.job(job_id) == done
    assert done["attempts"] == 1 and done["result"] == n
    assert len(started(stack, job_id)) == 1
    records = log_records(stack)
    duplicates = [r for r in records if r["message"] == "Duplicate delivery acknowledged"]
    assert [r["status"] for r in duplicates] == ["succeeded", "succeeded"]
    succeeded_at = next(i for i, r in enumerate(records) if r["message"] == "Job succeeded")
    assert records.index(duplicates[0]) > succeeded_at  # held back until the run ended


def test_two_workers_racing_for_one_job_run_it_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.services.start_worker("worker2")
    job_ids = []
    for _ in range(4):
        job_id = stack.submit(SECONDS_OF_WORK // 4)["job_id"]
        stack.send_raw(message_of(stack, job_id))  # two messages for each job
        job_ids.append(job_id)

    jobs = [stack.wait_for_job(i, lambda j: j["status"] == "succeeded") for i in job_ids]

    assert all(j["attempts"] == 1 and j["result"] == SECONDS_OF_WORK // 4 for j in jobs)
    assert all(len(started(stack, i)) == 1 for i in job_ids)


def test_each_kind_of_poison_is_dropped_at_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    for body in [
        "not json",
        json.dumps({"n": 5}),
        json.dumps({"job_id": "6f9619ff-8b86-4011-b42d-00c04fc964ff"}),
    ]:
        stack.send_raw(body)
    wait_for(lambda: stack.depth() == 0, 20, "the poison to be acknowledged")
    poison = [r for r in log_records(stack) if r["message"].startswith("Dropping a poison")]
    assert len(poison) == 3
    assert stack.depth("DeadLetterQueueUrl") == 0
    # The event source logs each invocation's outcome after the queue has taken its delete:
    # the last line may land after the depth reads 0.
    wait_for(lambda: stack.log.count("outcome=") >= 3, 20, "the three invocations' outcomes")
    assert stack.log.count("outcome=succeeded") == 3  # acknowledged, not retried


def test_a_failing_job_is_retried_with_backoff_then_failed(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(extra_files={"chalicelib/kinds/explode.py": FAILING_KIND})
    job_id = put_job(stack, "explode", 10)

    failed = stack.wait_for_job(job_id, lambda j: j["status"] == "failed", timeout=60)

    assert failed["error"] == "RuntimeError: injected failure"
    assert failed["attempts"] == 3  # JOBS_MAX_ATTEMPTS' default
    retries = [r for r in log_records(stack) if r["message"] == "Job will be retried"]
    assert [r["delay_seconds"] for r in retries] == [1, 2]  # base 1 s, doubling


def test_cancelling_a_running_job_stops_it_and_a_queued_one_never_starts(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    running = stack.submit(50 * SECONDS_OF_WORK)["job_id"]
    stack.wait_for_job(running, lambda j: j["status"] == "running")
    queued = stack.submit(10)["job_id"]  # waits: the worker runs one job at a time

    answer = requests.post(f"{stack.url}/jobs/{queued}/cancel", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    answer = requests.post(f"{stack.url}/jobs/{running}/cancel", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"

    # The run stops at its next checkpoint (0.2 s here), far before its ~50 s of work.
    wait_for(
        lambda: any(
            r["message"] == "Job cancelled while running; stopped" for r in log_records(stack)
        ),
        10,
        "the running job to stop",
    )
    wait_for(lambda: stack.depth() == 0, 20, "the queued job's message to be handled")
    stopped, never = stack.job(running), stack.job(queued)
    assert stopped["status"] == "cancelled" and stopped["result"] is None
    assert stopped["progress"] < 0.5
    assert never["status"] == "cancelled" and never["started_at"] is None
    assert never["attempts"] == 0
    again = requests.post(f"{stack.url}/jobs/{running}/cancel", timeout=10)
    assert again.status_code == 200  # idempotent

    finished = stack.submit(10)["job_id"]
    stack.wait_for_job(finished, lambda j: j["status"] == "succeeded")
    conflict = requests.post(f"{stack.url}/jobs/{finished}/cancel", timeout=10)
    assert conflict.status_code == 409


def test_idempotency_key_over_http(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    first = requests.post(
        f"{stack.url}/heavy", json={"n": 7}, headers={"Idempotency-Key": "order-42"}, timeout=10
    )
    again = requests.post(
        f"{stack.url}/heavy", json={"n": 7}, headers={"Idempotency-Key": "order-42"}, timeout=10
    )
    other = requests.post(
        f"{stack.url}/heavy", json={"n": 8}, headers={"Idempotency-Key": "order-42"}, timeout=10
    )

    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    done = stack.wait_for_job(first.json()["job_id"], lambda j: j["status"] == "succeeded")
    assert done["attempts"] == 1


def test_a_job_longer_than_the_function_timeout_completes_across_invocations(
    make_stack: Callable[..., Stack],
) -> None:
    # Half of each invocation is left for the checkpoint, the release and the send: on a
    # loaded machine a cold invocation's AWS calls to the emulator can take that long.
    stack = make_stack(
        environment={"JOBS_TIMEOUT_MARGIN_SECONDS": "1.5"},
        functions={"process_job": {"lambda_timeout": 3}},
    )
    n = 5 * SECONDS_OF_WORK  # several invocations of work

    job = stack.wait_for_job(
        stack.submit(n)["job_id"], lambda j: j["status"] == "succeeded", timeout=120
    )

    assert job["result"] == n and job["attempts"] == 1  # continuations are not attempts
    continued = [
        r
        for r in log_records(stack)
        if r["message"] == "Checkpointed before the timeout; continues in the next invocation"
    ]
    assert len(continued) >= 2
    assert "Task timed out" not in stack.log  # it yielded before Lambda would kill it


def test_a_job_whose_message_never_reached_the_queue_is_run_by_the_sweep(
    make_stack: Callable[..., Stack],
) -> None:
    """The API wrote the job, then stopped before its SendMessage. The job is
    pending with no message anywhere; once JOBS_LOST_AFTER_SECONDS passed (shortened
    here), the recovery sweep sends it, and it runs."""
    stack = make_stack(environment={"JOBS_LOST_AFTER_SECONDS": "2"})
    job = Job.new(n=1000, now=utc_now(), retention=timedelta(days=1))
    stack.client("dynamodb").put_item(TableName=stack.outputs["TableName"], Item=to_item(job))

    done = stack.wait_for_job(job.job_id, lambda j: j["status"] == "succeeded", timeout=60)

    assert done["result"] == 1000 and done["attempts"] == 1
    lost = [
        r
        for r in log_records(stack, "worker")
        if r["message"] == "Job's message was lost; sent again"
    ]
    assert [r["job_id"] for r in lost] == [job.job_id]  # sent once
