"""The worker's use cases: run the job a message names, forward delayed retries, consume
dead letters, and re-drive jobs whose message was lost.

A run owns its job through a lease (claim, then checkpoints that renew it) and keeps its
own message hidden while it runs (the message hold, renewed every third of the lease): on
a FIFO queue an undeleted message blocks every job behind it, so a crashed run's message
must come back within minutes, not after the queue's visibility timeout (the worker's
timeout). Everything a retry cannot change is acknowledged (returns): a poison message, a
duplicate delivery, a cancelled job, a job failed for a reason no retry changes. What may
pass raises, so SQS delivers again, after a visibility the worker sets: a failed AWS call
(StoreUnavailable), an unreadable job before its UNREADABLE_DELIVERIES-th delivery, too
little time left for the out-of-time path (NoTimeLeft).

Failure paths, where they end, and what the jobs behind wait (defaults: lease 30 s, hold
60 s, claim backoff cap 60 s, JOBS_LOST_AFTER_SECONDS 120, a sweep every minute)::

    job raises            -> released; its message waits out the backoff in the delay
                             queue, then forward_delayed puts it at the tail of the job
                             queue; up to max_attempts, then failed. Behind: nothing (its
                             message is acknowledged).
    invocation near its   -> checkpoint, released as a continuation (not an attempt) at
      timeout                the tail. Behind: nothing. Each call of this path is made only
                             while the time left covers it (the margin is their worst
                             case); otherwise NoTimeLeft, and the message comes back after
                             its hold: at most 60 s.
    run goes silent       -> (no report for longer than the lease: hung, or a kind that
                             does not report) the run watchdog settles it as a failed
                             attempt, deletes its message and ends the process
                             (chalicelib.watchdog). Behind: the lease plus a cold start.
    worker dies after     -> (a crash, out of memory) its message reappears after the hold,
      the hold               once the lease has expired; that delivery takes the job over
                             from the last checkpoint. Behind: at most 60 s.
    worker dies before    -> (an init error of a bad deploy, a crash before the claim) the
      the hold               code cannot see it: the message stays hidden for the queue's
                             visibility timeout. Behind: the worker's timeout.
    claim fails (AWS)     -> the message comes back after the claim backoff, 2^receive
                             count s up to the cap; an outage up to OUTAGE_TOLERANCE_SECONDS
                             (15 min) dead-letters nothing (queue.MAX_RECEIVE_COUNT) and
                             keeps the order. Behind: the outage, plus at most 60 s.
    job unreadable        -> (any other exception before the run: claim, lookups) backs off
                             like a failed claim, then its 3rd delivery fails the job
                             without reading it (JobTable.fail_unreadable). Behind: 2 + 4 s
                             and three deliveries.
    hold fails            -> logged, whatever the error; the run goes on, and its next
                             checkpoint holds again (then, while it keeps failing, a
                             doubling interval apart up to a third of the lease:
                             MessageHold). Behind: nothing more.
    SQS down from before  -> (an outage that starts between the receive and the hold, and
      the hold to after      outlasts the run) the event source's delete would fail too,
      the run's end          leaving the message hidden for the queue's visibility
                             timeout from its receive. A run that ends while its hold has
                             lapsed deletes its message itself, trying again
                             LAPSED_RETRY_SECONDS apart while SQS is unreachable, while
                             the invocation's time left covers a call. Behind: the
                             outage, plus a few seconds; when the outage outlasts the
                             invocation, the visibility timeout, which ends about with it.
    SQS fails mid-run     -> (a continuation's or a retry's send) the invocation raises;
                             the message comes back after its hold, and the job, released
                             and marked due, is run by it or sent again by the recovery
                             sweep: nothing is lost or failed. Behind: at most 60 s (a
                             run whose hold had lapsed too holds it again first, trying
                             while SQS is unreachable, as below: 60 s after SQS answers).
    message lost          -> the recovery sweep finds the pending job behind the watermark
                             and sends it again, within JOBS_LOST_AFTER_SECONDS and a
                             sweep period. Behind: nothing (the lost message is not there).
                             The sweep settles each job on its own: an unreadable one is
                             failed without reading it, the others are still sent again;
                             only an AWS failure stops it, until its next run.
    message dead-lettered -> a job that never started is sent again (a few times; a send
                             that fails is left to the sweep, not counted again); any other,
                             readable or not, is failed, so nothing stays unfinished.
                             Behind: nothing (the message has left the job queue).

On a stage with lanes (chalicelib.queue.message_group), "behind" is behind in the same
lane: the other lanes go on; an AWS outage stalls them all alike.

Where each bound is tested: tests/chalicelib/test_lane_bounds.py (unreadable jobs, the
outage's backoffs, a hold that failed and the run's own delete, one record per consumer
invocation, the out-of-time path), tests/chalicelib/test_worker.py (backoff, hold,
take-over, sweep, an unreadable job in the sweep),
tests/chalicelib/test_watchdog.py (a silent run), tests/chalicelib/test_lanes.py (each
lane's watermark and sweep cutoff, every send in the job's lane); on the live local stack,
tests/e2e (tests/e2e/test_lanes_aws_mode.py: lanes behind Lambda's mapping).

Jobs that run later (``release_due``, ``forward``; docs/later.md): a job due more than
SQS's longest delay ahead is no message at all until the minutely release takes it out of
the sparse later index, a few minutes ahead, and sends it to the delay queue with
DelaySeconds to its time (Amazon SQS Developer Guide, "Amazon SQS message timers": a
per-message delay of up to 15 minutes, to the second); the forwarder then holds back any
message that comes back before its time. The release only needs to run ahead of the jobs'
times, so the minute-level precision of its EventBridge schedule rule ("Tutorial: Create
an EventBridge scheduled rule for AWS Lambda functions": no second-level precision, and a
target may run seconds after its rule triggers) costs nothing in precision. Its read is a
bounded Query of the soonest entries, the same with none or 10,000 waiting. A job waiting
for its time holds no lane and costs the jobs behind nothing; a release that fails leaves
its jobs waiting for the next run, still ahead of their time, and one that dies between
its write and its send leaves the job due at its time, which the recovery sweep sends
after it plus JOBS_LOST_AFTER_SECONDS (tests/chalicelib/test_later.py).

Continuations and retries are a deliberate SQS -> Lambda -> SQS loop: the worker sends to
its own trigger queue (retries through the delay queue and forward_delayed). Lambda's
recursive loop detection stops such a chain after about 16 invocations unless the
functions' recursion setting is Allow (Lambda Developer Guide, "Use Lambda recursive loop
detection to prevent infinite loops"); the deployment sets it for process_job and
forward_delayed, so a job may take as many invocations as it needs.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn

from chalicelib.config import OUT_OF_TIME_CALLS, Settings
from chalicelib.errors import NoTimeLeft, PoisonMessage, StoreRefused, StoreUnavailable
from chalicelib.events import PROGRESS_WINDOW_MS
from chalicelib.jobs import (
    Job,
    JobStatus,
    Message,
    epoch_ms,
    later_message,
    message_run_at_ms,
    parse_message,
    to_message,
    utc_now,
)
from chalicelib.kinds import KINDS, Context, Kind, state_json
from chalicelib.observability import Metric, count, job_logging, logger, milliseconds
from chalicelib.queue import DelayQueue, Delivery, JobQueue, claim_backoff, delay_until
from chalicelib.store import JobTable, LaterEntry, PendingEntry, UnreadableJob
from chalicelib.watchdog import watched_run

# Lambda's maximum timeout: the remaining time when no Lambda context is given.
MAX_INVOCATION_MS = 900_000
# The delivery of a message whose job cannot be read (an exception other than
# StoreUnavailable before its run starts) that fails the job instead of backing off again:
# the first deliveries may have met a half-written item, and the receive count is what
# survives between invocations.
UNREADABLE_DELIVERIES = 3
# A run that ends while its message hold has lapsed deletes its message itself (or, when
# it raises, holds it again), trying again this long apart while SQS stays unreachable
# (each failing call also makes botocore's own retries): done within seconds of its return.
LAPSED_RETRY_SECONDS = 1.0
# A worker process records the watermark at most this often (one write per interval).
WATERMARK_INTERVAL_SECONDS = 30.0
# A dead-lettered message of a job that never started is sent again at most this often.
MAX_DEAD_LETTER_REDRIVES = 3
# The recovery sweep reads at most this many lost jobs (and running jobs) per shard in
# one run; more wait for the next run. It bounds the sweep's cost, whatever the backlog.
SWEEP_LIMIT_PER_SHARD = 25
# The release of jobs that run later (release_due) takes those due within this look-ahead:
# it runs every minute, so each job is released minutes before its time and waits the
# rest in the delay queue, to the second, even when a run of the release is late or fails
# once. At most SQS's longest delay (900 s).
RELEASE_AHEAD_SECONDS = 300
# It reads at most this many per shard in one run (the soonest): its cost per minute is
# bounded whatever waits; more due within the look-ahead wait for the next run.
RELEASE_LIMIT_PER_SHARD = 100
# A delayed message of a job that runs later may come back up to this early (DelaySeconds
# is whole seconds, rounded down): its forwarder waits the rest before forwarding it.
FORWARD_WAIT_MS = 1000


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # the job ran to the end; its result is recorded
    FAILED = "failed"  # the job is failed for good; the error is recorded
    RETRYING = "retrying"  # this attempt raised; the job is queued again after a backoff
    CONTINUED = "continued"  # checkpointed before the timeout; queued to continue
    CANCELLED = "cancelled"  # the job was cancelled while this run had it; it stopped
    DUPLICATE = "duplicate"  # the job was not free (running elsewhere or finished)
    POISON = "poison"  # the message can never be processed: logged and dropped
    FORWARDED = "forwarded"  # a delayed message was put on the job queue
    DELAYED = "delayed"  # a job's message came back before its run_at: delayed again
    REDRIVEN = "redriven"  # a dead-lettered job that never started was sent again


class StopRun(BaseException):
    """Ends a run from inside ``ctx.report``. A BaseException, like KeyboardInterrupt,
    so that a job kind's ``except Exception`` cannot swallow it."""


