"""The worker's use cases: run the job a message names, consume dead letters, and
re-drive jobs whose worker died.

A run owns its job through a lease (claim, then checkpoints that renew it). Everything a
retry cannot change is acknowledged (returns): a poison message, a duplicate delivery, a
cancelled job. Only a failed AWS call raises (StoreUnavailable), so SQS delivers again.

Failure paths, and where they end::

    job raises            -> queued again after a backoff, up to max_attempts, then failed
    invocation near its   -> checkpoint, queued again as a continuation (not an attempt);
      timeout                a job longer than one invocation completes across several
    worker dies           -> lease expires; the recovery sweep queues the job again and
                             the next run resumes from the last checkpoint
    message dead-lettered -> the DLQ consumer fails the job, so nothing stays unfinished
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from chalicelib.config import Settings
from chalicelib.errors import PoisonMessage, StoreUnavailable
from chalicelib.jobs import Job, JobStatus, epoch_ms, parse_message, to_message, utc_now
from chalicelib.kinds import KINDS, JobContext, JobFunction
from chalicelib.observability import Metric, count, job_logging, logger, milliseconds
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable

# Lambda's maximum timeout: the remaining time when no Lambda context is given.
MAX_INVOCATION_MS = 900_000


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # the job ran to the end; its result is recorded
    FAILED = "failed"  # the job is failed for good; the error is recorded
    RETRYING = "retrying"  # this attempt raised; the job is queued again after a backoff
    CONTINUED = "continued"  # checkpointed before the timeout; queued to continue
    CANCELLED = "cancelled"  # the job was cancelled while this run had it; it stopped
    DUPLICATE = "duplicate"  # the job was not free (running elsewhere or finished)
    POISON = "poison"  # the message can never be processed: logged and dropped


class StopRun(BaseException):
    """Ends a run from inside ``ctx.report``. A BaseException, like KeyboardInterrupt,
    so that a job kind's ``except Exception`` cannot swallow it."""


class _Cancelled(StopRun):
    pass


class _LostLease(StopRun):
    pass


class _OutOfTime(StopRun):
    pass


class Checkpointer:
    """``ctx.report`` for one run: saves position, progress and heartbeat at most once per
    interval, and stops the run when it was cancelled, lost its lease, or must yield
    before the invocation's timeout."""

    def __init__(
        self,
        worker: Worker,
        job: Job,
        owner: str,
        remaining_ms: Callable[[], int],
    ) -> None:
        self._worker = worker
        self._job = job
        self._owner = owner
        self._remaining_ms = remaining_ms
        self._interval = worker.settings.progress_interval_seconds
        self._margin_ms = worker.settings.timeout_margin_seconds * 1000
        self._last = worker.monotonic()

    def __call__(self, done: int) -> None:
        now = self._worker.monotonic()
        out_of_time = self._remaining_ms() < self._margin_ms
        if out_of_time or now - self._last >= self._interval:
            self._last = now
            self.save(done)
        if out_of_time:
            raise _OutOfTime

    def save(self, done: int) -> None:
        job, worker = self._job, self._worker
        progress = done / job.n if job.n else 1.0
        saved = worker.table.checkpoint(
            job.job_id, self._owner, done, progress, worker.lease_until_ms()
        )
        if saved is None:
            current = worker.table.get(job.job_id)
            if current is not None and current.status is JobStatus.CANCELLED:
                raise _Cancelled
            raise _LostLease


