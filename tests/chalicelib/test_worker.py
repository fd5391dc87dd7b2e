"""The worker: through the real SQS handlers (app.process_job, app.forward_delayed, ...)
and through Worker directly, against moto. Covers the lifecycle, duplicates, poison,
retries through the delay queue, checkpoints (and their progress marks) and
continuation, the message hold and lease take-over, a failed claim's backoff,
cancellation, dead letters, the watermark, the recovery sweep, a run's metrics and what
a claim reads."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, kinds
from chalicelib.config import get_settings
from chalicelib.errors import StoreUnavailable
from chalicelib.events import PROGRESS_WINDOW_MS, EventType, event_for
from chalicelib.jobs import (
    LIST_BY_STATUS,
    PENDING,
    SHARDS,
    Job,
    JobStatus,
    Listing,
    derived_attributes,
    epoch_ms,
    parse_message,
    to_item,
    to_message,
    utc_now,
)
from chalicelib.kinds import Context, Kind, heavy_load
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable, UnreadableJob
from chalicelib.worker import (
    MAX_DEAD_LETTER_REDRIVES,
    MAX_INVOCATION_MS,
    WATERMARK_INTERVAL_SECONDS,
    Delivery,
    Outcome,
    Worker,
)
from tests.fake_kinds import kind_running
from tests.waiting import wait_for

Receive = Callable[..., list[dict[str, Any]]]


def run_worker(client: Client, event: dict[str, Any]) -> Any:
    return client.lambda_.invoke("process_job", event)


def status(client: Client, job_id: str) -> dict[str, Any]:
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    return dict(response.json_body)


def make_worker(
    table: JobTable | None = None,
    now: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] | None = None,
    queue: JobQueue | None = None,
) -> Worker:
    real = connections.worker()
    worker = Worker(table or real.table, queue or real.queue, real.delay_queue, get_settings(), now)
    if monotonic is not None:
        worker.monotonic = monotonic
    return worker


class FakeClock:
    """A monotonic clock that advances a fixed step each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class SpyQueue(JobQueue):
    """The real job queue adapter, recording every hold (ChangeMessageVisibility)."""

    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue._client, queue.queue_name)
        self.holds: list[tuple[str, int]] = []

    def hold(self, receipt_handle: str, seconds: int) -> None:
        self.holds.append((receipt_handle, seconds))
        super().hold(receipt_handle, seconds)


def delivery(receipt: str = "receipt-1", receive_count: int = 1, sent_at_ms: int = 0) -> Delivery:
    return Delivery(receipt, receive_count, sent_at_ms or epoch_ms(utc_now()))


class SpyTable(JobTable):
    """The real table adapter, recording every checkpoint, the progress marks given, and
    the job as each claim and checkpoint left it (what the table's stream would carry)."""

    def __init__(self, table: JobTable) -> None:
        super().__init__(table._client, table.table_name)
        self.checkpoints: list[tuple[Any, float]] = []
        self.marks: list[int] = []
        self.images: list[Job] = []

    def claim(self, *args: Any, **kwargs: Any) -> Job | None:
        claimed = super().claim(*args, **kwargs)
        self.images += [] if claimed is None else [claimed]
        return claimed

    def checkpoint(
        self,
        job_id: str,
        owner: str,
        state: str,
        progress: float,
        lease_until_ms: int,
        progress_mark: int | None = None,
    ) -> Job | None:
        self.checkpoints.append((json.loads(state), progress))
        self.marks += [] if progress_mark is None else [progress_mark]
        saved = super().checkpoint(job_id, owner, state, progress, lease_until_ms, progress_mark)
        self.images += [] if saved is None else [saved]
        return saved


class FakeTime:
    """One fake time for a worker's wall clock (``now``) and monotonic clock, moved only by
    the test, in whole milliseconds."""

    def __init__(self) -> None:
        self.start = utc_now()
        self.ms = 0

    def now(self) -> datetime:
        return self.start + timedelta(milliseconds=self.ms)

    def monotonic(self) -> float:
        return self.ms / 1000


# --- lifecycle through the deployed entry point --------------------------------------


