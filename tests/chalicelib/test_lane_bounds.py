"""How long a failure the worker can see holds the job queue's one message group, against
moto: an unreadable job record (backs off twice, then is failed without being read), an
outage of DynamoDB at the claim (backs off within the cap, dead-letters nothing for 15
minutes), the delay and dead-letter consumers (one record per invocation), and the
out-of-time path (its calls fit the timeout margin, each only while time is left)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, kinds
from chalicelib.config import OUT_OF_TIME_CALLS, Settings, get_settings
from chalicelib.errors import NoTimeLeft, StoreUnavailable
from chalicelib.jobs import (
    Job,
    JobStatus,
    derived_attributes,
    epoch_ms,
    parse_message,
    to_message,
    utc_now,
)
from chalicelib.queue import (
    MAX_RECEIVE_COUNT,
    OUTAGE_TOLERANCE_SECONDS,
    SPARE_RECEIVES,
    JobQueue,
    claim_backoff,
    tolerated_outage_seconds,
)
from chalicelib.worker import LAPSED_RETRY_SECONDS, UNREADABLE_DELIVERIES, Delivery, Outcome
from tests.chalicelib.test_worker import (
    FakeClock,
    Receive,
    SpyQueue,
    delivery,
    make_worker,
    sqs_event_from,
    table_job,
)
from tests.fake_kinds import kind_running

# --- a job whose record cannot be read ------------------------------------------------


def corrupt_state(job: Job, aws: dict[str, str]) -> None:
    """Leave the job's stored state unreadable, as a partial write or a newer release
    could: the claim's UpdateItem still succeeds, parsing what it returns does not."""
    boto3.client("dynamodb").update_item(
        TableName=aws["TableName"],
        Key={"job_id": {"S": job.job_id}},
        UpdateExpression="SET #state = :state",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={":state": {"S": '{"position": 12'}},
    )


def raw_item(job: Job, aws: dict[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb").get_item(
        TableName=aws["TableName"], Key={"job_id": {"S": job.job_id}}, ConsistentRead=True
    )["Item"]
    return item


def assert_failed_as_fail_leaves_it(job: Job, item: dict[str, Any], reason: str) -> None:
    """The item says failed, why and when, and carries exactly the index keys a failed
    job derives (chalicelib.jobs.derived_attributes): no owner, lease or pending mark."""
    assert item["status"] == {"S": "failed"}
    assert item["error"]["S"].startswith(reason), item["error"]
    assert "finished_at" in item
    failed = job.with_(status=JobStatus.FAILED, pending_at=None)
    derived = derived_attributes(failed)
    assert {name: item.get(name) for name in derived} == derived
    for gone in ("owner", "lease_until", "pending_key", "pending_at", "resume"):
        assert gone not in item, gone


@pytest.fixture
def one_second_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBS_CLAIM_BACKOFF_CAP_SECONDS=1: each backoff is a second, so the test waits
    seconds, not the default's 2 + 4."""
    monkeypatch.setenv("JOBS_CLAIM_BACKOFF_CAP_SECONDS", "1")
    get_settings.cache_clear()


def test_an_unreadable_job_backs_off_then_is_failed_and_the_job_behind_it_runs(
    make_job: Callable[..., Job],
    aws: dict[str, str],
    one_second_backoff: None,
) -> None:
    """Its first deliveries shorten the message's visibility to the claim backoff and
    raise (SQS keeps it, in order); the UNREADABLE_DELIVERIES-th fails the job with the
    reason, without reading it, and returns: the next job of the group then runs."""
    unreadable, behind = make_job(n=10), make_job(n=7)
    corrupt_state(unreadable, aws)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)
    for job in (unreadable, behind):
        queue.send(to_message(job), job.job_id)
    sqs = boto3.client("sqs")

    def next_message() -> dict[str, Any]:
        """The group's next message, one at a time (as the worker's mapping receives)."""
        (message,) = sqs.receive_message(
            QueueUrl=aws["QueueUrl"],
            MaxNumberOfMessages=1,
            WaitTimeSeconds=5,
            MessageSystemAttributeNames=["All"],
        )["Messages"]
        return dict(message)

    outcomes: list[Outcome] = []
    for count in range(1, UNREADABLE_DELIVERIES + 1):
        message = next_message()  # the group's head, again: one second after the last
        assert parse_message(message["Body"]).job_id == unreadable.job_id
        record = sqs_event_from([message], aws["QueueArn"])["Records"][0]
        received = Delivery.from_record(record)
        assert received.receive_count == count
        if count < UNREADABLE_DELIVERIES:
            with pytest.raises(json.JSONDecodeError):
                worker.process_message(message["Body"], received)
        else:
            outcomes.append(worker.process_message(message["Body"], received))
            # Returned: Lambda deletes the message.
            sqs.delete_message(QueueUrl=aws["QueueUrl"], ReceiptHandle=message["ReceiptHandle"])

    assert outcomes == [Outcome.FAILED]
    assert [seconds for _, seconds in queue.holds] == [1] * (UNREADABLE_DELIVERIES - 1)
    assert_failed_as_fail_leaves_it(
        unreadable, raw_item(unreadable, aws), "The job's record cannot be read: JSONDecodeError: "
    )
    following = next_message()
    assert parse_message(following["Body"]).job_id == behind.job_id
    assert worker.process_message(following["Body"]) is Outcome.SUCCEEDED
    assert table_job(behind).result == 7


