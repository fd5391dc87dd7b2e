"""The worker: through the real SQS handler (app.process_job) and through Worker directly,
against moto. Covers the lifecycle, duplicates, poison, retries, checkpoints and
continuation, lease take-over, cancellation, dead letters and recovery."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, kinds
from chalicelib.config import get_settings
from chalicelib.jobs import Job, JobStatus, parse_message, to_message, utc_now
from chalicelib.kinds import JobContext
from chalicelib.store import JobTable
from chalicelib.worker import Outcome, Worker

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
) -> Worker:
    worker = Worker(table or connections.job_table(), connections.job_queue(), get_settings(), now)
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


class SpyTable(JobTable):
    """The real table adapter, recording every checkpoint."""

    def __init__(self, table: JobTable) -> None:
        super().__init__(table._client, table.table_name)
        self.checkpoints: list[tuple[int, float]] = []

    def checkpoint(
        self, job_id: str, owner: str, position: int, progress: float, lease_until_ms: int
    ) -> Job | None:
        self.checkpoints.append((position, progress))
        return super().checkpoint(job_id, owner, position, progress, lease_until_ms)


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
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", lambda n, ctx: n)  # skip 1e10 iterations
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
    table.claim(job.job_id, "other-worker", utc_now(), 30_000)  # fresh heartbeat
    calls: list[int] = []
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", lambda n, ctx: calls.append(n) or n)

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
    first = table.claim(job.job_id, "a", utc_now(), 30_000)
    second = table.claim(job.job_id, "b", utc_now(), 30_000)
    assert first is not None and second is None


def test_a_run_that_lost_its_lease_writes_nothing(make_job: Callable[..., Job]) -> None:
    """Worker A stalls past its lease; B takes over. A's late writes are refused."""
    job = make_job(n=10)
    table = connections.job_table()
    table.claim(job.job_id, "a", utc_now(), 30_000)
    later = utc_now() + timedelta(seconds=31)
    taken = table.claim(job.job_id, "b", later, 30_000)
    assert taken is not None and taken.attempts == 2

    assert table.checkpoint(job.job_id, "a", 5, 0.5, 0) is None
    assert table.succeed(job.job_id, "a", 999, utc_now()) is None
    assert table.succeed(job.job_id, "b", 10, utc_now()) is not None
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


def broken(n: int, ctx: JobContext) -> int:
    raise ValueError("counting went wrong")


