"""The worker's use case: run the job one SQS message names.

``process_message`` is all the SQS handler in app.py calls, once per record. It
acknowledges (returns) whatever retrying cannot change: a poison message, a duplicate
delivery, a job that failed in its own code. It raises StoreUnavailable only when an AWS
call failed, so SQS delivers the message again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from chalicelib.errors import PoisonMessage, StoreUnavailable
from chalicelib.jobs import Job, parse_message, utc_now
from chalicelib.kinds import KINDS, JobContext
from chalicelib.store import JobTable

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # the job ran and its result is recorded
    FAILED = "failed"  # the job ran and raised; the error is recorded
    DUPLICATE = "duplicate"  # the job was already started or finished: nothing ran
    POISON = "poison"  # the message can never be processed: logged and dropped


class _LostClaim(Exception):
    """Another attempt owns the job now; this one must stop without writing."""


class ProgressReporter:
    """Called by a job after every chunk; writes progress at most once per interval."""

    def __init__(
        self,
        table: JobTable,
        job: Job,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._job = job
        self._interval = interval
        self._monotonic = monotonic
        self._last = monotonic()

    def __call__(self, done: int) -> None:
        now = self._monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        progress = done / self._job.n if self._job.n else 1.0
        if self._table.report_progress(self._job.job_id, self._job.attempts, progress) is None:
            raise _LostClaim


def process_message(
    body: str,
    table: JobTable,
    progress_interval: float,
    now: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Run the job ``body`` names, once, and record how it ended."""
    try:
        job_id = parse_message(body)
    except PoisonMessage as error:
        log.error("dropping poison message: %s", error)
        return Outcome.POISON

    job = table.start(job_id, now())
    if job is None:
        return _not_started(job_id, table)

    function = KINDS.get(job.kind)
    if function is None:
        table.fail(job_id, job.attempts, f"Unknown job kind {job.kind!r}.", now())
        log.error("job %s has unknown kind %r", job_id, job.kind)
        return Outcome.FAILED

    log.info("job %s started (attempt %d, n=%d)", job_id, job.attempts, job.n)
    report = ProgressReporter(table, job, progress_interval, monotonic)
    try:
        result = function(job.n, JobContext(report=report))
    except StoreUnavailable:
        raise  # AWS trouble, not the job's: let SQS deliver the message again
    except _LostClaim:
        log.warning("job %s was claimed by another attempt; stopping", job_id)
        return Outcome.DUPLICATE
    except Exception as error:  # the job's own code failed: record it, do not retry
        log.exception("job %s failed", job_id)
        table.fail(job_id, job.attempts, f"{type(error).__name__}: {error}", now())
        return Outcome.FAILED

    if table.succeed(job_id, job.attempts, result, now()) is None:
        log.warning("job %s finished elsewhere first; result not written", job_id)
        return Outcome.DUPLICATE
    log.info("job %s succeeded (result=%d)", job_id, result)
    return Outcome.SUCCEEDED


def _not_started(job_id: str, table: JobTable) -> Outcome:
    existing = table.get(job_id)
    if existing is None:
        log.error("dropping poison message: no job %s", job_id)
        return Outcome.POISON
    log.info("job %s is already %s; duplicate delivery acknowledged", job_id, existing.status.value)
    return Outcome.DUPLICATE
