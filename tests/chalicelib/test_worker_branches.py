"""The worker's rarer branches, each through its effect: what the table holds
afterwards, what is on the job and delay queues, and what the run returned. Each test
names the branch of chalicelib/worker.py it guards; removing or changing that branch makes
it fail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections, kinds
from chalicelib.config import get_settings
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import Job, JobStatus, epoch_ms, parse_message, to_message, utc_now
from chalicelib.kinds import Context, Kind, heavy_load
from chalicelib.worker import Outcome, Worker
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


def queued_bodies(receive: Receive, queue_url: str | None = None) -> list[str]:
    return [message["Body"] for message in receive(queue_url)]


# --- stops from inside ctx.report -------------------------------------------------------


def test_a_run_that_lost_its_lease_stops_writes_nothing_and_is_a_duplicate(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._run_claimed's ``except _LostLease``: another run took the job over (this
    run stalled past its lease); this run's next report stops it, and it writes nothing:
    no checkpoint, no result, no release, no message."""
    after_report: list[int] = []
    table = connections.job_table()
    later = utc_now() + timedelta(seconds=get_settings().stale_after_seconds + 1)

    def overtaken(input: Any, ctx: Context) -> int:
        assert table.claim(job.job_id, job.kind, "usurper", later, 30_000) is not None
        ctx.report(0.5, 5)
        after_report.append(5)
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(overtaken))
    job = make_job(n=10)

    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))

    assert outcome is Outcome.DUPLICATE
    assert after_report == []  # the run stopped at the report
    final = table_job(job)
    assert (final.status, final.owner, final.attempts) == (JobStatus.RUNNING, "usurper", 2)
    assert (final.state, final.result, final.last_error) == (None, None, None)
    assert receive() == [] and receive(aws["DelayQueueUrl"]) == []


def test_an_aws_failure_mid_run_raises_and_burns_no_attempt(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._run_claimed's ``except StoreUnavailable: raise``: a checkpoint that DynamoDB
    refuses is not the job's failure. The invocation raises (SQS delivers the held message
    again); the job is not released as a retry, gets no last_error, and nothing goes to the
    delay queue."""
    job = make_job(n=10)
    worker = make_worker(monotonic=FakeClock(step=2.0))

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB UpdateItem failed: throttled")

    monkeypatch.setattr(worker.table, "checkpoint", unavailable)
    monkeypatch.setitem(
        kinds.KINDS, "heavyLoad", kind_running(lambda i, ctx: ctx.report(0.1, 1) or i.n)
    )

    with pytest.raises(StoreUnavailable):
        worker.process_message(message_for(job))

    current = table_job(job)
    assert (current.status, current.attempts) == (JobStatus.RUNNING, 1)
    assert (current.last_error, current.error, current.pending_at) == (None, None, None)
    assert receive(aws["DelayQueueUrl"]) == [] and receive() == []


def test_a_claim_and_each_checkpoint_lease_the_job_for_a_full_lease_and_progress_caps_at_1(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker._claim, Checkpointer.save and Worker.lease_until_ms: the claim leases the job
    for exactly stale_after_seconds from the claim, and each checkpoint extends the lease
    to exactly that long from now (so a take-over waits that long after the last
    heartbeat, no more, no less); a progress a kind over-reports is saved as 1."""
    fixed = utc_now()
    now = [fixed]
    seen: list[tuple[float, int | None]] = []
    table = connections.job_table()

    def overshooting(input: Any, ctx: Context) -> int:
        claimed = table.get(job.job_id)
        assert claimed is not None
        seen.append((claimed.progress, claimed.lease_until))
        now[0] = fixed + timedelta(seconds=5)
        ctx.report(1.7, 3)
        saved = table.get(job.job_id)
        assert saved is not None
        seen.append((saved.progress, saved.lease_until))
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(overshooting))
    job = make_job(n=10)
    worker = make_worker(now=lambda: now[0], monotonic=FakeClock(step=2.0))

    assert worker.process_message(message_for(job)) is Outcome.SUCCEEDED

    lease_ms = get_settings().stale_after_seconds * 1000
    assert seen == [(0.0, epoch_ms(fixed) + lease_ms), (1.0, epoch_ms(fixed) + 5_000 + lease_ms)]