class _Cancelled(StopRun):
    pass


class _LostLease(StopRun):
    pass


class _OutOfTime(StopRun):
    pass


class _BadState(StopRun):
    """The kind reported a state that cannot be saved (not JSON, or too large)."""


class MessageHold:
    """A run's hold on its message: ChangeMessageVisibility for the message hold, made
    right after the claim and renewed with the checkpoints once a third of the lease has
    passed. A hold that failed (SQS unreachable) is tried again at the next checkpoint,
    then, while it keeps failing, a doubling interval apart up to that third: a short
    blip is covered within a checkpoint, and a long outage costs the run one failing call
    per third of the lease, as the renewals do.

    ``lapsed``: the last hold failed and none succeeded since. The message then stays
    hidden for what an earlier hold, or the queue's visibility timeout from the receive,
    left: if the run ends so, it deletes the message itself (Worker._delete_lapsed), or,
    when it raises, holds it again (Worker._hold_lapsed), once SQS answers."""

    def __init__(self, worker: Worker, delivery: Delivery) -> None:
        """Hold the message at once."""
        self._worker = worker
        self.delivery = delivery
        self._every = worker.settings.stale_after_seconds / 3
        self._first_retry = min(self._every, worker.settings.progress_interval_seconds)
        self._wait = self._every
        self._last = 0.0
        self.lapsed = False
        self.renew(worker.monotonic())

    def due(self, now: float) -> bool:
        return now - self._last >= self._wait

    def renew(self, now: float) -> None:
        self._last = now
        if self._worker.hold(self.delivery):
            self.lapsed, self._wait = False, self._every
        elif self.lapsed:
            self._wait = min(self._every, 2 * self._wait)
        else:
            self.lapsed, self._wait = True, self._first_retry


