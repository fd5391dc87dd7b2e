"""How long one failure holds the FIFO lane, on the live local stack: an unreadable job
record, a bad deploy the code cannot see, and one failing record among ten on the delay
queue. The local event source stays faithful (a failed invocation leaves its message
hidden for the queue's visibility timeout), so each bound is shown against it, with the
timeouts scaled down where the settings allow.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from chalicelib.config import CLAIM_BACKOFF_CAP, TIMEOUT_MARGIN
from chalicelib.connections import WORKER_CLIENT_CONFIG
from chalicelib.jobs import Job, JobStatus, to_item, to_message, utc_now
from chalicelib.worker import UNREADABLE_DELIVERIES
from tests.e2e.conftest import Stack
from tests.e2e.fault_proxy import Mode, Request
from tests.e2e.test_outages import (
    CAP_SECONDS,
    POLL_SECONDS,
    SLACK_SECONDS,
    epoch,
    failed_deliveries,
    wait_until_all_succeeded,
)
from tests.waiting import wait_for

# The worker's scaled timeout, where the bound is the job queue's visibility timeout (its
# timeout, which the stack derives from it); the margin leaves most of it to the job.
SHORT_WORKER_TIMEOUT = 8
SHORT_MARGIN = {TIMEOUT_MARGIN: "1.5"}
# The forwarder's scaled timeout: the delay queue's visibility timeout follows it.
SHORT_FORWARDER_TIMEOUT = 5
# Attempts of each of the worker functions' AWS calls (botocore's retries included).
WORKER_ATTEMPTS = WORKER_CLIENT_CONFIG.retries["total_max_attempts"]

# A kind module of a bad deploy: it fails to import in the worker's instances (the API
# imports the app too, and must keep taking jobs for the test).
BROKEN_KIND = """
import os

from chalicelib.kinds import Kind
from chalicelib.kinds.heavy_load import Input

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "").endswith("-process_job"):
    raise ImportError("a kind module of a bad deploy")