# --- writes a run makes that the table refuses -------------------------------------------


def cancel_then_raise(job_ref: list[Job]) -> Kind[Any, Any]:
    def kind(input: Any, ctx: Context) -> int:
        connections.job_table().cancel(job_ref[0], utc_now())
        raise ValueError("failed after being cancelled")

    return kind_running(kind)


def test_a_retry_release_refused_sends_nothing(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._after_failure: the job was cancelled while its attempt failed; the release
    is refused, so no retry is sent to the delay queue and the cancellation stands."""
    job = make_job(n=10)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", cancel_then_raise([job]))

    assert make_worker().process_message(message_for(job)) is Outcome.CANCELLED

    assert receive(aws["DelayQueueUrl"]) == []
    final = table_job(job)
    assert (final.status, final.last_error, final.error) == (JobStatus.CANCELLED, None, None)
    assert final.pending_at is None


def test_a_final_failure_refused_leaves_the_cancellation(
    make_job: Callable[..., Job],
    message_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._fail: on the last attempt, a failure write refused (cancelled meanwhile) is
    reported as the cancellation, and the job keeps no error."""
    monkeypatch.setenv("JOBS_MAX_ATTEMPTS", "1")
    connections.reset()
    job = make_job(n=10)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", cancel_then_raise([job]))

    assert make_worker().process_message(message_for(job)) is Outcome.CANCELLED

    final = table_job(job)
    assert (final.status, final.error) == (JobStatus.CANCELLED, None)


@pytest.mark.parametrize(
    ("meanwhile", "outcome", "holder"),
    [
        ("cancelled", Outcome.CANCELLED, (JobStatus.CANCELLED, None)),
        ("taken over", Outcome.DUPLICATE, (JobStatus.RUNNING, "usurper")),
    ],
)
def test_a_success_write_refused_is_reported_as_what_happened_meanwhile(
    meanwhile: str,
    outcome: Outcome,
    holder: tuple[JobStatus, str | None],
    make_job: Callable[..., Job],
    message_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._run_claimed: the run returned without a report after the job was cancelled,
    or taken over by another run; the success write is refused, the run says which (from
    the job it reads back), and the job keeps no result."""
    table = connections.job_table()
    later = utc_now() + timedelta(seconds=get_settings().stale_after_seconds + 1)

    def finishes_quietly(input: Any, ctx: Context) -> int:
        if meanwhile == "cancelled":
            table.cancel(job, utc_now())
        else:
            assert table.claim(job.job_id, job.kind, "usurper", later, 30_000) is not None
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(finishes_quietly))
    job = make_job(n=10)

    assert make_worker().process_message(message_for(job)) is outcome

    final = table_job(job)
    assert (final.status, final.owner) == holder
    assert (final.result, final.error) == (None, None)


def test_a_continuation_release_refused_sends_nothing(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker._continue_later: the checkpoint before the timeout was saved, then the job
    was cancelled before its release; the release is refused and no continuation is sent."""
    monkeypatch.setattr(heavy_load, "CHUNK", 1000)
    job = make_job(n=10_000)
    worker = make_worker(monotonic=FakeClock(step=0.0))
    real_release = worker.table.release

    def cancelled_first(*args: Any, **kwargs: Any) -> Job | None:
        connections.job_table().cancel(job, utc_now())
        return real_release(*args, **kwargs)

    monkeypatch.setattr(worker.table, "release", cancelled_first)
    # Just below the margin: the run yields at the first report, with time for each call.
    margin_ms = int(get_settings().timeout_margin_seconds * 1000)
    out_of_time = lambda: margin_ms - 1  # noqa: E731

    assert worker.process_message(message_for(job), remaining_ms=out_of_time) is (Outcome.CANCELLED)

    assert receive() == []
    final = table_job(job)
    assert (final.status, final.resume, final.pending_at) == (JobStatus.CANCELLED, False, None)


def test_the_give_up_and_dead_letter_errors_end_with_the_last_error(
    make_job: Callable[..., Job], message_for: Any
) -> None:
    """Worker._give_up_message and process_dead_letter: the job's error says why it was
    given up, then ' Last error: <the last attempt's error>' when there was one."""
    settings = get_settings()
    dead = {"status": JobStatus.RUNNING, "owner": "dead", "lease_until": 1}
    crashing = make_job(n=10, attempts=settings.max_attempts, last_error="ValueError: boom", **dead)
    quiet = make_job(n=10, attempts=settings.max_attempts, **dead)
    lettered = make_job(n=10, attempts=1, last_error="KeyError: 'x'", **dead)
    lettered_quiet = make_job(n=10, attempts=1, **dead)
    worker = make_worker()

    assert worker.process_message(message_for(crashing)) is Outcome.FAILED
    assert worker.process_message(message_for(quiet)) is Outcome.FAILED
    assert worker.process_dead_letter(message_for(lettered), 5) is Outcome.FAILED
    assert worker.process_dead_letter(message_for(lettered_quiet), 4) is Outcome.FAILED

    gave_up = (
        f"Gave up after {settings.max_attempts} attempts: the worker stopped without "
        "finishing each time."
    )
    assert table_job(crashing).error == gave_up + " Last error: ValueError: boom"
    assert table_job(quiet).error == gave_up
    assert table_job(lettered).error == (
        "The job's message was dead-lettered after 5 deliveries without the job finishing."
        " Last error: KeyError: 'x'"
    )
    assert table_job(lettered_quiet).error == (
        "The job's message was dead-lettered after 4 deliveries without the job finishing."
    )


def test_a_failed_attempt_is_released_with_its_error_due_when_its_backoff_ends(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker._after_failure: the job goes back to queued with the attempt's error as
    last_error (the dead-letter and give-up errors quote it), not as a continuation, and
    its message due exactly when the delay queue lets the retry go: the sweep must not
    think it lost before then."""

    def broken(input: Any, ctx: Context) -> int:
        raise ValueError("counting went wrong")

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(broken))
    job = make_job(n=10)
    fixed = utc_now()
    delay = get_settings().retry_delay_seconds(1)
    assert delay > 0

    worker = make_worker(now=lambda: fixed)
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(
        worker.delay_queue, "send", lambda body, delay_seconds: sent.append((body, delay_seconds))
    )

    assert worker.process_message(message_for(job)) is Outcome.RETRYING

    waiting = table_job(job)
    assert (waiting.status, waiting.attempts, waiting.resume) == (JobStatus.QUEUED, 1, False)
    assert waiting.last_error == "ValueError: counting went wrong"
    assert waiting.error is None and waiting.owner is None
    assert waiting.pending_at == epoch_ms(fixed) + delay * 1000
    assert sent == [(to_message(job), delay)]


# --- the recovery sweep -----------------------------------------------------------------


def lost_long_ago() -> int:
    return epoch_ms(utc_now()) - (get_settings().lost_after_seconds + 60) * 1000


def test_a_swept_retry_and_continuation_run_once_their_message_is_sent_again(
    make_job: Callable[..., Job], receive: Receive
) -> None:
    """Worker.recover_stalled sends ``to_message(job, resume=job.resume)``: a continuation
    must stay one (a plain message for a job queued to continue is refused by the claim,
    forever), and a retry must stay a plain attempt."""
    table = connections.job_table()
    retry = make_job(n=7)
    claimed = table.claim(retry.job_id, retry.kind, "w", utc_now(), 30_000)
    assert claimed is not None
    table.release(claimed, "w", lost_long_ago(), resume=False, last_error="ValueError: x")
    continuation = make_job(n=9)
    claimed = table.claim(continuation.job_id, continuation.kind, "w", utc_now(), 30_000)
    assert claimed is not None
    table.checkpoint(continuation.job_id, "w", "4", 4 / 9, epoch_ms(utc_now()) + 30_000)
    table.release(claimed, "w", lost_long_ago(), resume=True)

    recovered = make_worker().recover_stalled()

    assert sorted(recovered) == sorted([retry.job_id, continuation.job_id])
    worker = make_worker()
    outcomes = {
        parse_message(body).job_id: worker.process_message(body) for body in queued_bodies(receive)
    }
    assert outcomes == {retry.job_id: Outcome.SUCCEEDED, continuation.job_id: Outcome.SUCCEEDED}
    assert (table_job(retry).result, table_job(retry).attempts) == (7, 2)
    assert (table_job(continuation).result, table_job(continuation).attempts) == (9, 1)


def test_a_sweep_that_loses_the_race_for_a_pending_job_sends_nothing(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker.recover_stalled when redrive_pending is refused: a worker claimed the job
    between the index read and the re-drive (its pending mark is gone), or another sweep
    re-drove it first (its mark moved on and stays). Nothing is sent either way."""
    claimed, other_swept = (
        make_job(n=10, pending_at=lost_long_ago()),
        make_job(n=10, pending_at=lost_long_ago()),
    )
    table = connections.job_table()
    worker = make_worker()
    real_redrive = worker.table.redrive_pending
    other_sweep_at = epoch_ms(utc_now()) - 1

    def racing(job_id: str, pending_at_ms: int, now_ms: int) -> Job | None:
        if job_id == claimed.job_id:
            table.claim(job_id, claimed.kind, "worker", utc_now(), 30_000)
        else:
            assert real_redrive(job_id, pending_at_ms, other_sweep_at) is not None
        return real_redrive(job_id, pending_at_ms, now_ms)

    monkeypatch.setattr(worker.table, "redrive_pending", racing)

    assert worker.recover_stalled() == []

    assert receive() == []
    running = table_job(claimed)
    assert (running.status, running.owner, running.pending_at) == (
        JobStatus.RUNNING,
        "worker",
        None,
    )
    waiting = table_job(other_swept)
    assert (waiting.status, waiting.pending_at) == (JobStatus.QUEUED, other_sweep_at)


def test_a_sweep_that_loses_the_race_for_a_dead_run_sends_nothing(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker.recover_stalled when requeue_running is refused: the run it read as dead
    checkpointed (or another sweep re-queued it) before the re-queue."""
    settings = get_settings()
    job = make_job(n=10)
    table = connections.job_table()
    table.claim(job.job_id, job.kind, "slow", utc_now(), 30_000)
    late = utc_now() + timedelta(
        seconds=settings.message_hold_seconds + settings.lost_after_seconds + 31
    )
    worker = make_worker(now=lambda: late)
    real_running = worker.table.running

    def then_it_checkpoints(limit_per_shard: int) -> list[Job]:
        listed = real_running(limit_per_shard)
        table.checkpoint(job.job_id, "slow", "3", 0.3, epoch_ms(late) + 30_000)
        return listed

    monkeypatch.setattr(worker.table, "running", then_it_checkpoints)

    assert worker.recover_stalled() == []

    assert receive() == []
    current = table_job(job)
    assert (current.status, current.owner, current.state) == (JobStatus.RUNNING, "slow", 3)


def test_the_sweep_requeues_a_run_dead_for_longer_than_the_hold_and_lost_after_only(
    make_job: Callable[..., Job], receive: Receive
) -> None:
    """Worker.recover_stalled: a run is dead once its lease expired more than the message
    hold plus JOBS_LOST_AFTER_SECONDS ago (its own message would have come back by then);
    a lease that expired exactly that long ago is still given the benefit of the doubt."""
    settings = get_settings()
    fixed = utc_now()
    dead_before = (
        epoch_ms(fixed) - settings.message_hold_seconds * 1000 - settings.lost_after_seconds * 1000
    )
    running = {"status": JobStatus.RUNNING, "owner": "gone", "attempts": 1}
    dead = make_job(n=10, lease_until=dead_before - 1, **running)
    borderline = make_job(n=10, lease_until=dead_before, **running)

    assert make_worker(now=lambda: fixed).recover_stalled() == [dead.job_id]

    assert [parse_message(body).job_id for body in queued_bodies(receive)] == [dead.job_id]
    requeued = table_job(dead)
    assert (requeued.status, requeued.owner, requeued.pending_at) == (
        JobStatus.QUEUED,
        None,
        epoch_ms(fixed),
    )
    assert (table_job(borderline).status, table_job(borderline).owner) == (
        JobStatus.RUNNING,
        "gone",
    )


def test_the_sweep_goes_on_past_every_running_job_it_leaves_alone(
    make_job: Callable[..., Job], receive: Receive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker.recover_stalled: a job listed as running that is not (its index keys are
    rewritten), a live run, and a dead run that checkpointed before its re-queue are each
    skipped; a dead run listed after them is still queued again."""
    long_dead = 1  # a lease that expired in 1970
    running = {"status": JobStatus.RUNNING, "owner": "gone", "attempts": 1}
    listed_stale = make_job(n=10, status=JobStatus.SUCCEEDED, result=10)
    live = make_job(n=10, lease_until=epoch_ms(utc_now()) + 30_000, **running)
    raced = make_job(n=10, lease_until=long_dead + 1, **running)  # checkpointed since read
    dead = make_job(n=10, lease_until=long_dead, **running)
    worker = make_worker()
    as_read = [listed_stale, live, raced.with_(lease_until=long_dead), dead]
    monkeypatch.setattr(worker.table, "running", lambda limit_per_shard: as_read)

    assert worker.recover_stalled() == [dead.job_id]

    assert [parse_message(body).job_id for body in queued_bodies(receive)] == [dead.job_id]
    assert table_job(dead).status is JobStatus.QUEUED
    assert [table_job(job).status for job in (listed_stale, live, raced)] == [
        JobStatus.SUCCEEDED,
        JobStatus.RUNNING,
        JobStatus.RUNNING,
    ]


# --- dead letters -----------------------------------------------------------------------


def test_a_dead_letter_naming_no_job_is_dropped_and_writes_nothing(
    make_job: Callable[..., Job], receive: Receive
) -> None:
    """Worker.process_dead_letter for a well-formed message whose job does not exist (it
    expired): acknowledged as poison; no item is created, nothing is sent."""
    unknown = Job.new(n=10, now=utc_now())  # never written

    assert make_worker().process_dead_letter(to_message(unknown), 5) is Outcome.POISON

    assert connections.job_table().get(unknown.job_id) is None
    assert receive() == []


def claimed_after_its_first_read(worker: Worker, job: Job) -> None:
    """Make the worker's first read of ``job`` return it as it was, then have another run
    (owner "worker") claim it: the race between a read and the write that follows it."""
    real_get = worker.table.get
    reads: list[str] = []

    def read_then_claimed(job_id: str) -> Job | None:
        before = real_get(job_id)
        if not reads:
            connections.job_table().claim(job_id, job.kind, "worker", utc_now(), 30_000)
        reads.append(job_id)
        return before

    worker.table.get = read_then_claimed  # type: ignore[method-assign]


def test_a_dead_letter_of_a_job_that_started_meanwhile_leaves_its_run_alone(
    make_job: Callable[..., Job], message_for: Any, receive: Receive
) -> None:
    """Worker.process_dead_letter: the job read as never started was claimed before the
    re-drive (from another message: a sweep's re-drive). The re-drive is refused, and the
    stale dead letter neither fails the running job nor sends anything."""
    job = make_job(n=10)
    worker = make_worker()
    claimed_after_its_first_read(worker, job)

    assert worker.process_dead_letter(message_for(job), 5) is Outcome.DUPLICATE

    assert receive() == []
    final = table_job(job)
    assert (final.status, final.owner, final.redrives) == (JobStatus.RUNNING, "worker", 0)
    assert final.error is None


def test_a_dead_letter_of_a_job_that_ran_fails_it_whoever_holds_it_now(
    make_job: Callable[..., Job], message_for: Any, receive: Receive
) -> None:
    """Worker.process_dead_letter: only a job that never started is sent again. A retry
    waiting in the queue (attempts 1) whose message was dead-lettered is failed by
    fail_unfinished, whoever holds it by then (here a run that claimed it just after the
    dead letter read it): its run fails its next checkpoint and stops."""
    job = make_job(n=10, attempts=1, last_error="ValueError: x")
    worker = make_worker()
    claimed_after_its_first_read(worker, job)

    assert worker.process_dead_letter(message_for(job), 5) is Outcome.FAILED

    assert receive() == []
    final = table_job(job)
    assert (final.status, final.owner, final.redrives) == (JobStatus.FAILED, None, 0)
    assert final.error == (
        "The job's message was dead-lettered after 5 deliveries without the job finishing."
        " Last error: ValueError: x"
    )


def test_a_dead_letter_past_the_redrive_cap_fails_the_job_still_queued(
    make_job: Callable[..., Job],
    message_for: Any,
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker.process_dead_letter: the re-drive refused because the job was already sent
    again as often as allowed; it is still queued, so the dead letter fails it."""
    job = make_job(n=10)
    worker = make_worker()
    monkeypatch.setattr(worker.table, "redrive_dead_letter", lambda *args: None)

    assert worker.process_dead_letter(message_for(job), 5) is Outcome.FAILED

    assert receive() == []
    final = table_job(job)
    assert final.status is JobStatus.FAILED and "dead-lettered" in (final.error or "")


# --- the message hold and the watermark --------------------------------------------------


def test_a_failed_claim_whose_back_off_also_fails_still_raises(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker._back_off: SQS refusing the shorter visibility is only logged; the claim's
    StoreUnavailable is what the invocation raises (so SQS delivers again)."""
    job = make_job(n=10)
    queue = SpyQueue(connections.worker().queue)
    worker = make_worker(queue=queue)

    def unavailable(*args: Any, **kwargs: Any) -> Job | None:
        raise StoreUnavailable("DynamoDB UpdateItem failed: claim")

    def refused(receipt_handle: str, seconds: int) -> None:
        queue.holds.append((receipt_handle, seconds))
        raise StoreUnavailable("SQS ChangeMessageVisibility failed")

    monkeypatch.setattr(worker.table, "claim", unavailable)
    monkeypatch.setattr(queue, "hold", refused)

    with pytest.raises(StoreUnavailable, match="claim"):
        worker.process_message(message_for(job), delivery("r-9", receive_count=2))
    assert queue.holds == [("r-9", 4)]
    assert table_job(job).status is JobStatus.QUEUED


def test_a_watermark_write_that_fails_is_tried_again_at_the_next_delivery(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker._observe: a failed write is not counted as recorded, so the next delivery
    (within the interval) writes it, instead of leaving the watermark behind for 30 s."""
    clock = [0.0]
    worker = make_worker(monotonic=lambda: clock[0])
    table = connections.job_table()
    job = make_job(n=0)
    real_raise = worker.table.raise_watermark
    failures = [StoreUnavailable("DynamoDB UpdateItem failed")]

    def flaky(sent_ms: int, lane: int = 0) -> bool:
        if failures:
            raise failures.pop()
        return real_raise(sent_ms, lane)

    monkeypatch.setattr(worker.table, "raise_watermark", flaky)

    assert worker.process_message(message_for(job), delivery(sent_at_ms=5_000)) is not None
    assert table.watermark() is None
    worker.process_message(message_for(job), delivery(sent_at_ms=4_000))
    assert table.watermark() == 5_000  # the largest seen, written at once


# --- handlers: one failing record does not stop the others ------------------------------


def test_a_batch_with_a_failing_record_handles_the_others_then_raises(
    make_job: Callable[..., Job],
    client: Client,
    receive: Receive,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """app._each_record (forward_delayed, batch 10): the third forward fails with an AWS
    error; the other nine are still forwarded, in order, then the invocation raises so
    SQS delivers the batch again (the nine are deduplicated by their message ids)."""
    jobs = [make_job(n=10) for _ in range(10)]
    messages = []
    for job in jobs:
        connections.worker().delay_queue.send(to_message(job), delay_seconds=0)
    while len(messages) < 10:
        messages += receive(aws["DelayQueueUrl"])
    by_id = {parse_message(m["Body"]).job_id: m for m in messages}
    ordered = [by_id[job.job_id] for job in jobs]
    queue = connections.worker().queue
    real_send = queue.send

    def third_fails(body: str, deduplication_id: str) -> str:
        if parse_message(body).job_id == jobs[2].job_id:
            raise StoreUnavailable("SQS SendMessage failed: injected")
        return real_send(body, deduplication_id)

    monkeypatch.setattr(queue, "send", third_fails)

    with pytest.raises(StoreUnavailable, match="injected"):
        client.lambda_.invoke("forward_delayed", sqs_event_from(ordered, aws["DelayQueueArn"]))

    forwarded = [parse_message(body).job_id for body in queued_bodies(receive)]
    assert forwarded == [job.job_id for i, job in enumerate(jobs) if i != 2]