def test_a_message_without_its_kind_whose_job_is_unreadable_is_failed_too(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    """The kind lookup and the read of a job that was not free raise the same way; the
    failure is bounded by the receive count all the same. Without a delivery (no event
    source) there is no count: it only raises."""
    job = make_job(n=10)
    corrupt_state(job, aws)
    worker = make_worker()
    body = json.dumps({"job_id": job.job_id})

    with pytest.raises(json.JSONDecodeError):
        worker.process_message(body)
    with pytest.raises(json.JSONDecodeError):
        worker.process_message(body, delivery(receive_count=UNREADABLE_DELIVERIES - 1))
    assert raw_item(job, aws)["status"] == {"S": "queued"}
    assert worker.process_message(body, delivery(receive_count=UNREADABLE_DELIVERIES)) is (
        Outcome.FAILED
    )
    assert_failed_as_fail_leaves_it(job, raw_item(job, aws), "The job's record cannot be read")
    # Its message again (a duplicate delivery): the job is final, so it is acknowledged.
    assert worker.process_message(body, delivery(receive_count=9)) is Outcome.DUPLICATE


def test_failing_an_unreadable_job_that_aws_refuses_backs_off_and_raises(
    make_job: Callable[..., Job], aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(n=10)
    corrupt_state(job, aws)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))

    def unavailable(*args: Any) -> bool:
        raise StoreUnavailable("DynamoDB UpdateItem failed")

    monkeypatch.setattr(worker.table, "fail_unreadable", unavailable)
    with pytest.raises(json.JSONDecodeError):
        worker.process_message(to_message(job), delivery(receive_count=UNREADABLE_DELIVERIES))
    assert [seconds for _, seconds in queue.holds] == [8]


