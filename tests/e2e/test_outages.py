"""Outages of DynamoDB and of SQS on the live local stack, played by the fault-injecting
proxies in front of the emulator (tests/e2e/fault_proxy.py): afterwards nothing was
dead-lettered, every job succeeds, they start in submission order, and the first starts
within the claim backoff's cap plus a poll of the outage's end. One SQS outage starts at
the head job's hold and outlasts its run: the run deletes its own message once SQS is back.

Times are scaled down by the ratio of the claim backoff's cap here (1 s) to its default
(60 s): a 15-minute outage lasts 15 s, and "within 60 s of its end" becomes within 1 s
plus the event source's poll (1 s), plus slack for a loaded machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from chalicelib.config import CLAIM_BACKOFF_CAP, Settings
from chalicelib.jobs import JobStatus
from chalicelib.queue import OUTAGE_TOLERANCE_SECONDS
from tests.e2e.conftest import STAGE, WORKER_ARGS, Stack
from tests.e2e.fault_proxy import Mode, Request
from tests.e2e.test_faults import log_records, put_job
from tests.e2e.test_local_stack import SECONDS_OF_WORK
from tests.waiting import wait_for

# The claim backoff's cap for these stacks (JOBS_CLAIM_BACKOFF_CAP_SECONDS): every time
# here is the real one scaled by its ratio to the default cap.
CAP_SECONDS = 1
SCALE = CAP_SECONDS / Settings.claim_backoff_cap_seconds
OUTAGE_SECONDS = OUTAGE_TOLERANCE_SECONDS * SCALE
# The event source's long poll (--poll-seconds).
POLL_SECONDS = float(WORKER_ARGS[WORKER_ARGS.index("--poll-seconds") + 1])
# Room for a loaded two-core machine: cold starts, botocore's retries of the last calls
# that failed, the test's own polling.
SLACK_SECONDS = 8.0
# The job queue's maxReceiveCount before outages were bounded: a message delivered more
# often than this during one outage would have been dead-lettered then.
OLD_MAX_RECEIVE_COUNT = 5
WORKER_FUNCTION = f"heavy-jobs-{STAGE}-process_job"


def failed_deliveries(stack: Stack) -> int:
    """Invocations of the worker that raised, as the event source logged them."""
    return sum(
        1
        for line in stack.log.splitlines()
        if f"function={WORKER_FUNCTION} " in line and "outcome=failed" in line
    )


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_until_all_succeeded(
    stack: Stack, job_ids: list[str], timeout: float = 30
) -> list[dict[str, Any]]:
    def all_done() -> list[dict[str, Any]] | None:
        jobs = [stack.job(i) for i in job_ids]
        return jobs if all(j["status"] == JobStatus.SUCCEEDED for j in jobs) else None

    found: list[dict[str, Any]] = wait_for(
        all_done, timeout, lambda: f"{job_ids} to succeed; the log ends:\n{stack.log[-4000:]}"
    )
    return found


def assert_recovered_in_order(
    stack: Stack, jobs: list[dict[str, Any]], ended: float, outage: str
) -> float:
    """Nothing dead-lettered, each ran once, in submission order, the first soon after
    ``ended``; return the stall (the outage's end to the first start), in seconds."""
    assert stack.depth("DeadLetterQueueUrl") == 0
    assert "dead-lettered" not in stack.log  # the DLQ consumer never saw one either
    assert all(j["attempts"] == 1 for j in jobs)
    starts = [epoch(j["started_at"]) for j in jobs]
    assert starts == sorted(starts), "the jobs did not start in submission order"
    stall = starts[0] - ended
    print(f"{outage}: the first job started {stall:.1f} s after the outage ended")
    assert stall <= CAP_SECONDS + POLL_SECONDS + SLACK_SECONDS, stall
    return stall


def test_a_dynamodb_outage_longer_than_five_deliveries_dead_letters_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    """Jobs queued before and during the outage; the worker starts during it, so the head
    job's message is delivered, and its claim fails, again and again: more often than the
    old maxReceiveCount allowed, and every time it comes back within the cap."""
    stack = make_stack(environment={CLAIM_BACKOFF_CAP: str(CAP_SECONDS)}, worker=False, faults=True)
    dynamodb = stack.proxies["dynamodb"]
    before = [stack.submit(1000)["job_id"] for _ in range(2)]
    dynamodb.set_mode(Mode.ERRORS)
    began = time.monotonic()
    refused = requests.post(f"{stack.url}/heavy", json={"n": 1000}, timeout=30)
    assert refused.status_code == 503  # the API says so: the client retries later
    during = put_job(stack, "heavyLoad", 1000)  # written directly, as if just before
    stack.services.start_worker()

    wait_for(
        lambda: failed_deliveries(stack) > OLD_MAX_RECEIVE_COUNT,
        60,
        lambda: (
            f"the head job's claim to fail {OLD_MAX_RECEIVE_COUNT + 1} times\n{stack.log[-4000:]}"
        ),
    )
    wait_for(lambda: time.monotonic() - began >= OUTAGE_SECONDS, OUTAGE_SECONDS, "the outage")
    dynamodb.set_mode(Mode.PASS)
    ended = time.time()
    deliveries = failed_deliveries(stack)

    jobs = wait_until_all_succeeded(stack, [*before, during])
    print(f"DynamoDB outage: {time.monotonic() - began:.1f} s, {deliveries} failed deliveries")
    assert_recovered_in_order(stack, jobs, ended, "DynamoDB outage")
    backoffs = [
        r for r in log_records(stack) if r["message"] == "Claim failed; the message comes back soon"
    ]
    # The head's message: delivered again and again, each time hidden for the cap at most.
    assert {r["job_id"] for r in backoffs} == {before[0]}
    assert [r["receive_count"] for r in backoffs] == list(range(1, len(backoffs) + 1))
    assert len(backoffs) > OLD_MAX_RECEIVE_COUNT
    assert all(r["seconds"] <= CAP_SECONDS for r in backoffs)


def test_an_sqs_outage_dead_letters_nothing_and_keeps_the_order(
    make_stack: Callable[..., Stack],
) -> None:
    """The head job runs when SQS becomes unreachable: its message holds and, once it
    finished, its delete fail, and the event source's receives fail too, as Lambda's
    pollers' would. The jobs queued behind it start soon after the end."""
    stack = make_stack(environment={CLAIM_BACKOFF_CAP: str(CAP_SECONDS)}, faults=True)
    sqs = stack.proxies["sqs"]
    head = stack.submit(1000)["job_id"]
    stack.wait_for_job(head, lambda j: j["status"] == JobStatus.SUCCEEDED)
    # A head job that runs through the start of the outage: about two seconds of work.
    running = stack.submit(2 * SECONDS_OF_WORK)["job_id"]
    behind = [stack.submit(1000)["job_id"] for _ in range(2)]
    stack.wait_for_job(running, lambda j: j["status"] == JobStatus.RUNNING)
    sqs.set_mode(Mode.DOWN)
    began = time.monotonic()
    refused = requests.post(f"{stack.url}/heavy", json={"n": 1000}, timeout=30)
    assert refused.status_code == 503  # its send failed: nothing is queued during it

    wait_for(
        lambda: "receive failed" in stack.log and stack.job(running)["status"] != "running",
        OUTAGE_SECONDS + SLACK_SECONDS,
        lambda: f"the running job to end in the outage\n{stack.log[-4000:]}",
    )
    wait_for(lambda: time.monotonic() - began >= OUTAGE_SECONDS, OUTAGE_SECONDS, "the outage")
    sqs.set_mode(Mode.PASS)
    ended = time.time()

    jobs = wait_until_all_succeeded(stack, [running, *behind])
    print(f"SQS outage: {time.monotonic() - began:.1f} s")
    assert_recovered_in_order(stack, jobs[1:], ended, "SQS outage")
    assert stack.job(running)["attempts"] == 1


# The worker's timeout for the outage that starts before the hold: the job queue's
# visibility timeout follows it, and it must outlast the outage by more than the bound,
# so that a message left hidden for it misses the bound.
HOLD_OUTAGE_WORKER_TIMEOUT = 40


def test_an_sqs_outage_from_the_hold_on_does_not_hold_the_lane_after_it(
    make_stack: Callable[..., Stack],
) -> None:
    """SQS becomes unreachable after the worker received the head job's message and
    before its hold (the proxy fails that ChangeMessageVisibility and every SQS request
    after it), and stays so until after the run has ended: the run's holds fail, and so
    does the event source's delete of its message, which would stay hidden for the job
    queue's visibility timeout from its receive. The run deletes its message itself once
    SQS is back, so the jobs behind it start within the bound of the outage's end."""
    from tests.e2e.test_bounds import SHORT_MARGIN  # imports this module: not at the top

    stack = make_stack(
        environment={CLAIM_BACKOFF_CAP: str(CAP_SECONDS), **SHORT_MARGIN},
        functions={"process_job": {"lambda_timeout": HOLD_OUTAGE_WORKER_TIMEOUT}},
        worker=False,  # every job is queued before the outage: a submission needs SQS
        faults=True,
    )
    sqs = stack.proxies["sqs"]
    head = stack.submit(2 * SECONDS_OF_WORK)["job_id"]  # about two seconds of work
    behind = [stack.submit(1000)["job_id"] for _ in range(2)]
    began: list[float] = []

    def from_the_first_hold_on(request: Request) -> bool:
        if not began and request.operation == "ChangeMessageVisibility":
            began.append(time.monotonic())
        return bool(began)

    sqs.fail_when(from_the_first_hold_on, Mode.DOWN)
    stack.services.start_worker()
    stack.wait_for_job(head, lambda j: j["status"] == JobStatus.SUCCEEDED, timeout=60)
    assert began, "the head job's run ended without a hold"
    assert "Could not hold the job's message" in stack.log
    wait_for(lambda: time.monotonic() - began[0] >= OUTAGE_SECONDS, OUTAGE_SECONDS, "the outage")
    sqs.clear_rules()
    ended = time.time()

    jobs = wait_until_all_succeeded(stack, behind, timeout=HOLD_OUTAGE_WORKER_TIMEOUT + 20)
    print(f"SQS outage from the hold on: {time.monotonic() - began[0]:.1f} s")
    assert_recovered_in_order(stack, jobs, ended, "SQS outage from the hold on")
    assert stack.job(head)["attempts"] == 1
    deleted = [
        r
        for r in log_records(stack)
        if r["message"] == "Deleted the job's message, whose hold had lapsed"
    ]
    assert [r["job_id"] for r in deleted] == [head]