class Checkpointer:
    """``ctx.report`` for one run: saves state, progress and heartbeat at most once per
    interval (renewing the message hold with the save when it is due), and stops the run
    when it was cancelled, lost its lease, or must yield before the invocation's timeout,
    or reported a state it cannot save.

    A save also sets the job's progress mark (published as ``job.progress``,
    chalicelib.events) when the progress moved since the last mark (at the run's start:
    since the checkpoint it resumes from) and at least PROGRESS_WINDOW_MS of the worker's
    clock passed since the mark, which it knows from the claimed job, then from its own
    saves: the same single write, no read. A run that keeps moving its progress is so
    published about every PROGRESS_WINDOW_MS, never more often, across runs too."""

    def __init__(
        self,
        worker: Worker,
        job: Job,
        owner: str,
        remaining_ms: Callable[[], int],
        hold: MessageHold | None = None,
    ) -> None:
        self._worker = worker
        self._job = job
        self._owner = owner
        self._remaining_ms = remaining_ms
        self._hold = hold
        self._interval = worker.settings.progress_interval_seconds
        self._margin_ms = worker.settings.timeout_margin_seconds * 1000
        self._last = worker.monotonic()
        self._mark = job.progress_mark
        self._marked_progress = job.progress

    def __call__(self, progress: float, state: Any) -> None:
        now = self._worker.monotonic()
        if self._remaining_ms() < self._margin_ms:
            self._stop_before_timeout(now, progress, state)
        if now - self._last >= self._interval:
            self._last = now
            self.save(progress, state)
            self._renew_hold(now)

    def _renew_hold(self, now: float) -> None:
        if self._hold is not None and self._hold.due(now):
            self._hold.renew(now)

    def _stop_before_timeout(self, now: float, progress: float, state: Any) -> NoReturn:
        """Less than the timeout margin is left: checkpoint, renew the hold if due, and
        stop the run (the worker then releases it as a continuation). Each call is made
        only while the time left covers its worst case (Worker.time_for_a_call); one that
        does not fit is skipped, and the continuation resumes from the checkpoint before."""
        if self._worker.time_for_a_call(self._remaining_ms):
            self._last = now
            self.save(progress, state)
        if self._worker.time_for_a_call(self._remaining_ms):
            self._renew_hold(now)
        raise _OutOfTime

    def save(self, progress: float, state: Any) -> None:
        job, worker = self._job, self._worker
        try:
            text = state_json(state)
        except ValueError as error:
            raise _BadState(str(error)) from None
        progress = min(1.0, max(0.0, float(progress)))
        now_ms = epoch_ms(worker.now())
        mark = now_ms if self._mark_due(progress, now_ms) else None
        if mark is not None:
            # Counted as written before the call: a write whose outcome is unknown (it
            # raised, and the kind went on) can then only widen the spacing, never halve it.
            self._mark, self._marked_progress = mark, progress
        saved = worker.table.checkpoint(
            job.job_id, self._owner, text, progress, worker.lease_until_ms(now_ms), mark
        )
        if saved is None:
            current = worker.table.get(job.job_id)
            if current is not None and current.status is JobStatus.CANCELLED:
                raise _Cancelled
            raise _LostLease

    def _mark_due(self, progress: float, now_ms: int) -> bool:
        """Whether a save of ``progress`` at ``now_ms`` is published as the job's progress."""
        if progress == self._marked_progress:
            return False
        return self._mark is None or now_ms - self._mark >= PROGRESS_WINDOW_MS