@dataclass
class Worker:
    table: JobTable
    queue: JobQueue
    settings: Settings
    now: Callable[[], datetime] = field(default=utc_now)
    monotonic: Callable[[], float] = field(default=time.monotonic)

    def lease_until_ms(self, extra_seconds: float = 0) -> int:
        return epoch_ms(self.now()) + int(
            (self.settings.stale_after_seconds + extra_seconds) * 1000
        )

    # --- the job queue ----------------------------------------------------------------

    def process_message(self, body: str, remaining_ms: Callable[[], int] | None = None) -> Outcome:
        """Run the job ``body`` names, at most once at a time, and record how it ended.

        ``remaining_ms`` is the invocation's time left (Lambda's context); without it, the
        run assumes Lambda's longest timeout.
        """
        try:
            message = parse_message(body)
        except PoisonMessage as error:
            logger.error("Dropping a poison message", reason=str(error))
            return Outcome.POISON
        with job_logging(message.job_id):
            return self._run(
                message.job_id, message.resume, remaining_ms or (lambda: MAX_INVOCATION_MS)
            )

    def _run(self, job_id: str, resume: bool, remaining_ms: Callable[[], int]) -> Outcome:
        owner = uuid.uuid4().hex
        job = self.table.claim(
            job_id, owner, self.now(), self.settings.stale_after_seconds * 1000, resume=resume
        )
        if job is None:
            return self._not_claimed(job_id)
        if job.attempts > self.settings.max_attempts:
            # Only reachable through lease take-overs: its workers keep dying.
            return self._fail(job, owner, self._give_up_message(job))
        function = KINDS.get(job.kind)
        if function is None:
            return self._fail(job, owner, f"Unknown job kind {job.kind!r}.")

        logger.info("Job started", attempt=job.attempts, position=job.position, n=job.n)
        count(Metric.STARTED)
        if job.started_at is not None and job.attempts == 1 and not resume:
            waited = job.started_at - job.created_at
            milliseconds(Metric.QUEUE_WAIT, waited.total_seconds() * 1000)
        started = self.monotonic()
        try:
            return self._run_claimed(job, owner, function, remaining_ms)
        finally:
            milliseconds(Metric.RUN_DURATION, (self.monotonic() - started) * 1000)

    def _run_claimed(
        self, job: Job, owner: str, function: JobFunction, remaining_ms: Callable[[], int]
    ) -> Outcome:
        checkpointer = Checkpointer(self, job, owner, remaining_ms)
        try:
            result = function(job.n, JobContext(start=job.position, report=checkpointer))
        except _Cancelled:
            logger.info("Job cancelled while running; stopped")
            return Outcome.CANCELLED
        except _LostLease:
            logger.warning("Lease lost to another run; stopped")
            return Outcome.DUPLICATE
        except _OutOfTime:
            return self._continue_later(job, owner)
        except StoreUnavailable:
            raise  # AWS trouble, not the job's: let SQS deliver the message again
        except Exception as error:  # the job's own code failed
            logger.exception("Job attempt failed", attempt=job.attempts)
            return self._after_failure(job, owner, f"{type(error).__name__}: {error}")

        if self.table.succeed(job.job_id, owner, result, self.now()) is None:
            return self._not_claimed(job.job_id)
        logger.info("Job succeeded", result=result)
        count(Metric.SUCCEEDED)
        return Outcome.SUCCEEDED

    def _continue_later(self, job: Job, owner: str) -> Outcome:
        """The checkpoint is saved; queue the job again to continue in a new invocation."""
        if self.table.release(job.job_id, owner, self.lease_until_ms(), resume=True) is None:
            return self._not_claimed(job.job_id)
        self.queue.send(to_message(job.job_id, resume=True))
        logger.info("Checkpointed before the timeout; continues in the next invocation")
        return Outcome.CONTINUED

    def _after_failure(self, job: Job, owner: str, error: str) -> Outcome:
        if job.attempts >= self.settings.max_attempts:
            return self._fail(job, owner, error)
        delay = self.settings.retry_delay_seconds(job.attempts)
        released = self.table.release(
            job.job_id, owner, self.lease_until_ms(delay), resume=False, last_error=error
        )
        if released is None:
            return self._not_claimed(job.job_id)
        self.queue.send(to_message(job.job_id), delay_seconds=delay)
        logger.info("Job will be retried", delay_seconds=delay, attempt=job.attempts)
        count(Metric.RETRIED)
        return Outcome.RETRYING

    def _fail(self, job: Job, owner: str, error: str) -> Outcome:
        if self.table.fail(job.job_id, owner, error, self.now()) is None:
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

    # --- the dead-letter queue ----------------------------------------------------------

    def process_dead_letter(self, body: str, receive_count: int) -> Outcome:
        """Fail the job whose message SQS gave up on, so it does not stay unfinished."""
        try:
            message = parse_message(body)
        except PoisonMessage as error:
            logger.error("Dropping a dead-lettered poison message", reason=str(error))
            return Outcome.POISON
        job = self.table.get(message.job_id)
        if job is None:
            logger.error("Dead-lettered message names no job", job_id=message.job_id)
            return Outcome.POISON
        last = f" Last error: {job.last_error}" if job.last_error else ""
        reason = (
            f"The job's message was dead-lettered after {receive_count} deliveries "
            f"without the job finishing.{last}"
        )
        if self.table.fail_unfinished(job.job_id, reason, self.now()) is None:
            logger.info(
                "Dead letter for a finished job", job_id=job.job_id, status=job.status.value
            )
            return Outcome.DUPLICATE
        logger.error("Job failed: its message was dead-lettered", job_id=job.job_id, error=reason)
        count(Metric.FAILED)
        return Outcome.FAILED

    # --- recovery ---------------------------------------------------------------------

    def recover_stalled(self) -> list[str]:
        """Queue again every job whose lease expired (its worker died, or the message
        meant to continue or retry it was lost); return their ids.

        Run periodically (every minute on AWS). A job is re-driven within about
        ``stale_after_seconds`` + the period after its last heartbeat.
        """
        now_ms = epoch_ms(self.now())
        recovered = []
        for status in (JobStatus.RUNNING, JobStatus.QUEUED):
            for job in self.table.by_status(status):
                if job.lease_until is None or job.lease_until >= now_ms:
                    continue
                if self.table.requeue_lost(job, self.lease_until_ms()) is None:
                    continue  # it moved on meanwhile, or another sweep took it
                self.queue.send(to_message(job.job_id, resume=job.resume))
                logger.warning(
                    "Job's lease expired; queued again",
                    job_id=job.job_id,
                    was=status.value,
                    position=job.position,
                )
                recovered.append(job.job_id)
        return recovered