def test_a_dead_letter_of_an_unreadable_job_fails_it_without_reading_it(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    """process_dead_letter never raises for it again and again: it fails it blindly, and
    a second dead letter of the same job is acknowledged."""
    queued, running = make_job(n=10), make_job(n=11)
    connections.job_table().claim(running.job_id, running.kind, "crashed", utc_now(), 30_000)
    worker = make_worker()
    for job in (queued, running):
        corrupt_state(job, aws)
        assert worker.process_dead_letter(to_message(job), MAX_RECEIVE_COUNT) is Outcome.FAILED
        assert_failed_as_fail_leaves_it(
            job, raw_item(job, aws), "The job's record cannot be read: JSONDecodeError: "
        )
        assert worker.process_dead_letter(to_message(job), MAX_RECEIVE_COUNT) is (Outcome.DUPLICATE)


def test_an_item_without_a_kind_is_failed_and_leaves_the_kind_listing(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    job = make_job(n=10)
    boto3.client("dynamodb").update_item(
        TableName=aws["TableName"],
        Key={"job_id": {"S": job.job_id}},
        UpdateExpression="REMOVE #kind",
        ExpressionAttributeNames={"#kind": "kind"},
    )
    table = connections.job_table()

    assert table.fail_unreadable(job.job_id, "no kind", utc_now()) is True

    item = raw_item(job, aws)
    assert (item["status"], item["error"]) == ({"S": "failed"}, {"S": "no kind"})
    failed = derived_attributes(job.with_(status=JobStatus.FAILED, pending_at=None))
    assert item["status_key"] == failed["status_key"]
    assert "kind_status_key" not in item and "pending_key" not in item
    assert table.fail_unreadable(job.job_id, "again", utc_now()) is False  # final
    assert table.fail_unreadable("6f9619ff-8b86-4011-b42d-00c04fc964ff", "x", utc_now()) is False


def test_any_failure_of_the_hold_is_logged_and_the_run_goes_on(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(n=10)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)

    def broken(receipt_handle: str, seconds: int) -> None:
        raise RuntimeError("not an AWS error")

    monkeypatch.setattr(queue, "hold", broken)
    assert worker.process_message(to_message(job), delivery()) is Outcome.SUCCEEDED
    held = [r for r in caplog.records if r.getMessage() == "Could not hold the job's message"]
    assert held and held[0].exc_info is not None and "not an AWS error" in str(held[0].exc_info)


# --- an outage of SQS between the receive and the hold --------------------------------------


def hold_refused_while(down: list[bool], queue: SpyQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue's holds fail while ``down[0]`` (SQS unreachable); otherwise they are made."""
    real_hold = JobQueue.hold

    def hold(receipt_handle: str, seconds: int) -> None:
        queue.holds.append((receipt_handle, seconds))
        if down[0]:
            raise StoreUnavailable("SQS ChangeMessageVisibility failed: unreachable")
        real_hold(queue, receipt_handle, seconds)

    monkeypatch.setattr(queue, "hold", hold)


def test_a_failed_hold_is_tried_again_at_the_next_checkpoint_then_less_often(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hold right after the claim fails: the next checkpoint tries again (not a third
    of the lease later), then, while it keeps failing, a doubling interval apart up to
    that third; once one succeeds, the renewals are a third of the lease apart again."""
    settings = get_settings()
    job = make_job(n=10)
    held = received(job, receive)
    queue = SpyQueue(connections.worker().queue)
    down = [True]
    hold_refused_while(down, queue, monkeypatch)
    clock = [0.0]
    interval, third = settings.progress_interval_seconds, settings.stale_after_seconds / 3
    holds_at: list[float] = []

    def run(input: Any, ctx: Any) -> int:
        # A checkpoint every interval for two thirds of the lease; SQS returns half way.
        for tick in range(1, int(2 * third / interval) + 1):
            clock[0] = tick * interval
            down[0] = clock[0] < third
            before = len(queue.holds)
            ctx.report(tick / 100, tick)
            if len(queue.holds) > before:
                holds_at.append(clock[0])
        return 10

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    worker = make_worker(queue=queue, monotonic=lambda: clock[0])

    assert worker.process_message(to_message(job), held) is Outcome.SUCCEEDED

    # Failed at 0 (the claim's hold), then tried 1, 2, 4, 8 s after each failure (up to a
    # third of the lease, 10 s): at 1, 3 and 7 s in vain, at 15 s (SQS is back at 10 s)
    # with success; the next renewal would be a third of the lease later, at 25 s.
    assert (interval, third) == (1.0, 10.0)
    assert holds_at == [1.0, 3.0, 7.0, 15.0]
    assert len(queue.holds) == 1 + len(holds_at)
    assert [seconds for _, seconds in queue.holds] == [settings.message_hold_seconds] * 5


def test_a_run_that_ends_with_its_hold_lapsed_deletes_its_message_once_sqs_is_back(
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQS becomes unreachable between the receive and the hold, and stays so until after
    the run has ended: the event source's delete would fail too, and the message stay
    hidden for the queue's visibility timeout (the worker's timeout) from its receive. The
    run deletes it itself, trying again a short while apart until SQS answers; the event
    source's own delete afterwards is harmless; the job behind is received at once."""
    job, behind = make_job(n=10), make_job(n=7)
    held = received(job, receive)
    connections.worker().queue.send(to_message(behind), behind.job_id)
    queue = SpyQueue(connections.worker().queue)
    down = [True]
    hold_refused_while(down, queue, monkeypatch)
    real_delete = JobQueue.delete
    deletes: list[str] = []

    def delete(receipt_handle: str) -> None:
        deletes.append(receipt_handle)
        if len(deletes) < 3:
            raise StoreUnavailable("SQS DeleteMessage failed: unreachable")
        down[0] = False
        real_delete(queue, receipt_handle)

    monkeypatch.setattr(queue, "delete", delete)
    slept: list[float] = []
    worker = make_worker(queue=queue)
    worker.sleep = slept.append

    assert worker.process_message(to_message(job), held) is Outcome.SUCCEEDED

    assert deletes == [held.receipt_handle] * 3
    assert slept == [LAPSED_RETRY_SECONDS] * 2
    assert table_job(job).status is JobStatus.SUCCEEDED
    # The event source deletes the message of an invocation that returned: harmless.
    answer = boto3.client("sqs").delete_message_batch(
        QueueUrl=aws["QueueUrl"], Entries=[{"Id": "0", "ReceiptHandle": held.receipt_handle}]
    )
    assert [entry["Id"] for entry in answer.get("Successful", [])] == ["0"]
    (following,) = receive()
    assert parse_message(following["Body"]).job_id == behind.job_id


def test_a_run_whose_hold_succeeded_since_deletes_nothing(
    make_job: Callable[..., Job],
    receive: Receive,
    recorded_calls: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed hold followed by one that succeeded: the message comes back within the
    hold at worst, and the event source deletes it; the run makes no delete of its own."""
    job = make_job(n=10)
    held = received(job, receive)
    queue = SpyQueue(connections.worker().queue)
    down = [True]
    hold_refused_while(down, queue, monkeypatch)
    clock = [0.0]

    def run(input: Any, ctx: Any) -> int:
        down[0] = False
        clock[0] = get_settings().progress_interval_seconds
        recorded_calls()
        ctx.report(0.5, 5)  # saved, and the hold is tried again: it succeeds
        return 10

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    worker = make_worker(queue=queue, monotonic=lambda: clock[0])

    assert worker.process_message(to_message(job), held) is Outcome.SUCCEEDED
    assert len(queue.holds) == 2
    assert "DeleteMessage" not in recorded_calls()


def test_the_runs_own_delete_is_bounded_by_the_time_left_and_stops_when_refused(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS stays unreachable: the run tries while the time left covers a call at its
    worst (Worker.time_for_a_call), then returns, and the message comes back when the
    queue's visibility timeout ends. SQS refusing the handle itself ends the tries at
    once (a receipt handle it never issued: nothing to delete)."""
    settings = get_settings()
    share_ms = settings.timeout_margin_seconds * 1000 / OUT_OF_TIME_CALLS
    queue = SpyQueue(connections.worker().queue)
    hold_refused_while([True], queue, monkeypatch)
    deletes: list[str] = []

    def unreachable(receipt_handle: str) -> None:
        deletes.append(receipt_handle)
        raise StoreUnavailable("SQS DeleteMessage failed: unreachable")

    left_ms = [10.0**9]

    def run(input: Any, ctx: Any) -> int:
        left_ms[0] = share_ms + 5_000  # the run ends with 5 s to spare
        return 10

    def sleep(seconds: float) -> None:
        left_ms[0] -= seconds * 1000

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    worker = make_worker(queue=queue)
    worker.sleep = sleep
    with monkeypatch.context() as patched:
        patched.setattr(queue, "delete", unreachable)
        outcome = worker.process_message(
            to_message(make_job(n=10)), delivery("r-1"), remaining_ms=lambda: int(left_ms[0])
        )
    assert outcome is Outcome.SUCCEEDED
    # One try a second apart while the 5 s to spare last: six tries, the last with the
    # time that covers exactly one call left.
    assert deletes == ["r-1"] * 6
    assert left_ms[0] == share_ms

    # The real delete: SQS refuses a handle it never issued (ReceiptHandleIsInvalid).
    refused = make_worker(queue=queue)
    refused.sleep = sleep
    left_ms[0] = 10.0**9
    job = make_job(n=10)
    outcome = refused.process_message(to_message(job), delivery("never-issued"))
    assert outcome is Outcome.SUCCEEDED
    assert left_ms[0] == share_ms + 5_000  # no pause: no second try


def test_a_run_that_raises_with_its_hold_lapsed_holds_its_message_again_once_sqs_is_back(
    make_job: Callable[..., Job],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQS unreachable from before the hold: the job raises, and its retry's send fails
    too, so the invocation raises (SQS must deliver the message again). Before it does,
    the run holds its message once more as soon as SQS answers, so that it comes back
    after the message hold, not after the queue's visibility timeout from its receive."""
    settings = get_settings()
    job = make_job(n=10)
    held = received(job, receive)
    queue = SpyQueue(connections.worker().queue)
    down = [True]
    hold_refused_while(down, queue, monkeypatch)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        down[0] = len(slept) < 2  # SQS answers again after two pauses

    def broken(input: Any, ctx: Any) -> int:
        raise ValueError("counting went wrong")

    def unreachable(body: str, delay_seconds: int) -> str:
        raise StoreUnavailable("SQS SendMessage failed: unreachable")

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(broken))
    worker = make_worker(queue=queue)
    worker.sleep = sleep
    monkeypatch.setattr(worker.delay_queue, "send", unreachable)

    with pytest.raises(StoreUnavailable, match="SendMessage"):
        worker.process_message(to_message(job), held)

    # The claim's hold, then the tries after the run: two in vain, the third made.
    assert [seconds for _, seconds in queue.holds] == [settings.message_hold_seconds] * 4
    assert slept == [LAPSED_RETRY_SECONDS] * 2
    assert not down[0]
    assert table_job(job).status is JobStatus.QUEUED  # released for its retry


# --- an outage of DynamoDB at the claim ---------------------------------------------------


def test_the_dead_letter_count_is_derived_from_the_backoff_curve() -> None:
    """MAX_RECEIVE_COUNT - 1 receives' backoffs (the default cap) add up to the outage
    tolerance with SPARE_RECEIVES to spare, and not one receive fewer would."""
    cap = Settings.claim_backoff_cap_seconds
    assert cap == 60

    def backoffs(receives: int) -> int:
        return sum(claim_backoff(k, cap) for k in range(1, receives + 1))

    outlasting = MAX_RECEIVE_COUNT - 1 - SPARE_RECEIVES
    assert backoffs(outlasting) >= OUTAGE_TOLERANCE_SECONDS > backoffs(outlasting - 1)
    assert tolerated_outage_seconds(cap) == backoffs(outlasting) >= 900
    # A smaller cap shrinks the tolerated outage about proportionally.
    assert tolerated_outage_seconds(6) == 2 + 4 + 6 * (outlasting - 2)
    assert [claim_backoff(k, cap) for k in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_a_claim_failing_at_every_delivery_is_not_dead_lettered_within_15_minutes(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each delivery's backoff is what the worker asks SQS for. Receive k comes when the
    backoffs before it have passed; SQS dead-letters the message only after receive
    MAX_RECEIVE_COUNT. Even with SPARE_RECEIVES used up before the outage, a receive
    comes after 15 minutes of it, and within a minute of any moment (the cap)."""
    job = make_job(n=10)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB UpdateItem failed: outage")

    monkeypatch.setattr(worker.table, "claim", unavailable)
    for count in range(1, MAX_RECEIVE_COUNT + 1):
        with pytest.raises(StoreUnavailable):
            worker.process_message(to_message(job), delivery(receive_count=count))

    backoffs = [seconds for _, seconds in queue.holds]
    assert len(backoffs) == MAX_RECEIVE_COUNT
    last_receive_at = sum(backoffs[SPARE_RECEIVES:-1])  # the outage began after the spares
    assert last_receive_at >= OUTAGE_TOLERANCE_SECONDS == 15 * 60
    assert max(backoffs) <= 60
    assert table_job(job).status is JobStatus.QUEUED and table_job(job).attempts == 0


# --- the delay and dead-letter consumers: one record per invocation ------------------------


def batch_size(app_module: Any, handler: str) -> int:
    (source,) = [s for s in app_module.app.event_sources if s.name == handler]
    return int(source.batch_size)


def deliver_as_the_mapping_does(
    client: Client,
    handler: str,
    size: int,
    records: list[dict[str, Any]],
    queue_arn: str,
) -> list[int]:
    """Invoke ``handler`` with ``records`` in batches of the mapping's size; the batch of
    an invocation that raised comes back once (SQS, after the visibility timeout) and is
    invoked again. The indexes of the records whose invocation raised, in order."""
    raised: list[int] = []
    pending = [list(range(i, min(i + size, len(records)))) for i in range(0, len(records), size)]
    for attempt in (1, 2):
        again = []
        for batch in pending:
            try:
                client.lambda_.invoke(
                    handler, sqs_event_from([records[i] for i in batch], queue_arn)
                )
            except StoreUnavailable:
                raised += batch if attempt == 1 else []
                again.append(batch)
        pending = again
    return raised


@pytest.fixture
def ten_jobs(make_job: Callable[..., Job]) -> list[Job]:
    return [make_job(n=10 + i) for i in range(10)]


def messages_of(jobs: list[Job]) -> list[dict[str, Any]]:
    from tests.conftest import sqs_message

    return [sqs_message(to_message(job)) for job in jobs]


def test_forward_delayed_settles_each_record_on_its_own(
    client: Client,
    app_module: Any,
    ten_jobs: list[Job],
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One forward of ten fails: only it raises; the nine others are sent exactly once
    (a batch retried after the delay queue's visibility timeout, past FIFO's 5-minute
    deduplication window, would send them again)."""
    queue = connections.worker().queue
    sent: list[str] = []

    def send(body: str, deduplication_id: str) -> str:
        job_id = parse_message(body).job_id
        if job_id == ten_jobs[3].job_id:
            raise StoreUnavailable("SQS SendMessage failed: injected")
        sent.append(job_id)
        return "sent"

    monkeypatch.setattr(queue, "send", send)
    size = batch_size(app_module, "forward_delayed")

    raised = deliver_as_the_mapping_does(
        client, "forward_delayed", size, messages_of(ten_jobs), aws["DelayQueueArn"]
    )

    assert size == 1
    assert raised == [3]
    assert sorted(sent) == sorted(job.job_id for i, job in enumerate(ten_jobs) if i != 3)


def test_process_dead_letters_settles_each_record_on_its_own(
    client: Client,
    app_module: Any,
    ten_jobs: list[Job],
    aws: dict[str, str],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten dead letters of jobs that never started, one of which cannot be read (AWS
    fails): only it raises; the nine others are re-driven exactly once (a batch retried
    would count a second re-drive of each, and send each again)."""
    table = connections.worker().table
    real_get = table.get

    def get(job_id: str) -> Job | None:
        if job_id == ten_jobs[6].job_id:
            raise StoreUnavailable("DynamoDB GetItem failed: injected")
        return real_get(job_id)

    monkeypatch.setattr(table, "get", get)
    size = batch_size(app_module, "process_dead_letters")

    raised = deliver_as_the_mapping_does(
        client, "process_dead_letters", size, messages_of(ten_jobs), aws["DeadLetterQueueArn"]
    )

    assert size == 1
    assert raised == [6]
    sent = [parse_message(m["Body"]).job_id for m in receive() + receive()]
    others = [job for i, job in enumerate(ten_jobs) if i != 6]
    assert sorted(sent) == sorted(job.job_id for job in others)
    assert [table_job(job).redrives for job in others] == [1] * 9


def test_a_redrive_whose_send_fails_is_counted_once_and_the_sweep_sends_it(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS failing the send of a re-driven dead letter is only logged: raising would
    bring the dead letter back to count re-drives that never happened, and fail the job
    after MAX_DEAD_LETTER_REDRIVES. The job is marked due; the sweep sends it."""
    job = make_job(n=10)
    worker = make_worker()

    def unavailable(body: str, deduplication_id: str) -> str:
        raise StoreUnavailable("SQS SendMessage failed: outage")

    with monkeypatch.context() as patched:
        patched.setattr(worker.queue, "send", unavailable)
        assert worker.process_dead_letter(to_message(job), MAX_RECEIVE_COUNT) is (Outcome.REDRIVEN)
    assert table_job(job).redrives == 1 and table_job(job).status is JobStatus.QUEUED
    assert receive() == []

    later = get_settings().lost_after_seconds + 1
    sweeper = make_worker(now=lambda: utc_now() + timedelta(seconds=later))
    assert sweeper.recover_stalled() == [job.job_id]
    assert [parse_message(m["Body"]).job_id for m in receive()] == [job.job_id]


# --- the out-of-time path -------------------------------------------------------------------


@pytest.fixture
def recorded_calls() -> Iterator[Callable[[], list[str]]]:
    """The AWS calls the worker's clients make from the moment recording() is first
    called (before-call hook: the call names, in order)."""
    calls: list[str] = []
    started = [False]

    def record(model: Any, **_: Any) -> None:
        if started[0]:
            calls.append(model.name)

    worker = connections.worker()
    clients = {id(c): c for c in (worker.table._client, worker.queue._client)}
    for client in clients.values():
        client.meta.events.register("before-call", record)

    def recording() -> list[str]:
        started[0] = True
        return calls

    yield recording
    for client in clients.values():
        client.meta.events.unregister("before-call", record)


def received(job: Job, receive: Receive) -> Delivery:
    """The delivery of the job's message, received from the job queue: its holds succeed."""
    connections.worker().queue.send(to_message(job), job.job_id)
    (message,) = receive()
    return Delivery.from_record(sqs_event_from([message], "arn:aws:sqs:::q")["Records"][0])


@pytest.mark.parametrize("refused", [False, True], ids=["released", "release-refused"])
def test_the_out_of_time_path_makes_the_counted_calls(
    make_job: Callable[..., Job],
    recorded_calls: Callable[[], list[str]],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
    refused: bool,
) -> None:
    """The worst case of the path the timeout margin is sized for: checkpoint, hold (due),
    release and then the continuation's send, or the read that says why the release was
    refused (the job was cancelled meanwhile)."""
    job = make_job(n=10)
    held = received(job, receive)
    margin_ms = int(get_settings().timeout_margin_seconds * 1000)

    def run(input: Any, ctx: Any) -> int:
        recorded_calls()
        ctx.report(0.5, 5)
        return 10

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    worker = make_worker(monotonic=FakeClock(step=1000.0))  # the hold is due
    if refused:
        real_release = worker.table.release

        def cancelled_first(*args: Any, **kwargs: Any) -> Job | None:
            connections.job_table().cancel(table_job(job), utc_now())  # the API's client
            return real_release(*args, **kwargs)

        monkeypatch.setattr(worker.table, "release", cancelled_first)

    outcome = worker.process_message(to_message(job), held, remaining_ms=lambda: margin_ms - 1)

    calls = recorded_calls()
    last = "GetItem" if refused else "SendMessage"
    assert calls == ["UpdateItem", "ChangeMessageVisibility", "UpdateItem", last]
    assert len(calls) == OUT_OF_TIME_CALLS
    assert outcome is (Outcome.CANCELLED if refused else Outcome.CONTINUED)


def test_each_call_of_the_out_of_time_path_is_made_only_while_time_is_left(
    make_job: Callable[..., Job],
    recorded_calls: Callable[[], list[str]],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each call takes its worst case here (a share of the margin): the checkpoint, the
    hold and the release fit, the send does not. The invocation raises NoTimeLeft before
    Lambda's timeout instead of being stopped inside the call; the job is released to
    continue from its checkpoint, and its message comes back after its hold."""
    job = make_job(n=10)
    share_ms = get_settings().timeout_margin_seconds * 1000 / OUT_OF_TIME_CALLS
    calls: list[str] = []
    started = [False]

    def run(input: Any, ctx: Any) -> int:
        nonlocal calls
        calls = recorded_calls()
        started[0] = True
        ctx.report(0.5, 5)
        return 10

    def remaining() -> int:
        left = OUT_OF_TIME_CALLS * share_ms - 1
        return int(left - share_ms * len(calls)) if started[0] else 10**6

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    worker = make_worker(monotonic=FakeClock(step=1000.0))

    with pytest.raises(NoTimeLeft, match="send the continuation"):
        worker.process_message(to_message(job), delivery(), remaining_ms=remaining)

    assert calls == ["UpdateItem", "ChangeMessageVisibility", "UpdateItem"]
    assert receive() == []
    released = table_job(job)
    assert (released.status, released.resume, released.state) == (JobStatus.QUEUED, True, 5)
    assert released.pending_at is not None and released.pending_at <= epoch_ms(utc_now())


def test_no_call_is_made_when_less_than_one_calls_worst_case_is_left(
    make_job: Callable[..., Job],
    recorded_calls: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = make_job(n=10)
    share_ms = get_settings().timeout_margin_seconds * 1000 / OUT_OF_TIME_CALLS

    def run(input: Any, ctx: Any) -> int:
        recorded_calls()
        ctx.report(0.5, 5)
        return 10

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(run))
    with pytest.raises(NoTimeLeft, match="release the job"):
        make_worker().process_message(
            to_message(job), delivery(), remaining_ms=lambda: int(share_ms) - 1
        )
    assert recorded_calls() == []
    still = table_job(job)
    assert (still.status, still.state) == (JobStatus.RUNNING, None)  # its lease expires