@dataclass
class Worker:
    table: JobTable
    queue: JobQueue
    delay_queue: DelayQueue
    settings: Settings
    now: Callable[[], datetime] = field(default=utc_now)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)
    # Per lane: the largest SentTimestamp this process received, and what it last recorded
    # (when).
    _watermark_seen: dict[int, int] = field(default_factory=dict, init=False)
    _watermark_recorded: dict[int, int] = field(default_factory=dict, init=False)
    _watermark_recorded_at: dict[int, float] = field(default_factory=dict, init=False)

    def lease_until_ms(self, now_ms: int | None = None) -> int:
        """The lease a write at ``now_ms`` (default: now) renews to."""
        now_ms = epoch_ms(self.now()) if now_ms is None else now_ms
        return now_ms + self.settings.stale_after_seconds * 1000

    # --- the job queue ----------------------------------------------------------------

    def process_message(
        self,
        body: str,
        delivery: Delivery | None = None,
        remaining_ms: Callable[[], int] | None = None,
    ) -> Outcome:
        """Run the job ``body`` names, at most once at a time, and record how it ended.

        ``delivery`` (from the event source's record) lets the run hold its message while
        it runs and advances the watermark; ``remaining_ms`` is the invocation's time left
        (Lambda's context); without it, the run assumes Lambda's longest timeout.
        """
        try:
            message = parse_message(body)
        except PoisonMessage as error:
            if delivery is not None:
                self._observe(delivery, lane=0)  # where message_group sent it
            logger.error("Dropping a poison message", reason=str(error))
            return Outcome.POISON
        if delivery is not None:
            self._observe(delivery, message.lane)
        with job_logging(message.job_id):
            return self._run(message, delivery, remaining_ms or (lambda: MAX_INVOCATION_MS))

    def _run(
        self, message: Message, delivery: Delivery | None, remaining_ms: Callable[[], int]
    ) -> Outcome:
        owner = uuid.uuid4().hex
        try:
            job = self._claim_message(message, owner)
            if job is None:
                return self._not_claimed(message.job_id)
        except Exception as error:
            settled = self._unclaimable(message, delivery, error)
            if settled is None:
                raise
            return settled
        hold = None if delivery is None else MessageHold(self, delivery)
        try:
            outcome = self._run_held(message, job, owner, hold, remaining_ms)
        except Exception:
            if hold is not None and hold.lapsed:
                self._hold_lapsed(hold.delivery, remaining_ms)
            raise
        if hold is not None and hold.lapsed:
            self._delete_lapsed(hold.delivery, remaining_ms)
        return outcome

    def _run_held(
        self,
        message: Message,
        job: Job,
        owner: str,
        hold: MessageHold | None,
        remaining_ms: Callable[[], int],
    ) -> Outcome:
        """Run a claimed job whose message is held (``hold``: None without a delivery)."""
        if job.attempts > self.settings.max_attempts:
            # Only reachable through lease take-overs: its workers keep dying.
            return self._fail(job, owner, self._give_up_message(job))
        kind = KINDS.get(job.kind)
        if kind is None:
            return self._fail(job, owner, f"Unknown job kind {job.kind!r}.")

        logger.info(
            "Job started",
            attempt=job.attempts,
            kind=job.kind,
            state=job.state,
            progress=job.progress,
            n=job.n,
        )
        count(Metric.STARTED)
        if job.started_at is not None and job.attempts == 1 and not message.resume:
            waited = job.started_at - job.created_at
            milliseconds(Metric.QUEUE_WAIT, waited.total_seconds() * 1000)
        started = self.monotonic()
        try:
            return self._run_claimed(job, owner, kind, remaining_ms, hold)
        finally:
            milliseconds(Metric.RUN_DURATION, (self.monotonic() - started) * 1000)

    def _claim_message(self, message: Message, owner: str) -> Job | None:
        """Claim the job ``message`` names, under its kind (looked up if the message does
        not name it, or names another)."""
        kind, client = message.kind, message.client
        if kind is None:
            existing = self.table.get(message.job_id)
            if existing is None:
                return None
            kind, client = existing.kind, existing.client
        job = self._claim(message.job_id, kind, client, owner, message.resume)
        if job is None and message.kind is not None:
            existing = self.table.get(message.job_id)
            if existing is not None and (existing.kind, existing.client) != (kind, client):
                logger.warning("The message names another kind or client", kind=kind)
                job = self._claim(
                    message.job_id, existing.kind, existing.client, owner, message.resume
                )
        return job

    def _claim(self, job_id: str, kind: str, client: str, owner: str, resume: bool) -> Job | None:
        lease_ms = self.settings.stale_after_seconds * 1000
        return self.table.claim(
            job_id, kind, owner, self.now(), lease_ms, resume=resume, client=client
        )

    def hold(self, delivery: Delivery) -> bool:
        """Keep the run's message hidden for the message hold from now; whether it was. A
        failure, of any kind, is only logged: the run goes on, and its next checkpoint
        tries again (MessageHold; the message stays hidden meanwhile for what its last
        hold, or the queue's visibility timeout, left)."""
        try:
            self.queue.hold(delivery.receipt_handle, self.settings.message_hold_seconds)
        except StoreUnavailable as error:
            logger.warning("Could not hold the job's message", reason=str(error))
        except Exception:
            logger.exception("Could not hold the job's message")
        else:
            return True
        return False

    def _delete_lapsed(self, delivery: Delivery, remaining_ms: Callable[[], int]) -> None:
        """The run ended (the invocation returns, so the event source will delete its
        message) while its hold had lapsed: SQS was unreachable at the last hold, and may
        still be, so the event source's delete may fail too, and the message would then
        stay hidden for the queue's visibility timeout from its receive (the worker's
        timeout), holding every job behind it. Delete it here, as soon as SQS answers
        (``_while_unreachable``): the lane is blocked anyway while SQS is down, and the
        message is gone within seconds of its return. The event source's own delete
        afterwards finds it gone, whatever SQS answers it (SQS API Reference,
        "DeleteMessage": a receipt handle that is not the message's latest still
        succeeds; the emulator answers success for a deleted message's handle)."""
        self._while_unreachable(
            self.queue.delete,
            delivery,
            remaining_ms,
            "delete the job's message",
            "Deleted the job's message, whose hold had lapsed",
        )

    def _hold_lapsed(self, delivery: Delivery, remaining_ms: Callable[[], int]) -> None:
        """The run raises (SQS delivers its message again) while its hold had lapsed: hold
        it once more as soon as SQS answers, so that it comes back after the message hold
        (when the lease has expired, for a take-over), not after the queue's visibility
        timeout from its receive."""
        seconds = self.settings.message_hold_seconds
        self._while_unreachable(
            lambda handle: self.queue.hold(handle, seconds),
            delivery,
            remaining_ms,
            "hold the job's message",
            "Held the job's message again, whose hold had lapsed",
        )

    def _while_unreachable(
        self,
        call: Callable[[str], None],
        delivery: Delivery,
        remaining_ms: Callable[[], int],
        what: str,
        done: str,
    ) -> None:
        """Make ``call`` with the delivery's receipt handle, trying again
        LAPSED_RETRY_SECONDS apart while SQS is unreachable (StoreUnavailable), each try
        only while the invocation's time left covers it (time_for_a_call). SQS refusing
        the request itself (StoreRefused: a receipt handle it does not know) ends the
        tries at once. When the time runs out first, the message comes back after the
        queue's visibility timeout, which ends about when the invocation's timeout does."""
        tries_left = self.time_for_a_call(remaining_ms)
        while tries_left:
            try:
                call(delivery.receipt_handle)
            except StoreRefused as error:
                logger.warning(f"SQS refused to {what}", reason=str(error))
                return
            except StoreUnavailable as error:
                logger.warning(f"Could not {what} yet", reason=str(error))
            else:
                logger.info(done)
                return
            tries_left = self.time_for_a_call(remaining_ms, after_seconds=LAPSED_RETRY_SECONDS)
            if tries_left:
                self.sleep(LAPSED_RETRY_SECONDS)
        logger.warning(f"No time left to {what}; it comes back by itself")

    # --- a message that fails before its run starts ----------------------------------

    def _unclaimable(
        self, message: Message, delivery: Delivery | None, error: Exception
    ) -> Outcome | None:
        """Settle a message whose handling failed before its run started (the claim, the
        lookups, reading a job that was not free): None when the message must come back,
        with its visibility shortened to the claim backoff, so the caller re-raises.

        StoreUnavailable (AWS trouble) may pass: it backs off on every delivery, for at
        most the claim backoff's cap; chalicelib.queue.MAX_RECEIVE_COUNT outlasts a
        15-minute outage. Anything else (an item that is not a job this code can read) no
        retry will change: it backs off until the UNREADABLE_DELIVERIES-th delivery, which
        fails the job without reading it and returns. The lane waits 2 + 4 seconds for
        it, plus its handling; then the jobs behind it run.
        """
        if not isinstance(error, StoreUnavailable):
            logger.exception("The job's record cannot be read")
            if delivery is not None and delivery.receive_count >= UNREADABLE_DELIVERIES:
                try:
                    return self._fail_unreadable(message.job_id, error)
                except StoreUnavailable as failed:
                    logger.warning("Could not fail the unreadable job", reason=str(failed))
        if delivery is not None:
            self._back_off(delivery, error)
        return None

    def _fail_unreadable(self, job_id: str, error: Exception) -> Outcome:
        """Fail a job whose record cannot be read, writing only what needs no parse of
        it (JobTable.fail_unreadable); a job that is gone or already final is
        acknowledged."""
        reason = f"The job's record cannot be read: {type(error).__name__}: {error}"
        if not self.table.fail_unreadable(job_id, reason, self.now()):
            logger.info("Unreadable job is gone or finished; message acknowledged", job_id=job_id)
            return Outcome.DUPLICATE
        logger.error("Job failed", job_id=job_id, error=reason)
        count(Metric.FAILED)
        return Outcome.FAILED

    def _back_off(self, delivery: Delivery, error: Exception) -> None:
        """Let the message come back after the claim backoff, not after the queue's
        visibility timeout (the worker's timeout), which would hold back every job behind
        it. SQS refusing is only logged: the message then comes back after that timeout."""
        seconds = claim_backoff(delivery.receive_count, self.settings.claim_backoff_cap_seconds)
        try:
            self.queue.hold(delivery.receipt_handle, seconds)
        except StoreUnavailable as refused:
            logger.warning("Could not shorten the message's visibility", reason=str(refused))
        else:
            logger.warning(
                "Claim failed; the message comes back soon",
                seconds=seconds,
                receive_count=delivery.receive_count,
                reason=f"{type(error).__name__}: {error}",
            )

    def _run_claimed(
        self,
        job: Job,
        owner: str,
        kind: Kind[Any, Any],
        remaining_ms: Callable[[], int],
        hold: MessageHold | None,
    ) -> Outcome:
        try:
            input = kind.make_input(job.input)
        except TypeError as error:
            # Stored input the declaration no longer accepts: no retry can change that.
            return self._fail(job, owner, f"The input does not fit kind {kind.name}: {error}")
        checkpointer = Checkpointer(self, job, owner, remaining_ms, hold)
        settle = functools.partial(self._after_failure, job, owner)
        delivery = None if hold is None else hold.delivery
        try:
            with watched_run(self, job.job_id, delivery, checkpointer, settle) as report:
                returned = kind.run(input, Context(state=job.state, report=report))
        except _BadState as error:
            return self._fail(job, owner, f"Kind {kind.name}: {error}.")
        except _Cancelled:
            logger.info("Job cancelled while running; stopped")
            return Outcome.CANCELLED
        except _LostLease:
            logger.warning("Lease lost to another run; stopped")
            return Outcome.DUPLICATE
        except _OutOfTime:
            return self._continue_later(job, owner, remaining_ms)
        except StoreUnavailable:
            raise  # AWS trouble, not the job's: the held message comes back for another run
        except Exception as error:  # the job's own code failed
            logger.exception("Job attempt failed", attempt=job.attempts)
            return self._after_failure(job, owner, f"{type(error).__name__}: {error}")

        try:
            result = kind.result_json(returned)
        except ValueError as error:
            return self._fail(job, owner, f"Kind {kind.name}: {error}.")
        if self.table.succeed(job, owner, result, self.now()) is None:
            return self._not_claimed(job.job_id)
        logger.info("Job succeeded", result=result)
        count(Metric.SUCCEEDED)
        return Outcome.SUCCEEDED

    # --- the out-of-time path -----------------------------------------------------------

    def time_for_a_call(self, remaining_ms: Callable[[], int], after_seconds: float = 0) -> bool:
        """Whether the invocation's time left (``after_seconds`` from now) covers one more
        AWS call of the out-of-time path at its worst: the timeout margin holds
        OUT_OF_TIME_CALLS of them."""
        share_ms = self.settings.timeout_margin_seconds * 1000 / OUT_OF_TIME_CALLS
        return remaining_ms() - after_seconds * 1000 >= share_ms

    def _before_timeout(self, remaining_ms: Callable[[], int], call: str) -> None:
        """NoTimeLeft unless the time left covers ``call`` at its worst: ending the
        invocation now is better than Lambda stopping it inside the call."""
        if not self.time_for_a_call(remaining_ms):
            raise NoTimeLeft(f"no time left to {call} before the invocation's timeout")

    def _continue_later(self, job: Job, owner: str, remaining_ms: Callable[[], int]) -> Outcome:
        """The checkpoint is saved; queue the job again, at the tail of the job queue, to
        continue in a new invocation. Each call is made only while the time left covers
        it; otherwise NoTimeLeft ends the invocation, and the run's message comes back
        after its hold (a resume message continues the job; any other finds it released
        or still leased, and the recovery sweep or the lease's expiry takes over)."""
        self._before_timeout(remaining_ms, "release the job")
        released = self.table.release(job, owner, epoch_ms(self.now()), resume=True)
        if released is None:
            self._before_timeout(remaining_ms, "read the job")
            return self._not_claimed(job.job_id)
        self._before_timeout(remaining_ms, "send the continuation")
        # A new logical send: a fresh deduplication id.
        self.queue.send(to_message(job, resume=True), uuid.uuid4().hex)
        logger.info("Checkpointed before the timeout; continues in the next invocation")
        return Outcome.CONTINUED

    def _after_failure(self, job: Job, owner: str, error: str) -> Outcome:
        if job.attempts >= self.settings.max_attempts:
            return self._fail(job, owner, error)
        delay = self.settings.retry_delay_seconds(job.attempts)
        # Its message will be due on the job queue when the delay queue lets it go.
        due_ms = epoch_ms(self.now()) + delay * 1000
        released = self.table.release(job, owner, due_ms, resume=False, last_error=error)
        if released is None:
            return self._not_claimed(job.job_id)
        self.delay_queue.send(to_message(job), delay_seconds=delay)
        logger.info("Job will be retried", delay_seconds=delay, attempt=job.attempts)
        count(Metric.RETRIED)
        return Outcome.RETRYING

    def _fail(self, job: Job, owner: str, error: str) -> Outcome:
        if self.table.fail(job, owner, error, self.now()) is None:
            return self._not_claimed(job.job_id)
        logger.error("Job failed", error=error)
        count(Metric.FAILED)
        return Outcome.FAILED

    def _give_up_message(self, job: Job) -> str:
        last = f" Last error: {job.last_error}" if job.last_error else ""
        return (
            f"Gave up after {self.settings.max_attempts} attempts: the worker stopped "
            f"without finishing each time.{last}"
        )

    def _not_claimed(self, job_id: str) -> Outcome:
        existing = self.table.get(job_id)
        if existing is None:
            logger.error("Dropping a poison message: no such job", job_id=job_id)
            return Outcome.POISON
        if existing.status is JobStatus.CANCELLED:
            logger.info("Job is cancelled; message acknowledged", job_id=job_id)
            return Outcome.CANCELLED
        logger.info("Duplicate delivery acknowledged", job_id=job_id, status=existing.status.value)
        return Outcome.DUPLICATE

    def _observe(self, delivery: Delivery, lane: int) -> None:
        """Advance ``lane``'s watermark: the largest SentTimestamp received from the lane's
        message group.

        FIFO delivers each message group in send order, so every message of the lane sent
        well before it has been received. Recorded at most once per
        WATERMARK_INTERVAL_SECONDS per process and lane (it only needs to be roughly
        current: the sweep allows JOBS_LOST_AFTER_SECONDS of slack), never lowered; a
        failed write is only logged.
        """
        seen = max(self._watermark_seen.get(lane, 0), delivery.sent_at_ms)
        self._watermark_seen[lane] = seen
        now = self.monotonic()
        recorded_at = self._watermark_recorded_at.get(lane)
        recent = recorded_at is not None and now - recorded_at < WATERMARK_INTERVAL_SECONDS
        if recent or seen <= self._watermark_recorded.get(lane, 0):
            return
        try:
            self.table.raise_watermark(seen, lane=lane)
        except StoreUnavailable as error:
            logger.warning("Could not record the watermark", lane=lane, reason=str(error))
            return
        self._watermark_recorded[lane], self._watermark_recorded_at[lane] = seen, now

    # --- the delay queue --------------------------------------------------------------

    def forward(self, body: str, message_id: str) -> Outcome:
        """Put a message whose delay ended at the tail of the job queue, unchanged.

        The delay queue's message id is the deduplication id: stable across retries of
        this forward, so a forward that is delivered twice sends once.

        A job that runs later is never put on the job queue before its run_at: its
        message (which names it) that comes back more than FORWARD_WAIT_MS early (its
        wait was longer than SQS's longest delay) is delayed again; one that comes back
        less early is forwarded once the rest has passed (DelaySeconds is whole seconds).
        """
        run_at_ms = message_run_at_ms(body)
        if run_at_ms is not None:
            now_ms = epoch_ms(self.now())
            if run_at_ms - now_ms > FORWARD_WAIT_MS:
                self.delay_queue.send(body, delay_until(run_at_ms, now_ms))
                return Outcome.DELAYED
            if run_at_ms > now_ms:
                self.sleep((run_at_ms - now_ms) / 1000)
        self.queue.send(body, deduplication_id=message_id)
        return Outcome.FORWARDED

    # --- the dead-letter queue ----------------------------------------------------------

    def process_dead_letter(self, body: str, receive_count: int) -> Outcome:
        """Handle a message SQS gave up on: send a job that never started again (it only
        waited too long, at most MAX_DEAD_LETTER_REDRIVES times); fail any other unfinished
        job, so that it does not stay unfinished. A job whose record cannot be read is
        failed without reading it (never raised for again and again); only an AWS failure
        raises (StoreUnavailable), so SQS delivers the dead letter again."""
        try:
            message = parse_message(body)
        except PoisonMessage as error:
            logger.error("Dropping a dead-lettered poison message", reason=str(error))
            return Outcome.POISON
        with job_logging(message.job_id):
            try:
                return self._settle_dead_letter(message, receive_count)
            except StoreUnavailable:
                raise
            except Exception as error:
                logger.exception("The dead-lettered job's record cannot be read")
                return self._fail_unreadable(message.job_id, error)

    def _settle_dead_letter(self, message: Message, receive_count: int) -> Outcome:
        job = self.table.get(message.job_id)
        if job is None:
            logger.error("Dead-lettered message names no job", job_id=message.job_id)
            return Outcome.POISON
        if job.status is JobStatus.QUEUED and job.attempts == 0:
            redriven = self.table.redrive_dead_letter(
                job, epoch_ms(self.now()), MAX_DEAD_LETTER_REDRIVES
            )
            if redriven is not None:
                self._send_redriven(redriven)
                return Outcome.REDRIVEN
            # Refused: the re-drive cap was reached, or the job started meanwhile. A job
            # read as never started that is running now runs from another message (a
            # sweep's re-drive), which its run acknowledges: this dead letter is stale.
            current = self.table.get(job.job_id)
            if current is not None and current.status is not JobStatus.QUEUED:
                logger.info(
                    "Dead letter for a job that started meanwhile",
                    job_id=job.job_id,
                    status=current.status.value,
                )
                return Outcome.DUPLICATE
        last = f" Last error: {job.last_error}" if job.last_error else ""
        reason = (
            f"The job's message was dead-lettered after {receive_count} deliveries "
            f"without the job finishing.{last}"
        )
        if self.table.fail_unfinished(job, reason, self.now()) is None:
            logger.info(
                "Dead letter for a finished job", job_id=job.job_id, status=job.status.value
            )
            return Outcome.DUPLICATE
        logger.error("Job failed: its message was dead-lettered", job_id=job.job_id, error=reason)
        count(Metric.FAILED)
        return Outcome.FAILED

    def _send_redriven(self, job: Job) -> None:
        """Send a re-driven dead letter's job again. The re-drive is already counted and
        the job marked due now, so a send that fails (SQS unavailable) is only logged: the
        recovery sweep sends it after JOBS_LOST_AFTER_SECONDS. Raising instead would bring
        the dead letter back to count re-drives that never happened, and after
        MAX_DEAD_LETTER_REDRIVES an SQS outage would fail a job that never started."""
        try:
            self.queue.send(to_message(job, resume=job.resume), uuid.uuid4().hex)
        except StoreUnavailable as error:
            logger.warning(
                "Dead-lettered job never started; the recovery sweep will send it again",
                job_id=job.job_id,
                reason=str(error),
            )
            return
        logger.warning(
            "Dead-lettered job never started; sent again", job_id=job.job_id, redrives=job.redrives
        )

    # --- jobs that run later -------------------------------------------------------------

    def release_due(self) -> list[str]:
        """Send the message of every job waiting in the later index whose run_at is
        within RELEASE_AHEAD_SECONDS to the delay queue, delayed until its run_at (to
        the second); return their ids.

        Run every minute (with the recovery sweep). It reads only the soonest jobs, at
        most RELEASE_LIMIT_PER_SHARD per shard, so its cost does not grow with the jobs
        waiting. Each job is first taken out of the index with its message due at its
        run_at (a conditional write: still queued and waiting, so a cancelled job is
        never released, and concurrent or repeated releases send it once), then sent. A
        crash between the two leaves it due, and the recovery sweep sends it after its
        run_at plus JOBS_LOST_AFTER_SECONDS: late, never early, never twice. A send that
        fails puts its job back in the index first. An AWS failure raises: the next run
        reads the jobs not yet released again. A job whose
        record cannot be read is failed, and the others are still released.
        """
        before = self.now() + timedelta(seconds=RELEASE_AHEAD_SECONDS)
        released: list[str] = []
        for entry in self.table.due_later(before, RELEASE_LIMIT_PER_SHARD):
            release = functools.partial(self._release_one, entry)
            if self._sweep_one(entry.job_id, release):
                released.append(entry.job_id)
        return released

    def _release_one(self, entry: LaterEntry) -> bool:
        run_at_ms = epoch_ms(datetime.fromisoformat(entry.run_at))
        job = self.table.release_later(entry.job_id, entry.run_at, run_at_ms, entry.lane)
        if job is None:  # cancelled, finished or released meanwhile
            return False
        try:
            self.delay_queue.send(later_message(job), delay_until(run_at_ms, epoch_ms(self.now())))
        except StoreUnavailable:
            # Back to waiting, so the next release sends it ahead of its time; if this
            # fails too, the recovery sweep sends it after its time.
            self.table.hold_later(entry.job_id, entry.run_at, run_at_ms)
            raise
        logger.info("Job released to run at its time", job_id=job.job_id, run_at=entry.run_at)
        return True

    # --- recovery ---------------------------------------------------------------------

    def recover_stalled(self) -> list[str]:
        """Send again the message of every job that lost it; return their ids.

        Run periodically (every minute on AWS). It reads only jobs that need it, so its
        cost does not grow with the backlog:

        - queued jobs whose message was due before their lane's cutoff (the lane's
          partitions of the pending index): the lane's watermark minus
          JOBS_LOST_AFTER_SECONDS, or now minus it when the job queue is empty. Jobs
          simply waiting their turn in their lane are never sent twice; each lost one at
          most once per JOBS_LOST_AFTER_SECONDS. A lost message of a lane that receives
          nothing later while other lanes keep the queue busy is found once its lane
          receives again or the queue empties.
        - running jobs (a few at most) whose lease expired more than the message hold plus
          JOBS_LOST_AFTER_SECONDS ago: their run died and its message is gone too (a
          crashed run's message normally comes back by itself within the hold).

        Each job is settled on its own: one whose record cannot be read is failed without
        parsing it (JobTable.fail_unreadable) and logged, and the sweep goes on with the
        others. An AWS failure (StoreUnavailable) raises: the next run reads the same jobs
        again, and what this one settled is not settled twice (conditional writes).
        """
        now_ms = epoch_ms(self.now())
        recovered: list[str] = []
        empty = self.queue.counts().empty
        for lane in range(self.settings.lanes):
            cutoff = self._lost_cutoff(now_ms, lane, empty)
            if cutoff is None:
                continue
            for entry in self.table.lost_pending(cutoff, SWEEP_LIMIT_PER_SHARD, lane=lane):
                redrive = functools.partial(self._redrive_lost, entry, now_ms)
                if self._sweep_one(entry.job_id, redrive):
                    recovered.append(entry.job_id)
        hold_ms = self.settings.message_hold_seconds * 1000
        dead_before = now_ms - hold_ms - self.settings.lost_after_seconds * 1000
        for job in self.table.running(SWEEP_LIMIT_PER_SHARD):
            if isinstance(job, UnreadableJob):
                if job.lease_until is None or job.lease_until < dead_before:
                    with job_logging(job.job_id):
                        logger.error("The job's record cannot be read", reason=repr(job.error))
                        self._fail_unreadable(job.job_id, job.error)
                continue
            requeue = functools.partial(self._requeue_dead, job, dead_before, now_ms)
            if self._sweep_one(job.job_id, requeue):
                recovered.append(job.job_id)
        return recovered

    def _sweep_one(self, job_id: str, settle: Callable[[], bool]) -> bool:
        """``settle()`` one job of the sweep: whether it was sent again. A job whose record
        turns out unreadable (the write's returned item cannot be parsed) is failed
        without reading it; StoreUnavailable raises."""
        with job_logging(job_id):
            try:
                return settle()
            except StoreUnavailable:
                raise
            except Exception as error:
                logger.exception("The job's record cannot be read")
                self._fail_unreadable(job_id, error)
                return False

    def _redrive_lost(self, entry: PendingEntry, now_ms: int) -> bool:
        job = self.table.redrive_pending(entry.job_id, entry.pending_at, now_ms)
        if job is None:  # claimed, finished or re-driven meanwhile
            self.table.clear_pending(entry.job_id, entry.pending_at)
            return False
        self.queue.send(to_message(job, resume=job.resume), uuid.uuid4().hex)
        logger.warning("Job's message was lost; sent again", job_id=job.job_id, resume=job.resume)
        return True

    def _requeue_dead(self, job: Job, dead_before: int, now_ms: int) -> bool:
        if job.status is not JobStatus.RUNNING:
            # Listed as running by an item changed by code older than its index keys.
            self.table.rewrite_derived(job)
            return False
        if job.lease_until is None or job.lease_until >= dead_before:
            return False
        requeued = self.table.requeue_running(job, now_ms)
        if requeued is None:
            return False  # it moved on meanwhile, or another sweep took it
        self.queue.send(to_message(requeued), uuid.uuid4().hex)
        logger.warning(
            "Job's run died and its message is gone; queued again",
            job_id=job.job_id,
            progress=job.progress,
        )
        return True

    def _lost_cutoff(self, now_ms: int, lane: int, queue_empty: bool) -> int | None:
        """Jobs of ``lane`` whose message was due before this (epoch ms) have lost it; None
        if no message of the lane can be known lost yet (messages wait, and none of the
        lane was received so far)."""
        lost_after_ms = self.settings.lost_after_seconds * 1000
        if queue_empty:
            return now_ms - lost_after_ms
        watermark = self.table.watermark(lane)
        return None if watermark is None else watermark - lost_after_ms