def test_job_lifecycle_post_queue_worker_get(
    client: Client, receive: Receive, sqs_event: Any
) -> None:
    submitted = client.http.post(
        "/heavy", headers={"Content-Type": "application/json"}, body=b'{"n": 12345}'
    ).json_body
    messages = receive()
    assert len(messages) == 1

    run_worker(client, sqs_event(messages[0]))

    job = status(client, submitted["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"] == 12345
    assert job["progress"] == 1
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_result_is_an_int_even_for_the_largest_n(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(lambda i, ctx: i.n))  # skip 1e10
    job = make_job(n=10**10)
    run_worker(client, sqs_event(message_for(job)))
    body = status(client, job.job_id)
    assert body["result"] == 10**10 and type(body["result"]) is int


# --- at-least-once delivery -------------------------------------------------------------


def test_duplicate_delivery_of_finished_job_changes_nothing(
    make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    job = make_job(n=10)
    run_worker(client, sqs_event(message_for(job)))
    first = status(client, job.job_id)

    run_worker(client, sqs_event(message_for(job)))  # acknowledged: no exception

    assert status(client, job.job_id) == first


def test_duplicate_delivery_of_running_job_does_not_run_it_again(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(n=10)
    table = connections.job_table()
    table.claim(job.job_id, job.kind, "other-worker", utc_now(), 30_000)  # fresh heartbeat
    calls: list[int] = []
    monkeypatch.setitem(
        kinds.KINDS, "heavyLoad", kind_running(lambda i, ctx: calls.append(i.n) or i.n)
    )

    assert make_worker().process_message(message_for(job)) is Outcome.DUPLICATE

    assert calls == []
    current = table.get(job.job_id)
    assert current is not None
    assert (current.status, current.attempts, current.owner) == (
        JobStatus.RUNNING,
        1,
        "other-worker",
    )


def test_two_workers_claiming_one_job_only_one_wins(make_job: Callable[..., Job]) -> None:
    job = make_job(n=10)
    table = connections.job_table()
    first = table.claim(job.job_id, job.kind, "a", utc_now(), 30_000)
    second = table.claim(job.job_id, job.kind, "b", utc_now(), 30_000)
    assert first is not None and second is None


def test_a_run_that_lost_its_lease_writes_nothing(make_job: Callable[..., Job]) -> None:
    """Worker A stalls past its lease; B takes over. A's late writes are refused."""
    job = make_job(n=10)
    table = connections.job_table()
    table.claim(job.job_id, job.kind, "a", utc_now(), 30_000)
    later = utc_now() + timedelta(seconds=31)
    taken = table.claim(job.job_id, job.kind, "b", later, 30_000)
    assert taken is not None and taken.attempts == 2

    assert table.checkpoint(job.job_id, "a", "5", 0.5, 0) is None
    assert table.succeed(job, "a", 999, utc_now()) is None
    assert table.succeed(job, "b", 10, utc_now()) is not None
    final = table.get(job.job_id)
    assert final is not None and final.result == 10


POISON_BODIES = {
    "not-json": "this is not json",
    "empty": "",
    "json-array": "[1, 2]",
    "json-string": '"job"',
    "no-job-id": '{"n": 5}',
    "job-id-not-string": '{"job_id": 5}',
    "job-id-not-uuid": '{"job_id": "abc"}',
    "unknown-job": '{"job_id": "6f9619ff-8b86-4011-b42d-00c04fc964ff"}',
    "unknown-job-with-kind": '{"job_id": "6f9619ff-8b86-4011-b42d-00c04fc964ff", "kind": "x"}',
}


@pytest.mark.parametrize("body", POISON_BODIES.values(), ids=POISON_BODIES.keys())
def test_poison_message_is_acknowledged_without_failing_its_batch(
    body: str, make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    good = make_job(n=10)

    run_worker(client, sqs_event(body, message_for(good)))  # no exception: batch acked

    assert status(client, good.job_id)["status"] == "succeeded"
    assert make_worker().process_message(body) is Outcome.POISON


def test_aws_failure_raises_so_sqs_redelivers(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    aws: dict[str, str],
) -> None:
    job = make_job(n=10)
    boto3.client("dynamodb").delete_table(TableName=aws["TableName"])
    with pytest.raises(Exception, match="DynamoDB"):
        run_worker(client, sqs_event(message_for(job)))


# --- failures and retries -----------------------------------------------------------


def _broken(input: Any, ctx: Context) -> int:
    raise ValueError("counting went wrong")


broken = kind_running(_broken)


def test_job_that_raises_is_retried_with_backoff_then_failed(
    make_job: Callable[..., Job],
    message_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", broken)
    settings = get_settings()
    job = make_job(n=10)
    worker = make_worker()
    sent: list[tuple[str, int]] = []
    real_send = worker.delay_queue.send
    monkeypatch.setattr(
        worker.delay_queue,
        "send",
        lambda body, delay_seconds: sent.append((body, delay_seconds)) or real_send(body, 0),
    )

    outcomes = [worker.process_message(message_for(job))]
    while outcomes[-1] is Outcome.RETRYING:
        waiting = table_job(job)
        assert waiting.status is JobStatus.QUEUED
        assert waiting.error is None  # not failed yet: only last_error is kept
        # Its message is due on the job queue when the delay queue lets it go.
        assert waiting.pending_at is not None and waiting.pending_at >= epoch_ms(utc_now()) + (
            1000 * sent[-1][1] - 5000
        )
        outcomes.append(worker.process_message(sent[-1][0]))

    assert outcomes == [Outcome.RETRYING] * (settings.max_attempts - 1) + [Outcome.FAILED]
    assert [delay for _, delay in sent] == [
        settings.retry_delay_seconds(k) for k in range(1, settings.max_attempts)
    ]
    assert sent[1][1] > sent[0][1] > 0  # the backoff grows
    final = table_job(job)
    assert final.status is JobStatus.FAILED
    assert final.error == "ValueError: counting went wrong"
    assert final.attempts == settings.max_attempts and final.finished_at is not None
    assert final.pending_at is None


def test_a_retry_waits_in_the_delay_queue_then_joins_the_tail_of_the_job_queue(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FIFO queues have no per-message delay: the retry's message waits out its backoff
    in the standard delay queue, and forward_delayed puts it on the job queue, behind the
    jobs that were already waiting."""
    monkeypatch.setenv("JOBS_RETRY_BASE_SECONDS", "1")
    connections.reset()
    monkeypatch.setitem(kinds.KINDS, "explode", broken)
    failing = make_job(n=10, kind="explode")
    waiting = make_job(n=10)
    connections.worker().queue.send(to_message(waiting), waiting.job_id)

    assert make_worker().process_message(message_for(failing)) is Outcome.RETRYING

    delayed = wait_for(lambda: receive(aws["DelayQueueUrl"], wait=5), 10, "the delayed retry")
    assert [parse_message(m["Body"]).job_id for m in delayed] == [failing.job_id]
    # Forwarded twice (a redelivered batch): the job queue gets it once, at the tail.
    event = sqs_event_from(delayed, aws["DelayQueueArn"])
    client.lambda_.invoke("forward_delayed", event)
    client.lambda_.invoke("forward_delayed", event)
    on_queue = [parse_message(m["Body"]).job_id for m in receive()]
    assert on_queue == [waiting.job_id, failing.job_id]


def sqs_event_from(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    from infra.event_source import sqs_event

    return sqs_event(messages, queue_arn, "us-east-1")


def test_handler_failure_is_recorded_through_the_entry_point(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_MAX_ATTEMPTS", "1")
    connections.reset()
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", broken)
    job = make_job(n=10)

    run_worker(client, sqs_event(message_for(job)))

    body = status(client, job.job_id)
    assert body["status"] == "failed"
    assert body["error"] == "ValueError: counting went wrong"
    assert body["result"] is None and body["finished_at"] is not None


def test_unknown_kind_fails_the_job(
    make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    job = make_job(n=10, kind="noSuchKind")
    run_worker(client, sqs_event(message_for(job)))
    body = status(client, job.job_id)
    assert body["status"] == "failed" and "noSuchKind" in body["error"]


def table_job(job: Job) -> Job:
    current = connections.job_table().get(job.job_id)
    assert current is not None
    return current


# --- progress and checkpoints ---------------------------------------------------------


def test_progress_is_monotonic_rate_limited_and_reaches_one(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heavy_load, "CHUNK", 1000)
    n = 100_000  # 100 chunks
    job = make_job(n=n)
    table = SpyTable(connections.job_table())
    clock = FakeClock(step=0.25)  # each chunk "takes" 0.25 s

    outcome = make_worker(table, monotonic=clock).process_message(message_for(job))

    assert outcome is Outcome.SUCCEEDED
    progress = [p for _, p in table.checkpoints]
    assert progress == sorted(progress)
    assert all(0 < p <= 1 for p in progress)
    # 100 chunks x 0.25 s = 25 s of fake time: about one write a second, never more.
    assert 20 <= len(progress) <= 26
    assert [pos for pos, _ in table.checkpoints] == sorted(pos for pos, _ in table.checkpoints)
    assert table_job(job).progress == 1


def reporting_until(
    time: FakeTime, until_ms: int, step_ms: int = 300, moving: bool = True
) -> tuple[list[Job], Kind[Any, Any]]:
    """A kind that reports every ``step_ms`` of ``time`` until ``until_ms``, its progress
    moving with each report (or staying what its job had at the run's start), resuming
    from its state; the list takes its job, once made."""

    def run(input: Any, ctx: Context) -> int:
        done, resumed_at = ctx.state or 0, table_job(job_of[0]).progress
        while time.ms < until_ms:
            time.ms += step_ms
            done += 1
            ctx.report(done / 1000 if moving else resumed_at, done)
        return int(input.n)

    job_of: list[Job] = []
    return job_of, kind_running(run)


def progress_events(images: list[Job]) -> list[int]:
    """The marks of the checkpoints the table's stream would publish as job.progress."""
    events = [
        event_for(to_item(old), to_item(new), f"e-{i}")
        for i, (old, new) in enumerate(itertools.pairwise(images))
    ]
    published = [e.job.progress_mark for e in events if e and e.event_type is EventType.PROGRESS]
    return [mark for mark in published if mark is not None]


def test_a_run_moving_its_progress_marks_it_about_every_window_never_more_often(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports every 0.3 s for 35 s (saved about every second): the checkpoints that set
    a progress mark, the only ones published as job.progress, are PROGRESS_WINDOW_MS or
    more of the worker's clock apart, and hardly more: the first save, then one about
    every 10 s."""
    time = FakeTime()
    job_of, kind = reporting_until(time, until_ms=35_000)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind)
    job_of.append(make_job(n=10))
    table = SpyTable(connections.job_table())
    worker = make_worker(table, now=time.now, monotonic=time.monotonic)

    assert worker.process_message(message_for(job_of[0])) is Outcome.SUCCEEDED

    assert len(table.checkpoints) >= 25
    marks = [mark - epoch_ms(time.start) for mark in table.marks]
    assert 3 <= len(marks) <= 4 and marks[0] <= 2_000
    gaps = [later - earlier for earlier, later in itertools.pairwise(marks)]
    assert all(PROGRESS_WINDOW_MS <= gap <= PROGRESS_WINDOW_MS + 2_000 for gap in gaps)
    assert progress_events(table.images) == table.marks
    assert table_job(job_of[0]).progress_mark == table.marks[-1]


def test_a_run_that_does_not_move_its_progress_marks_nothing(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints for 35 s that renew the lease and save the state, the progress still
    what the run resumed from: no mark, so no job.progress."""
    time = FakeTime()
    job_of, kind = reporting_until(time, until_ms=35_000, moving=False)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind)
    job_of.append(make_job(n=10, progress=0.4))
    table = SpyTable(connections.job_table())
    worker = make_worker(table, now=time.now, monotonic=time.monotonic)

    assert worker.process_message(message_for(job_of[0])) is Outcome.SUCCEEDED

    assert len(table.checkpoints) >= 25 and {p for _, p in table.checkpoints} == {0.4}
    assert table.marks == [] and progress_events(table.images) == []
    assert table_job(job_of[0]).progress_mark is None


def test_a_continuation_keeps_the_spacing_of_the_run_before(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run marks its progress, then yields before its invocation's timeout at 13 s; its
    continuation, in the next invocation at once, reads the mark from the job it claims
    and marks again only PROGRESS_WINDOW_MS after it, not at its own first save."""
    time = FakeTime()
    job_of, kind = reporting_until(time, until_ms=35_000)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind)
    job_of.append(make_job(n=10))
    table = SpyTable(connections.job_table())
    worker = make_worker(table, now=time.now, monotonic=time.monotonic)
    margin_ms = get_settings().timeout_margin_seconds * 1000

    def first_invocation() -> int:
        """Plenty of time left until 13 s of the run, then less than the margin."""
        return MAX_INVOCATION_MS if time.ms < 13_000 else margin_ms - 1

    first = worker.process_message(message_for(job_of[0]), remaining_ms=first_invocation)
    assert first is Outcome.CONTINUED
    marks_of_the_first = len(table.marks)
    assert marks_of_the_first == 2 and table_job(job_of[0]).progress_mark == table.marks[-1]

    second = worker.process_message(to_message(job_of[0], resume=True))
    assert second is Outcome.SUCCEEDED

    assert len(table.marks) > marks_of_the_first  # the continuation's progress is marked too
    gaps = [later - earlier for earlier, later in itertools.pairwise(table.marks)]
    assert all(gap >= PROGRESS_WINDOW_MS for gap in gaps)
    assert progress_events(table.images) == table.marks


def test_progress_is_visible_while_the_job_runs(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    def watching(input: Any, ctx: Context) -> int:
        n = input.n
        for done in range(0, n + 1, n // 4):
            ctx.report(done / n, done)
            seen.append(status(client, job.job_id))
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(watching))
    job = make_job(n=400)
    make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))

    assert [s["status"] for s in seen] == ["running"] * 5
    assert [s["progress"] for s in seen] == [0, 0.25, 0.5, 0.75, 1.0]
    assert seen[0]["started_at"] is not None


def test_job_near_its_timeout_checkpoints_and_continues_in_a_new_invocation(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heavy_load, "CHUNK", 1000)
    n = 10_500
    job = make_job(n=n)
    worker = make_worker(monotonic=FakeClock(step=0.0))
    margin_ms = get_settings().timeout_margin_seconds * 1000

    def invocation(chunks: int) -> Callable[[], int]:
        """A Lambda context with exactly the margin left at report ``chunks`` (the run goes
        on: it yields when *less* than the margin remains), and less at the next one."""
        calls = iter(range(chunks - 1, -1, -1))
        return lambda: int(margin_ms + next(calls, -1))

    body = message_for(job)
    starts: list[int] = []
    outcomes: list[Outcome] = []
    monkeypatch.setitem(
        kinds.KINDS,
        "heavyLoad",
        kind_running(lambda i, ctx: starts.append(ctx.state or 0) or heavy_load.heavy_load(i, ctx)),
    )
    for _ in range(10):
        outcome = worker.process_message(body, remaining_ms=invocation(chunks=4))
        outcomes.append(outcome)
        if outcome is not Outcome.CONTINUED:
            break
        (message,) = receive()
        body = message["Body"]
        assert parse_message(body).resume is True
        boto3.client("sqs").delete_message(
            QueueUrl=connections.job_queue().url, ReceiptHandle=message["ReceiptHandle"]
        )

    assert outcomes == [Outcome.CONTINUED, Outcome.CONTINUED, Outcome.SUCCEEDED]
    assert starts == [0, 5000, 10000]  # each invocation resumes from the last checkpoint
    final = table_job(job)
    assert final.result == n and final.attempts == 1  # continuations are not attempts


def test_a_dead_runs_message_comes_back_and_takes_the_job_over_from_its_checkpoint(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claimed the job, checkpointed at 20,000, then died (no more heartbeats).
    Its message, held only for the message hold, is delivered again once the lease has
    expired: that delivery takes the job over and resumes from the checkpoint."""
    job = make_job(n=50_000)
    table = connections.job_table()
    table.claim(job.job_id, job.kind, "dead-worker", utc_now(), 30_000)
    table.checkpoint(job.job_id, "dead-worker", "20000", 0.4, epoch_ms(utc_now()) + 30_000)
    starts: list[int] = []
    monkeypatch.setitem(
        kinds.KINDS,
        "heavyLoad",
        kind_running(lambda i, ctx: starts.append(ctx.state or 0) or heavy_load.heavy_load(i, ctx)),
    )
    hold = timedelta(seconds=get_settings().message_hold_seconds)

    # Redelivered while the lease is fresh (it cannot be, but a duplicate could): no run.
    assert make_worker().process_message(message_for(job)) is Outcome.DUPLICATE
    later = utc_now() + hold
    outcome = make_worker(now=lambda: later).process_message(message_for(job))

    assert outcome is Outcome.SUCCEEDED
    assert starts == [20_000]
    final = table_job(job)
    assert (final.result, final.attempts, final.status) == (50_000, 2, JobStatus.SUCCEEDED)


def test_a_resume_message_takes_over_a_dead_continuation(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continuation's run dies too: its (resume) message comes back and takes it over."""
    job = make_job(n=30_000)
    table = connections.job_table()
    claimed = table.claim(job.job_id, job.kind, "first", utc_now(), 30_000)
    assert claimed is not None
    table.checkpoint(job.job_id, "first", "10000", 1 / 3, epoch_ms(utc_now()) + 30_000)
    table.release(claimed, "first", epoch_ms(utc_now()), resume=True)
    assert table.claim(job.job_id, job.kind, "second", utc_now(), 30_000, resume=True)
    later = utc_now() + timedelta(seconds=get_settings().message_hold_seconds)

    outcome = make_worker(now=lambda: later).process_message(to_message(job, resume=True))

    assert outcome is Outcome.SUCCEEDED
    final = table_job(job)
    assert (final.result, final.attempts) == (30_000, 2)  # the dead continuation: one more


def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> dict[str, list[float]]:
    """The values of each metric whose EMF line was printed since the last read."""
    found: dict[str, list[float]] = {}
    for line in capsys.readouterr().out.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive["Metrics"]:
                    value = record[metric["Name"]]  # EMF: one value, or a list of them
                    values = value if isinstance(value, list) else [value]
                    found.setdefault(metric["Name"], []).extend(values)
    return found


@pytest.mark.parametrize(
    ("start", "queue_wait"),
    [("first", [2_500.0]), ("retry", None), ("continuation", None)],
)
def test_a_run_emits_its_duration_and_a_first_starts_queue_wait_in_milliseconds(
    start: str,
    queue_wait: list[float] | None,
    make_job: Callable[..., Job],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JobRunMilliseconds: the run's duration on the monotonic clock. JobQueueWaitMilliseconds:
    created_at to started_at, for a job's first start only; a retry or a continuation
    waited for other reasons (a backoff, its turn behind other jobs)."""
    fixed = utc_now()
    clock = [5_000.0]  # a monotonic clock's reading is arbitrary, never 0 in practice

    def takes_one_and_a_half_seconds(input: Any, ctx: Context) -> int:
        clock[0] += 1.5
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(takes_one_and_a_half_seconds))
    earlier = {
        "first": {},
        "retry": {"attempts": 1, "last_error": "ValueError: x"},
        "continuation": {"attempts": 1, "resume": True, "state": 5},
    }[start]
    job = make_job(n=10, created_at=fixed - timedelta(seconds=2.5), **earlier)
    worker = make_worker(now=lambda: fixed, monotonic=lambda: clock[0])
    emitted_metrics(capsys)

    body = to_message(job, resume=start == "continuation")
    assert worker.process_message(body) is Outcome.SUCCEEDED

    metrics = emitted_metrics(capsys)
    assert metrics["JobRunMilliseconds"] == [1_500.0]
    assert metrics.get("JobQueueWaitMilliseconds") == queue_wait


def test_a_message_naming_its_kind_is_claimed_without_reading_the_job_first(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    """The message names the job's kind so that the claim can rewrite the kind's listing
    keys without a GetItem: a run of a job that is free costs two writes, the claim and the
    result, and no read."""
    job = make_job(n=10)
    worker = make_worker()
    calls: list[str] = []
    worker.table._client.meta.events.register(
        "after-call.dynamodb", lambda model, **_: calls.append(model.name)
    )

    assert worker.process_message(message_for(job)) is Outcome.SUCCEEDED

    assert calls == ["UpdateItem", "UpdateItem"]
    assert table_job(job).result == 10


def test_the_run_holds_its_message_and_renews_the_hold_with_checkpoints(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heavy_load, "CHUNK", 1000)
    job = make_job(n=100_000)  # 100 chunks
    queue = SpyQueue(connections.worker().queue)
    clock = FakeClock(step=0.25)  # each chunk "takes" 0.25 s: 25 s of fake time
    settings = get_settings()
    worker = make_worker(queue=queue, monotonic=clock)
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))  # accepted

    assert worker.process_message(message_for(job), delivery("r-1")) is Outcome.SUCCEEDED

    hold = settings.message_hold_seconds
    assert queue.holds[0] == ("r-1", hold)  # right after the claim
    # Renewed every third of the lease (30 s / 3 = 10 s) with a checkpoint: at about 10 s
    # and 20 s of the 25 s run, not at every checkpoint (about one a second).
    assert queue.holds == [("r-1", hold)] * 3


def test_a_report_saves_and_renews_the_hold_once_exactly_their_interval_has_passed(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report saves (state, progress, heartbeat) once progress_interval_seconds have
    passed since the last save, and renews the message hold with that save once a third
    of the lease has passed since the last hold: "passed" includes exactly that long."""
    settings = get_settings()
    start = 5_000.0  # a monotonic clock's reading is arbitrary
    clock = [start]
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue, monotonic=lambda: clock[0])
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))  # accepted
    seen: list[tuple[Any, int]] = []

    def timed(input: Any, ctx: Context) -> int:
        interval = settings.progress_interval_seconds
        for state, at in ((1, interval / 2), (2, interval), (3, settings.stale_after_seconds / 3)):
            clock[0] = start + at
            ctx.report(state / 10, state)
            seen.append((table_job(job).state, len(queue.holds)))
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(timed))
    job = make_job(n=10)

    assert worker.process_message(message_for(job), delivery("r-1")) is Outcome.SUCCEEDED

    # Held once right after the claim; not saved within the interval, saved at exactly
    # the interval, saved and held again at exactly a third of the lease.
    assert seen == [(None, 1), (2, 1), (3, 2)]
    assert queue.holds == [("r-1", settings.message_hold_seconds)] * 2


def test_a_hold_that_sqs_refuses_does_not_stop_the_run(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    job = make_job(n=10)
    # A receipt handle SQS never issued: ChangeMessageVisibility fails.
    assert make_worker().process_message(message_for(job), delivery("bogus")) is Outcome.SUCCEEDED
    assert table_job(job).result == 10


def test_a_failed_claim_returns_its_message_in_seconds(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DynamoDB failing at the claim is not the job's fault: the message must come back in
    2^receive count seconds, not after the queue's visibility timeout (15 minutes)."""
    job = make_job(n=10)
    connections.worker().queue.send(message_for(job), job.job_id)
    (message,) = receive()
    record = sqs_event_from([message], "arn:aws:sqs:us-east-1:123456789012:q")["Records"][0]
    worker = make_worker()
    real_claim = worker.table.claim

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB UpdateItem failed: throttled")

    monkeypatch.setattr(worker.table, "claim", unavailable)
    with pytest.raises(StoreUnavailable):
        worker.process_message(message["Body"], Delivery.from_record(record))

    again = wait_for(lambda: receive(wait=5), 10, "the message to come back")
    assert again[0]["MessageId"] == message["MessageId"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    monkeypatch.setattr(worker.table, "claim", real_claim)
    assert worker.process_message(again[0]["Body"]) is Outcome.SUCCEEDED


def test_claim_backoff_grows_with_the_receive_count_up_to_a_minute(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(n=10)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB UpdateItem failed")

    monkeypatch.setattr(worker.table, "claim", unavailable)
    for count_ in (1, 3, 6, 9):
        with pytest.raises(StoreUnavailable):
            worker.process_message(message_for(job), delivery(receive_count=count_))
    assert [seconds for _, seconds in queue.holds] == [2, 8, 60, 60]


def test_lost_messages_are_sent_again_once_and_waiting_jobs_never(
    make_job: Callable[..., Job], receive: Receive
) -> None:
    """The job queue is empty: a queued job whose message was due more than
    JOBS_LOST_AFTER_SECONDS ago lost it (e.g. the API stopped between PutItem and
    SendMessage) and is sent again, once; one due just now is left alone."""
    settings = get_settings()
    long_ago = epoch_ms(utc_now()) - (settings.lost_after_seconds + 60) * 1000
    lost = make_job(n=10, pending_at=long_ago)
    continued = make_job(n=10, pending_at=long_ago, resume=True, attempts=1)
    fresh = make_job(n=10)

    recovered = make_worker().recover_stalled()

    assert sorted(recovered) == sorted([lost.job_id, continued.job_id])
    assert make_worker().recover_stalled() == []  # re-driven once, not every minute
    bodies = {parse_message(m["Body"]).job_id: parse_message(m["Body"]) for m in receive()}
    assert set(bodies) == {lost.job_id, continued.job_id}
    assert bodies[continued.job_id].resume is True  # a continuation stays one
    assert table_job(fresh).pending_at == fresh.pending_at
    assert make_worker().process_message(to_message(lost)) is Outcome.SUCCEEDED
    assert table_job(lost).pending_at is None  # the claim ends the pending state


def test_behind_the_watermark_only_jobs_the_queue_passed_by_are_lost(
    make_job: Callable[..., Job], message_for: Any, receive: Receive
) -> None:
    """Messages wait on the job queue: only jobs due well before the newest message the
    worker received (the watermark) lost theirs; those due after it are still ahead."""
    settings = get_settings()
    now_ms = epoch_ms(utc_now())
    lost_after_ms = settings.lost_after_seconds * 1000
    watermark = now_ms - 8 * lost_after_ms
    waiting = make_job(n=10)  # sent after the watermark: its message is still ahead
    connections.worker().queue.send(to_message(waiting), waiting.job_id)
    passed = make_job(n=10, pending_at=watermark - lost_after_ms - 1)
    recent = make_job(n=10, pending_at=watermark - lost_after_ms + 1000)
    other = make_job(n=10)
    make_worker().process_message(message_for(other), delivery(sent_at_ms=watermark))

    recovered = make_worker().recover_stalled()

    assert recovered == [passed.job_id]
    assert table_job(recent).pending_at == recent.pending_at
    assert connections.job_table().watermark() == watermark


def test_the_watermark_is_written_at_most_every_interval_and_never_lowered(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    table = connections.job_table()
    clock = [5_000.0]  # a monotonic clock's reading is arbitrary, never 0 in practice
    worker = make_worker(monotonic=lambda: clock[0])
    job = make_job(n=0)

    worker.process_message(message_for(job), delivery(sent_at_ms=1_000))
    worker.process_message(message_for(job), delivery(sent_at_ms=2_000))
    assert table.watermark() == 1_000  # the second came within the interval
    clock[0] += WATERMARK_INTERVAL_SECONDS
    worker.process_message(message_for(job), delivery(sent_at_ms=1_500))
    assert table.watermark() == 2_000  # the largest seen, once the interval passed
    assert table.raise_watermark(1_999) is False  # another process cannot lower it
    assert table.watermark() == 2_000


def test_the_watermark_is_not_written_again_when_it_has_not_advanced(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the interval has passed, a message no newer than the recorded watermark
    writes nothing: each write is a DynamoDB write paid for."""
    table = connections.job_table()
    writes: list[int] = []
    real = table.raise_watermark
    monkeypatch.setattr(
        table, "raise_watermark", lambda ms, lane=0: writes.append(ms) or real(ms, lane)
    )
    clock = [5_000.0]
    worker = make_worker(table, monotonic=lambda: clock[0])
    job = make_job(n=0)

    worker.process_message(message_for(job), delivery(sent_at_ms=2_000))
    clock[0] += WATERMARK_INTERVAL_SECONDS
    worker.process_message(message_for(job), delivery(sent_at_ms=2_000))
    clock[0] += WATERMARK_INTERVAL_SECONDS
    worker.process_message(message_for(job), delivery(sent_at_ms=1_000))

    assert writes == [2_000]
    assert table.watermark() == 2_000


def test_a_run_that_died_without_its_message_is_queued_again_by_the_sweep(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its message should come back by itself within the hold; if it has not (lost, or
    the job was running when its old queue was replaced), the sweep re-drives the job
    once its lease expired more than the hold plus JOBS_LOST_AFTER_SECONDS ago."""
    settings = get_settings()
    job = make_job(n=50_000)
    table = connections.job_table()
    table.claim(job.job_id, job.kind, "dead-worker", utc_now(), 30_000)
    table.checkpoint(job.job_id, "dead-worker", "20000", 0.4, epoch_ms(utc_now()))
    fresh = make_job(n=10)
    table.claim(fresh.job_id, fresh.kind, "alive", utc_now(), 30_000)
    soon = utc_now() + timedelta(seconds=settings.message_hold_seconds)
    late = soon + timedelta(seconds=settings.lost_after_seconds + 1)

    assert make_worker(now=lambda: soon).recover_stalled() == []  # its message may come
    assert make_worker(now=lambda: late).recover_stalled() == [job.job_id]
    assert make_worker(now=lambda: late).recover_stalled() == []  # once

    (message,) = receive()
    starts: list[int] = []
    monkeypatch.setitem(
        kinds.KINDS,
        "heavyLoad",
        kind_running(lambda i, ctx: starts.append(ctx.state or 0) or heavy_load.heavy_load(i, ctx)),
    )
    assert make_worker(now=lambda: late).process_message(message["Body"]) is Outcome.SUCCEEDED
    assert starts == [20_000]
    final = table_job(job)
    assert (final.result, final.attempts, final.status) == (50_000, 2, JobStatus.SUCCEEDED)


def test_live_jobs_are_not_recovered(make_job: Callable[..., Job]) -> None:
    job = make_job(n=10)
    connections.job_table().claim(job.job_id, job.kind, "alive", utc_now(), 30_000)
    make_job(n=10)  # queued just now: its message is due
    assert make_worker().recover_stalled() == []


def test_waiting_retries_and_continuations_are_never_sent_twice(
    make_job: Callable[..., Job], message_for: Any, receive: Receive
) -> None:
    """A retry waiting out its backoff in the delay queue, and a continuation
    waiting its turn behind other jobs, are not re-sent, however long they wait."""
    table = connections.job_table()
    job = make_job(n=10)
    claimed = table.claim(job.job_id, job.kind, "w", utc_now(), 30_000)
    assert claimed is not None
    backoff_end = epoch_ms(utc_now()) + 900_000  # a retry due in 15 minutes
    table.release(claimed, "w", backoff_end, resume=False, last_error="boom")
    continuation = make_job(n=10)
    claimed = table.claim(continuation.job_id, continuation.kind, "w", utc_now(), 30_000)
    assert claimed is not None
    table.release(claimed, "w", epoch_ms(utc_now()), resume=True)
    queue = connections.worker().queue
    queue.send(to_message(continuation, resume=True), "continuation")
    # The worker is busy with a long job sent before both: the watermark stays behind.
    busy = make_job(n=10)
    make_worker().process_message(message_for(busy), delivery(sent_at_ms=1))
    hours_later = utc_now() + timedelta(hours=2)

    for _ in range(3):
        assert make_worker(now=lambda: hours_later).recover_stalled() == []
    assert len(receive()) == 1  # the continuation's own message only


def test_the_sweeps_cost_does_not_grow_with_the_backlog(make_job: Callable[..., Job]) -> None:
    """The sweep reads the jobs that need it, never the jobs that simply wait: the
    same calls, returning the same items, with 1 job or 151 waiting."""
    worker = make_worker()
    made: list[tuple[str, int]] = []

    def record(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        made.append((model.name, len(parsed.get("Items", parsed.get("Messages", [])))))

    for client in (worker.table._client, worker.queue._client):
        client.meta.events.register("after-call", record)
    connections.worker().queue.send(to_message(make_job(n=10)), "one")  # a non-empty queue
    make_worker().process_message(to_message(make_job(n=0)), delivery())  # a watermark
    worker.recover_stalled()  # warm: its first call looks the queue's URL up

    made.clear()
    worker.recover_stalled()
    few = list(made)
    for _ in range(150):
        connections.worker().queue.send(to_message(make_job(n=10)), uuid_hex())
    made.clear()
    worker.recover_stalled()

    assert made == few
    assert "Scan" not in {name for name, _ in made}
    queries = [items for name, items in made if name == "Query"]
    assert len(queries) == 2 * SHARDS  # the pending index and the running jobs, per shard
    assert sum(queries) == 0  # no waiting job was read


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    job = make_job(n=10)
    table = connections.job_table()
    for attempt in range(get_settings().max_attempts):
        table.claim(
            job.job_id, job.kind, f"dies-{attempt}", utc_now() + timedelta(minutes=attempt), 1000
        )
    later = utc_now() + timedelta(hours=1)

    outcome = make_worker(now=lambda: later).process_message(message_for(job))

    assert outcome is Outcome.FAILED
    assert "Gave up after" in (table_job(job).error or "")


# --- cancellation -----------------------------------------------------------------------


def test_cancelled_queued_job_never_starts(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setitem(
        kinds.KINDS, "heavyLoad", kind_running(lambda i, ctx: calls.append(i.n) or i.n)
    )
    job = make_job(n=10)
    connections.job_table().cancel(job, utc_now())

    assert make_worker().process_message(message_for(job)) is Outcome.CANCELLED
    assert calls == [] and table_job(job).status is JobStatus.CANCELLED


def test_running_job_stops_at_its_next_checkpoint_when_cancelled(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached: list[int] = []

    def cancelled_midway(input: Any, ctx: Context) -> int:
        n = input.n
        for done in range(1, n + 1):
            if done == 3:
                connections.job_table().cancel(job, utc_now())
            ctx.report(done / n, done)
            reached.append(done)
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(cancelled_midway))
    job = make_job(n=10)

    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))

    assert outcome is Outcome.CANCELLED
    assert reached == [1, 2]  # the report after the cancel stopped the run
    final = table_job(job)
    assert final.status is JobStatus.CANCELLED and final.result is None


def test_kind_catching_exception_cannot_swallow_a_stop(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept_running: list[int] = []

    def stubborn(input: Any, ctx: Context) -> int:
        connections.job_table().cancel(job, utc_now())
        with contextlib.suppress(Exception):  # the point of the test
            ctx.report(0.1, 1)
        kept_running.append(1)  # reached only if the stop was swallowed
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(stubborn))
    job = make_job(n=10)
    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))
    # The outcome alone cannot tell: a run that kept going would see its final write
    # refused and report CANCELLED too. The stop must end the kind's code at the report.
    assert kept_running == []
    assert outcome is Outcome.CANCELLED and table_job(job).result is None


# --- dead letters -----------------------------------------------------------------------


def test_dead_lettered_message_fails_its_job(
    make_job: Callable[..., Job], message_for: Any, client: Client, aws: dict[str, str]
) -> None:
    job = make_job(n=10)
    connections.job_table().claim(job.job_id, job.kind, "crashed", utc_now(), 30_000)
    event = {
        "Records": [
            dict(
                dlq_record(message_for(job), aws),
                attributes={
                    "ApproximateReceiveCount": "5",
                    "SentTimestamp": "1",
                    "SenderId": "x",
                    "ApproximateFirstReceiveTimestamp": "1",
                },
            )
        ]
    }

    client.lambda_.invoke("process_dead_letters", event)

    final = status(client, job.job_id)
    assert final["status"] == "failed"
    assert "dead-lettered after 5 deliveries" in final["error"]


def test_a_dead_lettered_job_that_never_started_is_sent_again_a_few_times(
    make_job: Callable[..., Job], message_for: Any, receive: Receive
) -> None:
    """It only waited too long (the DLQ consumer must not fail a job that never ran); it is
    sent again MAX_DEAD_LETTER_REDRIVES times, then failed like any dead letter."""
    job = make_job(n=10)
    worker = make_worker()

    outcomes = [worker.process_dead_letter(message_for(job), 5) for _ in range(4)]

    assert outcomes == [Outcome.REDRIVEN] * MAX_DEAD_LETTER_REDRIVES + [Outcome.FAILED]
    assert len(receive()) == MAX_DEAD_LETTER_REDRIVES
    final = table_job(job)
    assert final.redrives == MAX_DEAD_LETTER_REDRIVES and final.status is JobStatus.FAILED
    assert final.pending_at is None


def test_dead_letter_of_a_finished_job_changes_nothing(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    job = make_job(n=10)
    worker = make_worker()
    worker.process_message(message_for(job))
    before = table_job(job)
    assert worker.process_dead_letter(message_for(job), 5) is Outcome.DUPLICATE
    assert worker.process_dead_letter("garbage", 5) is Outcome.POISON
    assert table_job(job) == before


def dlq_record(body: str, aws: dict[str, str]) -> dict[str, Any]:
    from tests.conftest import sqs_record

    return sqs_record(body, aws["DeadLetterQueueArn"])


# --- the job kinds and the message form -------------------------------------------


def test_job_statuses() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_message_body_is_the_job_id_kind_and_resume_flag(make_job: Callable[..., Job]) -> None:
    job = make_job()
    assert json.loads(to_message(job)) == {"job_id": job.job_id, "kind": job.kind}
    assert parse_message(to_message(job, resume=True)).resume is True
    assert parse_message(to_message(job)).kind == job.kind


def test_a_message_without_its_kind_is_still_run(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages name the job's kind (the claim rewrites the kind's listing keys); one that
    does not, or names another, still runs the job under its own kind, and a
    continuation's message that names another still continues it (not a new attempt)."""
    monkeypatch.setitem(kinds.KINDS, "other", kind_running(lambda i, ctx: i.n))
    plain, mislabelled = make_job(n=3), make_job(n=4, kind="other")
    continuation = make_job(n=6, kind="other", attempts=1, resume=True, state=2)
    worker = make_worker()

    assert worker.process_message(json.dumps({"job_id": plain.job_id})) is Outcome.SUCCEEDED
    wrong = json.dumps({"job_id": mislabelled.job_id, "kind": "heavyLoad"})
    assert worker.process_message(wrong) is Outcome.SUCCEEDED
    wrong = json.dumps({"job_id": continuation.job_id, "kind": "heavyLoad", "resume": True})
    assert worker.process_message(wrong) is Outcome.SUCCEEDED

    assert table_job(plain).result == 3 and table_job(mislabelled).result == 4
    assert (table_job(continuation).result, table_job(continuation).attempts) == (6, 1)
    listed = connections.job_table().page(
        Listing(kind="other", status=JobStatus.SUCCEEDED), 10, [None] * SHARDS, utc_now()
    )
    assert sorted(j.job_id for j in listed.jobs) == sorted(
        [mislabelled.job_id, continuation.job_id]
    )


def test_the_sweep_repairs_what_code_older_than_the_indexes_left(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    """During an upgrade, the previous release's worker may finish a job after its item
    was migrated: the item says succeeded, its listing keys still say running. Likewise a
    job it failed keeps a pending mark. The sweep, which reads both, puts them right."""
    finished = make_job(n=10).with_(status=JobStatus.SUCCEEDED, result=10, pending_at=None)
    stale = to_item(finished)
    stale.update(
        {
            LIST_BY_STATUS.partition_key: to_item(finished.with_(status=JobStatus.RUNNING))[
                LIST_BY_STATUS.partition_key
            ],
        }
    )
    failed = make_job(n=10).with_(status=JobStatus.FAILED, error="old code")
    marked = {**to_item(failed), **derived_attributes(failed.with_(status=JobStatus.QUEUED))}
    marked[PENDING.sort_key] = {"N": "1"}
    ddb = boto3.client("dynamodb")
    for item in (stale, marked):
        ddb.put_item(TableName=aws["TableName"], Item=item)
    table = connections.job_table()

    def running_keys() -> list[str]:
        return [job.job_id for job in table.running(10)]

    assert running_keys() == [finished.job_id]  # the index still lists it as running
    assert [e.job_id for e in table.lost_pending(epoch_ms(utc_now()), 10)] == [failed.job_id]

    assert make_worker().recover_stalled() == []

    assert running_keys() == []
    assert [e.job_id for e in table.lost_pending(epoch_ms(utc_now()), 10)] == []
    succeeded = table.page(Listing(status=JobStatus.SUCCEEDED), 10, [None] * SHARDS, utc_now())
    assert [j.job_id for j in succeeded.jobs] == [finished.job_id]
    assert table_job(failed).status is JobStatus.FAILED  # left as it was


def test_any_read_before_the_run_that_fails_backs_off_too(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking up the kind of a message that does not name it, or reading a job that was
    not free, fails like the claim: the message comes back soon, not in 15 minutes."""
    job = make_job(n=10)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)
    monkeypatch.setattr(queue, "hold", lambda r, s: queue.holds.append((r, s)))

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB GetItem failed")

    monkeypatch.setattr(worker.table, "get", unavailable)
    with pytest.raises(StoreUnavailable):
        worker.process_message(json.dumps({"job_id": job.job_id}), delivery(receive_count=2))
    monkeypatch.setattr(worker.table, "claim", lambda *a, **k: None)  # not free
    with pytest.raises(StoreUnavailable):
        worker.process_message(to_message(job), delivery(receive_count=1))
    assert [seconds for _, seconds in queue.holds] == [4, 2]


def make_unreadable(job: Job, aws: dict[str, str]) -> None:
    """Leave the job's stored state unreadable (not JSON), as a partial write could."""
    boto3.client("dynamodb").update_item(
        TableName=aws["TableName"],
        Key={"job_id": {"S": job.job_id}},
        UpdateExpression="SET #state = :state",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={":state": {"S": '{"position": 12'}},
    )


def stored_status(job: Job, aws: dict[str, str]) -> tuple[str, str | None]:
    item = boto3.client("dynamodb").get_item(
        TableName=aws["TableName"], Key={"job_id": {"S": job.job_id}}, ConsistentRead=True
    )["Item"]
    return item["status"]["S"], item.get("error", {}).get("S")


def test_the_sweep_fails_an_unreadable_job_and_goes_on_with_the_others(
    make_job: Callable[..., Job], receive: Receive, aws: dict[str, str]
) -> None:
    """An unreadable job among the lost ones (queued, its message lost) and among the
    running ones (its run died, its lease expired long ago): each is failed with the
    reason, without being read, and the readable ones beside it are sent again."""
    settings = get_settings()
    table = connections.job_table()
    lost_bad, lost = make_job(n=5), make_job(n=7)  # queued; their messages are lost
    dead_bad, dead = make_job(n=10), make_job(n=11)
    for job in (dead_bad, dead):
        table.claim(job.job_id, job.kind, "dead-worker", utc_now(), 30_000)
    for job in (lost_bad, dead_bad):
        make_unreadable(job, aws)
    late = utc_now() + timedelta(
        seconds=30 + settings.message_hold_seconds + settings.lost_after_seconds + 1
    )
    sweeper = make_worker(now=lambda: late)

    assert sorted(sweeper.recover_stalled()) == sorted([lost.job_id, dead.job_id])

    for job in (lost_bad, dead_bad):
        status_, error = stored_status(job, aws)
        assert status_ == JobStatus.FAILED
        assert error is not None
        assert error.startswith("The job's record cannot be read: JSONDecodeError: ")
    sent = [parse_message(m["Body"]).job_id for m in receive()]
    assert sorted(sent) == sorted([lost.job_id, dead.job_id])
    assert sweeper.recover_stalled() == []  # settled once


def test_an_unreadable_running_job_whose_lease_is_live_is_left_to_its_message(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    """Its run may be alive, or its message may come back: the worker fails it then, at
    its third delivery. The sweep waits for its lease, as for a readable one."""
    job = make_job(n=10)
    connections.job_table().claim(job.job_id, job.kind, "alive", utc_now(), 30_000)
    make_unreadable(job, aws)

    assert make_worker().recover_stalled() == []
    assert stored_status(job, aws) == (JobStatus.RUNNING, None)


def test_a_listing_page_leaves_out_an_unreadable_job_and_shows_the_others(
    make_job: Callable[..., Job], aws: dict[str, str]
) -> None:
    jobs = [make_job(n=10 + i) for i in range(3)]
    make_unreadable(jobs[1], aws)
    table = connections.job_table()

    page = table.page(Listing(), 10, (None,) * SHARDS, utc_now())

    assert sorted(job.job_id for job in page.jobs) == sorted([jobs[0].job_id, jobs[2].job_id])
    read = table.read_many([job.job_id for job in jobs])
    unreadable = read[jobs[1].job_id]
    assert isinstance(unreadable, UnreadableJob) and unreadable.lease_until is None
    assert isinstance(unreadable.error, json.JSONDecodeError)