KIND = Kind("broken", "Fails to import in the worker.", Input, lambda i, c: 0, int, lambda i, s: 1)
"""


def stored(stack: Stack, job_id: str) -> dict[str, str]:
    """The job's item as DynamoDB holds it (string attributes only), read directly: the
    API cannot read an unreadable record either."""
    item = stack.client("dynamodb").get_item(
        TableName=stack.outputs["TableName"], Key={"job_id": {"S": job_id}}
    )["Item"]
    return {name: value["S"] for name, value in item.items() if "S" in value}


def first_received(stack: Stack, job_id: str) -> float:
    """When the stack first received the job's message from SQS (the proxy relayed the
    answer naming it): the moment its visibility timeout started."""
    for seen in stack.proxies["sqs"].requests("ReceiveMessage", Mode.PASS):
        if job_id.encode() in seen.response and seen.answered_at is not None:
            return seen.answered_at
    raise AssertionError(f"no receive handed out the message of job {job_id}")


def test_an_unreadable_record_is_failed_and_does_not_hold_the_lane(
    make_stack: Callable[..., Stack],
) -> None:
    """A queued job whose stored ``state`` is not JSON (a partial write, or a newer
    release's layout), then a normal job: the normal job starts within the bound, and the
    unreadable one ends failed, saying why."""
    stack = make_stack(environment={CLAIM_BACKOFF_CAP: str(CAP_SECONDS)})
    bad = Job.new(n=1000, now=utc_now(), retention=timedelta(days=1))
    item = to_item(bad)
    item["state"] = {"S": "{not json"}
    stack.client("dynamodb").put_item(TableName=stack.outputs["TableName"], Item=item)
    sent = time.time()
    stack.send_raw(to_message(bad))
    good = stack.submit(1000)["job_id"]

    (done,) = wait_until_all_succeeded(stack, [good], timeout=40)
    failed = wait_for(
        lambda: (record := stored(stack, bad.job_id))["status"] == JobStatus.FAILED and record,
        10,
        lambda: f"the unreadable job to be failed\n{stack.log[-4000:]}",
    )

    stall = epoch(done["started_at"]) - sent
    deliveries = failed_deliveries(stack)
    print(f"unreadable record: the next job started {stall:.1f} s after it was queued, "
          f"after {deliveries} failed deliveries; error: {failed['error']}")  # fmt: skip
    assert failed["error"].startswith("The job's record cannot be read: JSONDecodeError")
    assert deliveries == UNREADABLE_DELIVERIES - 1  # the last delivery failed the job
    assert stack.depth("DeadLetterQueueUrl") == 0
    # Each failed delivery comes back within the cap, a poll later.
    assert stall <= UNREADABLE_DELIVERIES * (CAP_SECONDS + POLL_SECONDS) + SLACK_SECONDS, stall


def test_a_bad_deploy_holds_the_lane_for_the_visibility_timeout_only(
    make_stack: Callable[..., Stack],
) -> None:
    """What the code cannot see: the worker's app fails to import, so the invocation fails
    before any of the worker's code runs and its message stays hidden for the job queue's
    visibility timeout, the worker's timeout. Once the deploy is fixed (the worker
    restarted with good code), the queued jobs start when it ends, in order, and nothing
    was dead-lettered."""
    stack = make_stack(
        environment=SHORT_MARGIN,
        functions={"process_job": {"lambda_timeout": SHORT_WORKER_TIMEOUT}},
        extra_files={"chalicelib/kinds/broken.py": BROKEN_KIND},
        faults=True,  # the proxy in front of SQS says when the message was received
    )
    job_ids = [stack.submit(1000)["job_id"] for _ in range(2)]
    wait_for(lambda: failed_deliveries(stack), 30, lambda: f"the init error\n{stack.log[-4000:]}")
    assert "a kind module of a bad deploy" in stack.log

    stack.services.processes.pop("worker").stop()
    (stack.services.project_dir / "chalicelib" / "kinds" / "broken.py").unlink()
    stack.services.start_worker()
    jobs = wait_until_all_succeeded(stack, job_ids, timeout=3 * SHORT_WORKER_TIMEOUT)

    stall = epoch(jobs[0]["started_at"]) - first_received(stack, job_ids[0])
    print(f"bad deploy: the head job started {stall:.1f} s after its failed delivery was "
          f"received (visibility timeout {SHORT_WORKER_TIMEOUT} s)")  # fmt: skip
    # Hidden for the visibility timeout from its receive, as on AWS, and not much longer.
    assert SHORT_WORKER_TIMEOUT - 0.5 <= stall <= SHORT_WORKER_TIMEOUT + SLACK_SECONDS, stall
    assert epoch(jobs[0]["started_at"]) < epoch(jobs[1]["started_at"])
    assert failed_deliveries(stack) == 1
    assert stack.depth("DeadLetterQueueUrl") == 0


def test_one_failing_record_among_ten_on_the_delay_queue_is_forwarded_alone(
    make_stack: Callable[..., Stack],
) -> None:
    """Ten retries wait on the delay queue; the job queue refuses the forward of one of
    them (its SendMessage fails, every attempt). The other nine are forwarded once each;
    the failing one is forwarded once, after the delay queue's visibility timeout."""
    stack = make_stack(
        # One instance: ten cold starts at once can outlast Lambda's 10-second init on a
        # loaded machine, and failures that are not the one under test.
        functions={
            "forward_delayed": {
                "lambda_timeout": SHORT_FORWARDER_TIMEOUT,
                "reserved_concurrency": 1,
            }
        },
        worker=False,
        faults=True,
    )
    jobs = [Job.new(n=1000, now=utc_now(), retention=timedelta(days=1)) for _ in range(10)]
    picked = jobs[3].job_id
    sqs = stack.client("sqs")
    for job in jobs:
        stack.client("dynamodb").put_item(TableName=stack.outputs["TableName"], Item=to_item(job))
    sqs.send_message_batch(
        QueueUrl=stack.outputs["DelayQueueUrl"],
        Entries=[{"Id": str(n), "MessageBody": to_message(j)} for n, j in enumerate(jobs)],
    )

    def forward_of(request: Request, job_id: str | None = None) -> bool:
        body = request.json()
        return (
            request.operation == "SendMessage"
            and body.get("QueueUrl", "").endswith(stack.outputs["QueueName"])
            and (job_id is None or json.loads(body.get("MessageBody", "{}"))["job_id"] == job_id)
        )

    rule = stack.proxies["sqs"].fail_when(lambda r: forward_of(r, picked), times=WORKER_ATTEMPTS)
    stack.services.start_worker()
    done = wait_until_all_succeeded(stack, [j.job_id for j in jobs], timeout=40)

    forwards = [
        s for s in stack.proxies["sqs"].requests(outcome=Mode.PASS) if forward_of(s.request)
    ]
    sent = Counter(json.loads(s.request.json()["MessageBody"])["job_id"] for s in forwards)
    assert rule.matched == WORKER_ATTEMPTS  # one invocation's call, every attempt refused
    assert sent == Counter({j.job_id: 1 for j in jobs}), "a record was forwarded twice"
    forwarded = next(s for s in forwards if forward_of(s.request, picked))
    waited = forwarded.at - first_received(stack, picked)
    print(f"delay queue: the failing record was forwarded {waited:.1f} s after it was first "
          f"received (visibility timeout {SHORT_FORWARDER_TIMEOUT} s)")  # fmt: skip
    assert SHORT_FORWARDER_TIMEOUT - 0.5 <= waited <= SHORT_FORWARDER_TIMEOUT + SLACK_SECONDS
    others = [s.at for s in forwards if not forward_of(s.request, picked)]
    assert max(others) < forwarded.at  # the nine did not wait for it
    assert all(j["attempts"] == 1 for j in done)  # each job ran once
