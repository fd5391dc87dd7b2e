"""The API's use cases: submit a job, look one up, cancel one."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.errors import (
    IdempotencyConflict,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    StoreUnavailable,
)
from chalicelib.jobs import (
    Job,
    JobStatus,
    idempotency_record_id,
    is_job_id,
    request_fingerprint,
    to_message,
    utc_now,
)
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to the client (its API key id, if any)."""

    key: str
    scope: str = "anonymous"

    def __post_init__(self) -> None:
        if not 1 <= len(self.key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
            "!" <= c <= "~" for c in self.key
        ):
            raise InvalidRequest(
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
                "characters.",
            )


@dataclass(frozen=True)
class Submission:
    job: Job
    replayed: bool  # True when an Idempotency-Key returned an earlier job


def submit_job(
    n: int,
    table: JobTable,
    queue: JobQueue,
    retention: timedelta,
    idempotency_key: IdempotencyKey | None = None,
    now: Callable[[], datetime] | None = None,
) -> Submission:
    """Record a queued job, then enqueue it.

    The record is written first, so a job whose message cannot be sent is known (and
    marked failed) rather than lost; the message only carries the job's id. With an
    Idempotency-Key, the key's record is written in the same transaction; a key already
    used for the same request returns that job, for another request IdempotencyConflict.
    """
    now = now or utc_now
    fingerprint = request_fingerprint(n) if idempotency_key else None
    job = Job.new(n=n, now=now(), retention=retention, request_hash=fingerprint)
    if idempotency_key is None:
        table.create(job)
    else:
        record_id = idempotency_record_id(idempotency_key.scope, idempotency_key.key)
        holder = table.create_with_key(job, record_id, now())
        if holder is not None:
            return _replay(holder.job_id, holder.request_hash, fingerprint, table, now)
    try:
        queue.send(to_message(job.job_id))
    except StoreUnavailable:
        log.exception("could not enqueue job %s; marking it failed", job.job_id)
        table.fail_unfinished(job.job_id, "The job could not be queued; submit it again.", now())
        raise
    log.info("job %s queued (n=%d)", job.job_id, n)
    return Submission(job=job, replayed=False)


def _replay(
    job_id: str,
    request_hash: str,
    fingerprint: str | None,
    table: JobTable,
    now: Callable[[], datetime],
) -> Submission:
    if request_hash != fingerprint:
        raise IdempotencyConflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        )
    job = table.get(job_id)
    if job is None or job.is_expired(now()):
        raise StoreUnavailable("the job of an Idempotency-Key record is missing; retry")
    return Submission(job=job, replayed=True)


def get_job(job_id: str, table: JobTable, now: Callable[[], datetime] | None = None) -> Job:
    """The job with this id; InvalidRequest for a malformed id, JobNotFound if unknown
    or expired (DynamoDB's TTL deletes expired items only eventually)."""
    if not is_job_id(job_id):
        raise InvalidRequest("invalid_job_id", "A job id is a UUID as returned by POST /heavy.")
    job = table.get(job_id)
    if job is None or job.is_expired((now or utc_now)()):
        raise JobNotFound(job_id)
    return job


def cancel_job(job_id: str, table: JobTable, now: Callable[[], datetime] | None = None) -> Job:
    """Cancel a queued or running job and return it; cancelling again changes nothing.

    A queued job will never start; a running one stops at its next checkpoint (within
    about a second of work). JobFinished if it already succeeded or failed.
    """
    now = now or utc_now
    job = get_job(job_id, table, now)
    cancelled = table.cancel(job_id, now())
    if cancelled is not None:
        log.info("job %s cancelled (was %s)", job_id, job.status.value)
        return cancelled
    current = get_job(job_id, table, now)
    if current.status is JobStatus.CANCELLED:
        return current
    raise JobFinished(
        "job_finished", f"The job already {current.status.value}; it cannot be cancelled."
    )


def retry_after_seconds(n: int, loop_rate_per_second: int) -> int:
    """A whole-second estimate of the job's run time, for the Retry-After header."""
    return max(1, math.ceil(n / loop_rate_per_second))