def test_job_that_raises_is_retried_with_backoff_then_failed(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", broken)
    settings = get_settings()
    job = make_job(n=10)
    worker = make_worker()
    sent: list[tuple[str, int]] = []
    real_send = worker.queue.send
    monkeypatch.setattr(
        worker.queue,
        "send",
        lambda body, delay_seconds=0: sent.append((body, delay_seconds)) or real_send(body),
    )

    outcomes = [worker.process_message(message_for(job))]
    while outcomes[-1] is Outcome.RETRYING:
        assert table_job(job).status is JobStatus.QUEUED
        assert table_job(job).error is None  # not failed yet: only last_error is kept
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
    monkeypatch.setattr(kinds, "CHUNK", 1000)
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


def test_progress_is_visible_while_the_job_runs(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    def watching(n: int, ctx: JobContext) -> int:
        for done in range(0, n + 1, n // 4):
            ctx.report(done)
            seen.append(status(client, job.job_id))
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", watching)
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
    monkeypatch.setattr(kinds, "CHUNK", 1000)
    n = 10_500
    job = make_job(n=n)
    worker = make_worker(monotonic=FakeClock(step=0.0))
    margin_ms = get_settings().timeout_margin_seconds * 1000

    def invocation(chunks: int) -> Callable[[], int]:
        """A Lambda context whose remaining time falls under the margin after ``chunks``."""
        calls = iter(range(chunks, 0, -1))
        return lambda: int(margin_ms + next(calls, -1))

    body = message_for(job)
    starts: list[int] = []
    outcomes: list[Outcome] = []
    real_heavy_load = kinds.heavy_load
    monkeypatch.setitem(
        kinds.KINDS, "heavyLoad", lambda n, ctx: starts.append(ctx.start) or real_heavy_load(n, ctx)
    )
    for _ in range(10):
        outcome = worker.process_message(body, invocation(chunks=4))
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


def test_dead_worker_job_is_recovered_and_resumes_from_its_checkpoint(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(n=50_000)
    table = connections.job_table()
    # A worker claimed the job, checkpointed at 20,000, then died (no more heartbeats).
    table.claim(job.job_id, "dead-worker", utc_now(), 30_000)
    table.checkpoint(job.job_id, "dead-worker", 20_000, 0.4, 0)

    recovered = make_worker().recover_stalled()

    assert recovered == [job.job_id]
    assert table_job(job).status is JobStatus.QUEUED
    assert make_worker().recover_stalled() == []  # one sweep re-drives it once
    (message,) = receive()
    starts: list[int] = []
    real_heavy_load = kinds.heavy_load
    monkeypatch.setitem(
        kinds.KINDS, "heavyLoad", lambda n, ctx: starts.append(ctx.start) or real_heavy_load(n, ctx)
    )

    assert make_worker().process_message(message["Body"]) is Outcome.SUCCEEDED

    assert starts == [20_000]
    final = table_job(job)
    assert (final.result, final.attempts, final.status) == (50_000, 2, JobStatus.SUCCEEDED)


def test_live_jobs_are_not_recovered(make_job: Callable[..., Job]) -> None:
    job = make_job(n=10)
    connections.job_table().claim(job.job_id, "alive", utc_now(), 30_000)
    make_job(n=10)  # queued, never started: its message is on the queue
    assert make_worker().recover_stalled() == []


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    job = make_job(n=10)
    table = connections.job_table()
    for attempt in range(get_settings().max_attempts):
        table.claim(job.job_id, f"dies-{attempt}", utc_now() + timedelta(minutes=attempt), 1000)
    later = utc_now() + timedelta(hours=1)

    outcome = make_worker(now=lambda: later).process_message(message_for(job))

    assert outcome is Outcome.FAILED
    assert "Gave up after" in (table_job(job).error or "")


# --- cancellation -----------------------------------------------------------------------


def test_cancelled_queued_job_never_starts(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", lambda n, ctx: calls.append(n) or n)
    job = make_job(n=10)
    connections.job_table().cancel(job.job_id, utc_now())

    assert make_worker().process_message(message_for(job)) is Outcome.CANCELLED
    assert calls == [] and table_job(job).status is JobStatus.CANCELLED


def test_running_job_stops_at_its_next_checkpoint_when_cancelled(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached: list[int] = []

    def cancelled_midway(n: int, ctx: JobContext) -> int:
        for done in range(1, n + 1):
            if done == 3:
                connections.job_table().cancel(job.job_id, utc_now())
            ctx.report(done)
            reached.append(done)
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", cancelled_midway)
    job = make_job(n=10)

    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))

    assert outcome is Outcome.CANCELLED
    assert reached == [1, 2]  # the report after the cancel stopped the run
    final = table_job(job)
    assert final.status is JobStatus.CANCELLED and final.result is None


def test_kind_catching_exception_cannot_swallow_a_stop(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stubborn(n: int, ctx: JobContext) -> int:
        connections.job_table().cancel(job.job_id, utc_now())
        with contextlib.suppress(Exception):  # the point of the test
            ctx.report(1)
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", stubborn)
    job = make_job(n=10)
    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))
    assert outcome is Outcome.CANCELLED and table_job(job).result is None


# --- dead letters -----------------------------------------------------------------------


def test_dead_lettered_message_fails_its_job(
    make_job: Callable[..., Job], message_for: Any, client: Client, aws: dict[str, str]
) -> None:
    job = make_job(n=10)
    connections.job_table().claim(job.job_id, "crashed", utc_now(), 30_000)
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


def test_heavy_load_counts_to_n_exactly_from_any_checkpoint() -> None:
    reports: list[int] = []
    n = 3 * kinds.CHUNK + 17
    assert kinds.heavy_load(n, JobContext(start=0, report=reports.append)) == n
    assert reports[-1] == n and reports == sorted(reports)
    assert kinds.heavy_load(0, JobContext(start=0, report=reports.append)) == 0
    assert kinds.heavy_load(n, JobContext(start=2 * kinds.CHUNK + 5, report=reports.append)) == n


def test_job_statuses() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_message_body_is_the_job_id_and_resume_flag(make_job: Callable[..., Job]) -> None:
    job = make_job()
    assert json.loads(to_message(job.job_id)) == {"job_id": job.job_id}
    assert parse_message(to_message(job.job_id, resume=True)).resume is True
