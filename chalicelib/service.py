"""The API's use cases: submit a job, look one up."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from chalicelib.errors import InvalidRequest, JobNotFound, StoreUnavailable
from chalicelib.jobs import Job, is_job_id, to_message, utc_now
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable

log = logging.getLogger(__name__)


def submit_job(
    n: int,
    table: JobTable,
    queue: JobQueue,
    retention: timedelta,
    now: Callable[[], datetime] = utc_now,
) -> Job:
    """Record a queued job, then enqueue it; return the job.

    The record is written first, so a job whose message cannot be sent is known (and
    marked failed) rather than lost; the message only carries the job's id.
    """
    job = Job.new(n=n, now=now(), retention=retention)
    table.create(job)
    try:
        queue.send(to_message(job))
    except StoreUnavailable:
        log.exception("could not enqueue job %s; marking it failed", job.job_id)
        table.fail_queued(job.job_id, "The job could not be queued; submit it again.", now())
        raise
    log.info("job %s queued (n=%d)", job.job_id, n)
    return job


def get_job(job_id: str, table: JobTable, now: Callable[[], datetime] | None = None) -> Job:
    """The job with this id; InvalidRequest for a malformed id, JobNotFound if unknown
    or expired (DynamoDB's TTL deletes expired items only eventually)."""
    if not is_job_id(job_id):
        raise InvalidRequest("invalid_job_id", "A job id is a UUID as returned by POST /heavy.")
    job = table.get(job_id)
    if job is None or job.is_expired((now or utc_now)()):
        raise JobNotFound(job_id)
    return job


def retry_after_seconds(n: int, loop_rate_per_second: int) -> int:
    """A whole-second estimate of the job's run time, for the Retry-After header."""
    return max(1, math.ceil(n / loop_rate_per_second))
