"""The API's use cases: submit a job, look one up, wait for one, list them, cancel or
retry one, describe the kinds.

Every use case takes the caller (``chalicelib.clients.Caller``): a job is recorded as its
caller's client's, and a job the caller may not see is JobNotFound, exactly as an
unknown id (``get_job`` decides it, for every route that names a job).

Quotas (``check_quota``): before a job is written, its client's queued and running jobs
are read from the sparse active index (``JobTable.active``), one partition holding only
that client's active jobs, each with its estimate. The read is bounded by the quota
itself (at most ``max_active_per_client`` entries, one Query page for the default 100),
whatever other clients or the table's history hold. The index was chosen over a counter
item updated in the status-changing writes: a counter would turn every finish of a job
(the worker's UpdateItem, which returns the job) into a transaction, and any write path
that forgot to release it would leak quota for good; the index entry is an attribute of
the job's own item, written and removed by the same conditional writes that change its
status (the derived-keys rule the listings follow), so it cannot drift from the job, and
the migration removes any a final job still carries.
What it costs: the index is eventually consistent (a global secondary index is updated
asynchronously and supports eventually consistent reads only: DynamoDB Developer Guide,
"Using Global Secondary Indexes in DynamoDB"). Submissions of one client that
arrive within that window all see the same count, so a burst of k concurrent requests
can overshoot the quota by up to k - 1 jobs; and a job finished a moment ago may still
count for that moment. The next submission after the burst sees them all, so the
overshoot never compounds. A refused submission creates nothing: no job, no message,
no Idempotency-Key record. A failed read is StoreUnavailable (503, nothing created); it
costs the jobs already queued nothing (only the API reads the index).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from chalicelib.clients import (
    ANONYMOUS,
    ANONYMOUS_CALLER,
    OPERATOR,
    OPERATOR_CALLER,
    RECORDED_CLIENT,
    Caller,
    client_of_key,
    client_of_principal,
    operator_client,
)
from chalicelib.config import Settings
from chalicelib.errors import (
    IdempotencyConflict,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    JobNotRetryable,
    QuotaExceeded,
    RequestError,
    StoreUnavailable,
    UnknownKey,
    UnknownPrincipal,
)
from chalicelib.jobs import (
    SHARDS,
    Job,
    JobStatus,
    Listing,
    epoch_ms,
    idempotency_record_id,
    is_job_id,
    iso_utc,
    lane_of,
    later_message,
    request_fingerprint,
    shard_of,
    to_message,
    utc_now,
)
from chalicelib.kinds import KINDS
from chalicelib.observability import Metric, count, logger
from chalicelib.queue import MAX_DELAY_SECONDS, DelayQueue, JobQueue, delay_until
from chalicelib.requests import BatchItem
from chalicelib.store import END, ActiveEntry, JobTable, Position

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The error of a job whose message could not be sent.
SEND_FAILED = "The job could not be queued; submit it again."


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to the client's name (stable across the
    rotation of its API key)."""

    key: str
    scope: str = ANONYMOUS

    def __post_init__(self) -> None:
        if not 1 <= len(self.key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
            "!" <= c <= "~" for c in self.key
        ):
            raise InvalidRequest(
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
                "characters.",
            )


def caller_of_key(app_name: str, stage: str, key_name: str | None) -> Caller:
    """The caller an API key named ``key_name`` makes on ``stage`` of ``app_name``: the
    operator (the stage's own key), or the client the name names; UnknownKey (403) for
    no key or a key whose name names no client of this stage (another stage's key, a
    key made by hand)."""
    client = None if key_name is None else client_of_key(app_name, stage, key_name)
    if client is None:
        raise UnknownKey()
    return OPERATOR_CALLER if client == OPERATOR else Caller(client)


def caller_of_principal(
    user_arn: str | None, account: str | None, operator_principal: str | None
) -> Caller:
    """The caller an IAM principal makes on an IAM stage: its client
    (``chalicelib.clients.client_of_principal``), seeing every job when it is the stage's
    operator principal. UnknownPrincipal (403) for no principal, one of another account
    than the API's (``account``), or one that cannot be a client: API Gateway refuses an
    unsigned request before the function runs, and this refuses it again should a route
    ever be reachable without the signature check."""
    client = client_of_principal(user_arn, account) if user_arn and account else None
    if client is None:
        raise UnknownPrincipal()
    operator = operator_client(operator_principal) if operator_principal else None
    return Caller(client, sees_all=client == operator)


class Submission(NamedTuple):
    job: Job
    replayed: bool  # True when an Idempotency-Key returned an earlier job


def submit_job(
    kind: str,
    input: dict[str, Any],
    table: JobTable,
    queue: JobQueue,
    retention: timedelta,
    idempotency_key: IdempotencyKey | None = None,
    now: Callable[[], datetime] | None = None,
    retry_of: str | None = None,
    client: str = ANONYMOUS,
    settings: Settings | None = None,
    run_at: datetime | None = None,
    delay_queue: DelayQueue | None = None,
    schedule: str | None = None,
) -> Submission:
    """Record a queued job of ``kind`` with its validated ``input``, as ``client``'s,
    then enqueue it.

    With ``run_at`` (a job that runs later: docs/later.md), it starts then: a time past
    runs at once; one more than ``retention`` ahead is InvalidRequest invalid_run_at,
    nothing written. A job due within SQS's longest delay is sent to ``delay_queue`` at
    once (its forwarder puts it on the job queue at its time); one due later, or any
    when no ``delay_queue`` is given, waits in the later index for the release
    (Worker.release_due), holding no lane and no message.

    With ``settings``, the job records its kind's estimate and the client's quota is
    checked first (``check_quota``): QuotaExceeded, and nothing written, when the job
    would put the client over it (unless its Idempotency-Key already holds a job for
    this request: that job is returned, as always). Without, no quota is checked.

    The record is written first, with its message due (``pending_at``), so a job whose
    message never reaches the queue is known, and the recovery sweep sends it later.
    The message only carries the job's id and kind; its deduplication id is the job's id,
    so a repeated send of it is dropped. With an Idempotency-Key, the key's record is
    written in the same transaction; a key already used for the same request (kind and
    input) returns that job, for another request IdempotencyConflict. ``schedule`` names
    the schedule whose fire submits it (chalicelib.schedule_service.fire).

    If the send fails, the job is failed and its Idempotency-Key released in one
    transaction, and StoreUnavailable raised: a retry (with the same key) makes a new job.
    """
    now = now or utc_now
    _check_run_at(run_at, now(), retention)
    fingerprint = request_fingerprint(kind, input) if idempotency_key else None
    record_id = (
        None
        if idempotency_key is None
        else idempotency_record_id(idempotency_key.scope, idempotency_key.key)
    )
    estimate = 1
    if settings is not None:
        estimate = estimate_seconds(kind, input, settings)
        try:
            check_quota(client, estimate, table, settings)
        except QuotaExceeded:
            # A repeated request whose key already made its job is answered with it.
            holder = None if record_id is None else table.key_holder(record_id, now())
            if holder is None:
                raise
            return _replay(holder.job_id, holder.request_hash, fingerprint, table, now)
    created = now()
    wait = 0.0 if run_at is None else (run_at - created).total_seconds()
    job = _new_job(
        kind,
        input,
        created,
        retention,
        settings,
        delay_queue,
        request_hash=fingerprint,
        retry_of=retry_of,
        client=client,
        estimate_seconds=estimate,
        run_at=run_at,
        schedule=schedule,
    )
    if record_id is None:
        table.create(job)
    else:
        holder = table.create_with_key(job, record_id, now())
        if holder is not None:
            return _replay(holder.job_id, holder.request_hash, fingerprint, table, now)
    try:
        if job.run_at is None or wait <= 0:
            queue.send(to_message(job), deduplication_id=job.job_id)
        elif delay_queue is not None and not job.later:
            run_at_ms = epoch_ms(job.run_at)
            delay_queue.send(later_message(job), delay_until(run_at_ms, epoch_ms(now())))
    except StoreUnavailable:
        logger.exception("Could not enqueue the job; marking it failed", job_id=job.job_id)
        table.fail_submission(job, SEND_FAILED, now(), record_id)
        raise
    logger.info("Job queued", job_id=job.job_id, kind=kind, input=input, client=client)
    count(Metric.ACCEPTED)
    return Submission(job=job, replayed=False)


def choose_lane(client: str, kind: str, settings: Settings | None) -> int:
    """A new job's lane: its client's or its kind's (the stage's JOBS_LANE_KEY) among the
    stage's lanes; lane 0 without settings or with one lane."""
    if settings is None or settings.lanes == 1:
        return 0
    return lane_of(client if settings.lane_key == "client" else kind, settings.lanes)


def _check_run_at(run_at: datetime | None, now: datetime, retention: timedelta) -> None:
    """InvalidRequest invalid_run_at for a run_at more than ``retention`` ahead (the job
    could expire before it runs, and the stage keeps nothing longer)."""
    if run_at is not None and run_at - now > retention:
        raise InvalidRequest(
            "invalid_run_at",
            f"run_at must be at most {retention.days} day(s) ahead (the stage's retention).",
        )


class BatchResult(NamedTuple):
    """One item's outcome in ``submit_batch``: its job (and whether an Idempotency-Key
    returned an earlier one), or the error it alone earned."""

    job: Job | None = None
    replayed: bool = False
    error: RequestError | StoreUnavailable | None = None


def submit_batch(
    items: Sequence[BatchItem | InvalidRequest],
    table: JobTable,
    queue: JobQueue,
    retention: timedelta,
    client: str = ANONYMOUS,
    settings: Settings | None = None,
    now: Callable[[], datetime] | None = None,
    delay_queue: DelayQueue | None = None,
) -> list[BatchResult]:
    """Submit each valid item as ``submit_job`` submits one job, with DynamoDB's and SQS's
    batch calls; one result per item, in order. An item that was already an error (the
    parser's) stays one; no item's error stops the others.

    With ``settings``, the client's quota is read once and applied item by item in order:
    each job made counts for the items after it, and an item that would put the client
    over gets QuotaExceeded (an item whose Idempotency-Key already holds its job gets that
    job, as with ``submit_job``). StoreUnavailable, and nothing made, if that read fails.

    Writes: an item with an Idempotency-Key is written with its key record in one
    transaction (``create_with_key``), one item a transaction, so a key already held
    (a replay, or a conflict) concerns that item alone; the others are written by
    BatchWriteItem, 25 a call (``create_many``). Every record is written, due
    (``pending_at``), before any message is sent; then the messages are sent in the
    items' order (``send_batch``), so the jobs of one lane start in the order given.
    An item with a ``run_at`` ahead waits as ``submit_job``'s would: its message goes to
    ``delay_queue`` when due within SQS's longest delay, else it waits in the later
    index, no message sent.

    A job whose record is not known written, or whose message SQS did not take, is
    failed with its key released (``fail_submission``) and its result is
    StoreUnavailable: a retry (with the same key) makes a new job. If that failing fails
    too (DynamoDB unavailable), the job stays queued and due, and the recovery sweep
    sends it, as for ``submit_job``: never lost, never run twice (its deduplication id is
    its id). A crash part-way leaves every written job sent or due for the sweep.
    What a failure costs the jobs behind: nothing beyond the calls it takes; a send is
    never retried out of order.
    """
    now = now or utc_now
    results: list[BatchResult] = [BatchResult() for _ in items]
    active = None if settings is None else _active_for_quota(client, table, settings)
    made: list[tuple[int, Job, str | None]] = []  # (item index, job, key record id)
    unkeyed: list[Job] = []
    for index, item in enumerate(items):
        if isinstance(item, InvalidRequest):
            results[index] = BatchResult(error=item)
            continue
        try:
            made_one = _batch_job(
                index, item, table, retention, client, settings, active, now, delay_queue
            )
        except (RequestError, StoreUnavailable) as error:
            results[index] = BatchResult(error=error)
            continue
        if isinstance(made_one, Submission):  # a replay
            results[index] = BatchResult(job=made_one.job, replayed=True)
            continue
        job, record_id = made_one
        if active is not None:
            active.append(ActiveEntry(job.job_id, iso_utc(job.created_at), job.estimate_seconds))
        if record_id is None:
            unkeyed.append(job)
        made.append((index, job, record_id))
    unwritten = {job.job_id for job in table.create_many(unkeyed)}
    unqueued: list[tuple[Job, str | None, str]] = []  # (job, key record id, why)
    to_send: list[tuple[int, Job, str | None]] = []
    for index, job, record_id in made:
        if job.job_id in unwritten:
            unqueued.append((job, None, "its record could not be written"))
            results[index] = BatchResult(error=StoreUnavailable("BatchWriteItem failed"))
        elif job.later:  # waits in the later index for its release: nothing to send
            results[index] = BatchResult(job=job)
        elif _waits(job, now()):
            failure = _send_delayed(job, delay_queue, now)
            if failure is not None:
                unqueued.append((job, record_id, failure))
            results[index] = (
                BatchResult(job=job)
                if failure is None
                else BatchResult(error=StoreUnavailable(failure))
            )
        else:
            to_send.append((index, job, record_id))
    outcomes = queue.send_batch([(to_message(job), job.job_id) for _, job, _ in to_send])
    for (index, job, record_id), failure in zip(to_send, outcomes, strict=True):
        if failure is not None:
            unqueued.append((job, record_id, failure))
            results[index] = BatchResult(error=StoreUnavailable(failure))
            continue
        results[index] = BatchResult(job=job)
    queued = [result.job.job_id for result in results if result.job and not result.replayed]
    # One log line and one metric line a batch, not a pair per job: each line costs a few
    # tenths of a millisecond, a large share of a batched job's own cost.
    if queued:
        logger.info("Jobs queued", job_ids=queued, client=client)
        count(Metric.ACCEPTED, len(queued))
    _fail_unqueued(table, unqueued, now)
    return results


def _batch_job(
    index: int,
    item: BatchItem,
    table: JobTable,
    retention: timedelta,
    client: str,
    settings: Settings | None,
    active: list[ActiveEntry] | None,
    now: Callable[[], datetime],
    delay_queue: DelayQueue | None,
) -> tuple[Job, str | None] | Submission:
    """One batch item's new job and its key record id (the job written already when it
    has one), or the replay its Idempotency-Key answers. RequestError for the item alone
    (a malformed key, the quota, a key used for another request)."""
    kind, input, run_at = item.request
    key = None
    if item.idempotency_key is not None:
        try:
            key = IdempotencyKey(item.idempotency_key, scope=client)
        except InvalidRequest as error:
            raise InvalidRequest(
                error.code, f"/jobs/{index}/idempotency_key: {error.message}"
            ) from None
    fingerprint = request_fingerprint(kind, input) if key else None
    record_id = None if key is None else idempotency_record_id(key.scope, key.key)
    estimate = 1 if settings is None else estimate_seconds(kind, input, settings)
    refusal = None
    if settings is not None and active is not None:
        refusal = _quota_refusal(client, active, estimate, settings)
    if refusal is not None:
        holder = None if record_id is None else table.key_holder(record_id, now())
        if holder is None:
            raise refusal
        return _replay(holder.job_id, holder.request_hash, fingerprint, table, now)
    job = _new_job(
        kind,
        input,
        now(),
        retention,
        settings,
        delay_queue,
        request_hash=fingerprint,
        client=client,
        estimate_seconds=estimate,
        run_at=run_at,
    )
    if record_id is not None:
        holder = table.create_with_key(job, record_id, now())
        if holder is not None:
            return _replay(holder.job_id, holder.request_hash, fingerprint, table, now)
    return job, record_id


def _new_job(
    kind: str,
    input: dict[str, Any],
    created: datetime,
    retention: timedelta,
    settings: Settings | None,
    delay_queue: DelayQueue | None,
    **fields: Any,
) -> Job:
    """A new job as every submission makes it (one POST, a batch item, a schedule's fire):
    in its lane (``choose_lane``), waiting in the later index when its ``run_at`` is
    beyond what ``delay_queue`` can hold (``_waits_for_release``); ``fields`` are the
    rest of ``Job.new``'s."""
    client = fields.get("client", ANONYMOUS)
    return Job.new(
        kind=kind,
        input=input,
        now=created,
        retention=retention,
        lane=choose_lane(client, kind, settings),
        later=_waits_for_release(fields.get("run_at"), created, delay_queue),
        **fields,
    )


def _waits(job: Job, now: datetime) -> bool:
    """Whether ``job`` (written, not in the later index) is due after ``now``: its
    message goes to the delay queue rather than the job queue."""
    return job.run_at is not None and job.run_at > now


def _waits_for_release(
    run_at: datetime | None, created: datetime, delay_queue: DelayQueue | None
) -> bool:
    """Whether a job created at ``created`` to run at ``run_at`` waits in the later index
    (Worker.release_due): due further ahead than SQS's longest delay, or due later at all
    when there is no delay queue to hold its message."""
    wait = 0.0 if run_at is None else (run_at - created).total_seconds()
    return wait > MAX_DELAY_SECONDS or (wait > 0 and delay_queue is None)


def _send_delayed(
    job: Job, delay_queue: DelayQueue | None, now: Callable[[], datetime]
) -> str | None:
    """Put a job due within SQS's longest delay on the delay queue, delayed to its
    run_at; why not, or None once sent."""
    assert delay_queue is not None and job.run_at is not None, "only a job due later is sent"
    run_at_ms = epoch_ms(job.run_at)
    try:
        delay_queue.send(later_message(job), delay_until(run_at_ms, epoch_ms(now())))
    except StoreUnavailable as error:
        return f"the delay queue refused it: {error}"
    return None


def _fail_unqueued(
    table: JobTable, unqueued: list[tuple[Job, str | None, str]], now: Callable[[], datetime]
) -> None:
    """Fail a batch's jobs that were not queued, releasing their keys (``fail_submission``:
    nothing for a job never written). At the first failure (DynamoDB unavailable) the
    rest are left as they are, so an outage costs one failed call, not one per job: each
    job left stays due, and the recovery sweep sends it (logged)."""
    for position, (job, record_id, reason) in enumerate(unqueued):
        logger.error("Could not enqueue the job; failing it", job_id=job.job_id, reason=reason)
        try:
            table.fail_submission(job, SEND_FAILED, now(), record_id)
        except StoreUnavailable:
            left = [left_job.job_id for left_job, _, _ in unqueued[position:]]
            logger.exception(
                "Could not fail the jobs; the recovery sweep will send them", job_ids=left
            )
            return


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


def get_job(
    job_id: str,
    table: JobTable,
    now: Callable[[], datetime] | None = None,
    caller: Caller = ANONYMOUS_CALLER,
) -> Job:
    """The job with this id; InvalidRequest for a malformed id, JobNotFound if unknown,
    expired (DynamoDB's TTL deletes expired items only eventually), or another client's
    than ``caller`` may see: the same error, so an id tells nothing of other clients."""
    if not is_job_id(job_id):
        raise InvalidRequest("invalid_job_id", "A job id is a UUID as returned by POST /heavy.")
    job = table.get(job_id)
    if job is None or job.is_expired((now or utc_now)()) or not caller.may_see(job.client):
        raise JobNotFound(job_id)
    return job


def cancel_job(
    job_id: str,
    table: JobTable,
    now: Callable[[], datetime] | None = None,
    caller: Caller = ANONYMOUS_CALLER,
) -> Job:
    """Cancel a queued or running job ``caller`` may see and return it; cancelling again
    changes nothing.

    A queued job will never start; a running one stops at its next checkpoint (within
    about a second of work). JobFinished if it already succeeded or failed.
    """
    now = now or utc_now
    job = get_job(job_id, table, now, caller)
    cancelled = table.cancel(job, now())
    if cancelled is not None:
        logger.info("Job cancelled", job_id=job_id, was=job.status.value)
        count(Metric.CANCELLED)
        return cancelled
    current = get_job(job_id, table, now, caller)
    if current.status is JobStatus.CANCELLED:
        return current
    raise JobFinished(
        "job_finished", f"The job already {current.status.value}; it cannot be cancelled."
    )


def retry_job(
    job_id: str,
    table: JobTable,
    queue: JobQueue,
    retention: timedelta,
    now: Callable[[], datetime] | None = None,
    caller: Caller = ANONYMOUS_CALLER,
    settings: Settings | None = None,
) -> Job:
    """Submit a new job with the kind and input of a failed or cancelled one ``caller``
    may see, carrying ``retry_of``, as the retried job's client's (the caller's, unless
    the operator retries another client's job), within that client's quota when
    ``settings`` are given; JobNotRetryable (409) for a job that is queued, running or
    succeeded. Each call makes a new job (send an Idempotency-Key with POST /jobs to
    deduplicate)."""
    job = get_job(job_id, table, now, caller)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise JobNotRetryable(
            "not_retryable",
            f"The job is {job.status.value}; only a failed or cancelled job can be retried.",
        )
    submission = submit_job(
        job.kind,
        job.input,
        table,
        queue,
        retention,
        now=now,
        retry_of=job_id,
        client=job.client,
        settings=settings,
    )
    return submission.job


def describe_kinds(settings: Settings) -> list[dict[str, Any]]:
    """Every kind as GET /kinds lists it, sorted by name."""
    return [KINDS[name].describe(settings) for name in sorted(KINDS)]


def retry_after_seconds(
    job: Job, settings: Settings, now: Callable[[], datetime] | None = None
) -> int:
    """A whole-second estimate of when the job will have run, for the Retry-After header:
    its run time, after the wait until its run_at for a job that runs later."""
    wait = 0.0 if job.run_at is None else (job.run_at - (now or utc_now)()).total_seconds()
    return max(0, math.ceil(wait)) + estimate_seconds(job.kind, job.input, settings)


def estimate_seconds(kind_name: str, input: dict[str, Any], settings: Settings) -> int:
    """A whole-second estimate of a job's run time, at least 1 (from its kind's declared
    estimate; 1 if the kind is gone, or the input of a retried job no longer fits its
    declaration: the worker fails such a job, saying why)."""
    kind = KINDS.get(kind_name)
    if kind is None:
        return 1
    try:
        parsed = kind.make_input(input)
    except TypeError:
        return 1
    return max(1, math.ceil(kind.estimate_seconds(parsed, settings)))


# --- quotas -----------------------------------------------------------------------------


def check_quota(client: str, estimate: int, table: JobTable, settings: Settings) -> None:
    """QuotaExceeded if a new job of ``estimate`` seconds would put ``client`` over its
    quota: ``max_active_per_client`` jobs queued or running, or
    ``max_active_seconds_per_client`` seconds of their estimates (a limit of 0 is off).
    A job whose estimate alone is over the seconds limit is accepted when the client has
    nothing else queued or running: it runs alone, never refused for good.

    One read of the client's active jobs (``JobTable.active``, at most
    ``max_active_per_client`` entries; none when both limits are off). StoreUnavailable
    if it fails. The module docstring says what concurrent submissions can do."""
    active = _active_for_quota(client, table, settings)
    refusal = None if active is None else _quota_refusal(client, active, estimate, settings)
    if refusal is not None:
        raise refusal


def _active_for_quota(client: str, table: JobTable, settings: Settings) -> list[ActiveEntry] | None:
    """The client's active jobs as far as its quota needs them; None when both limits are
    off (nothing read)."""
    max_jobs = settings.max_active_per_client
    max_seconds = settings.max_active_seconds_per_client
    if not max_jobs and not max_seconds:
        return None
    # Without a count limit, the seconds limit still bounds the read: each entry is at
    # least one second.
    return table.active(client, max_jobs or max_seconds)


def _quota_refusal(
    client: str, active: list[ActiveEntry], estimate: int, settings: Settings
) -> QuotaExceeded | None:
    """The QuotaExceeded a new job of ``estimate`` seconds earns beside ``active``, or None."""
    max_jobs = settings.max_active_per_client
    max_seconds = settings.max_active_seconds_per_client
    needed = 0  # the client's oldest jobs that must finish to make room
    if max_jobs and len(active) >= max_jobs:
        needed = len(active) - max_jobs + 1
    seconds = sum(entry.estimate_seconds for entry in active)
    over_seconds = bool(max_seconds) and bool(active) and seconds + estimate > max_seconds
    if over_seconds:
        freed, count = 0, 0
        for entry in active:
            if seconds - freed + estimate <= max_seconds:
                break
            freed, count = freed + entry.estimate_seconds, count + 1
        needed = max(needed, count)
    if not needed:
        return None
    return QuotaExceeded(
        f"Client {client!r} has {len(active)} job(s) queued or running, {seconds} s of "
        f"estimated work (at most {max_jobs or 'any number of'} jobs and "
        f"{max_seconds or 'any number of'} s); retry when some have finished.",
        retry_after=_room_after(active, needed),
    )


def _room_after(active: list[ActiveEntry], needed: int) -> int:
    """When the client's ``needed`` oldest active jobs will have finished, if the lane
    runs them next: the sum of their estimates (whole seconds, at least 1). A lower
    bound when other clients' jobs are ahead of them in the lane."""
    return max(1, sum(entry.estimate_seconds for entry in active[:needed]))


# --- listing --------------------------------------------------------------------------

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
LISTING_PARAMETERS = ("kind", "status", "client", "limit", "cursor")
# A shard's position in a cursor: where its last job taken was created (ISO-8601 UTC).
_CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Page(NamedTuple):
    jobs: list[Job]
    next_cursor: str | None
    # The worker is paused (`make pause`): queued jobs wait until it is resumed.
    paused: bool = False


def list_jobs(
    params: Mapping[str, str],
    table: JobTable,
    now: Callable[[], datetime] | None = None,
    caller: Caller = ANONYMOUS_CALLER,
) -> Page:
    """A page of jobs ``caller`` may see, newest first, for
    GET /jobs?kind=&status=&client=&limit=&cursor=, and whether the worker is paused.

    A caller that sees every job (the operator, the anonymous caller of a stage without
    keys) lists every client's, or one client's with ``client``; any other caller lists
    its own only, through its own index partitions, and may pass only its own name.
    Unknown parameters, an unknown kind or status, a client the caller may not list, a
    limit outside 1..100 and a cursor that was not issued for this listing are
    InvalidRequest, before any AWS call.
    """
    unknown = sorted(set(params) - set(LISTING_PARAMETERS))
    if unknown:
        raise InvalidRequest(
            "unknown_parameter",
            f"Unknown query parameter(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(LISTING_PARAMETERS)}.",
        )
    listing = Listing(
        kind=_kind_param(params.get("kind")),
        status=_status_param(params.get("status")),
        client=_client_param(params.get("client"), caller),
    )
    limit = _int_param(params, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    positions = _decode_cursor(params.get("cursor"), listing)
    try:
        page = table.page(listing, limit, positions, (now or utc_now)())
    except ValueError:
        raise _bad_cursor() from None
    cursor = None if page.last else _encode_cursor(listing, page.positions)
    return Page(jobs=page.jobs, next_cursor=cursor, paused=table.worker_paused().paused)


def _kind_param(raw: str | None) -> str | None:
    if raw is None or raw in KINDS:
        return raw
    kinds = ", ".join(sorted(KINDS))
    raise InvalidRequest("unknown_kind", f"Unknown kind {raw!r}. Kinds: {kinds}.")


def _client_param(raw: str | None, caller: Caller) -> str | None:
    """The client a listing is scoped to: the caller's own unless it sees every job."""
    if raw is None:
        return None if caller.sees_all else caller.client
    if RECORDED_CLIENT.fullmatch(raw) and (caller.sees_all or raw == caller.client):
        return raw
    allowed = "a client's name" if caller.sees_all else f"only your own, {caller.client!r}"
    raise InvalidRequest("invalid_client", f"client must be {allowed}.")


def _status_param(raw: str | None) -> JobStatus | None:
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidRequest("invalid_status", f"status must be one of: {allowed}.") from None


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """``?name=`` as an integer from low to high, else 400 invalid_<name>.

    Digits are counted before int() sees them: int() of more than 4,300 digits raises
    ValueError (CPython's integer string conversion limit), and a longer number than
    ``high`` has is out of range anyway (leading zeros aside, which are stripped first).
    """
    raw = params.get(name)
    if raw is None:
        return default
    digits = raw.lstrip("0") or "0"
    if not (
        raw.isascii()
        and raw.isdigit()
        and len(digits) <= len(str(high))
        and low <= int(digits) <= high
    ):
        raise InvalidRequest(f"invalid_{name}", f"{name} must be an integer from {low} to {high}.")
    return int(digits)


def _encode_cursor(listing: Listing, positions: tuple[Position, ...]) -> str:
    # Opaque to clients; bound to the listing it came from. Per shard: null (not started),
    # "end", or [created_at, job_id] of the last job taken from it.
    payload = {"l": listing.name, "p": [list(p) if isinstance(p, tuple) else p for p in positions]}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None, listing: Listing) -> list[Position]:
    """Each shard's position from a cursor, checked whole: the listing, the number of
    shards, and every position (a timestamp as the service writes them and a job id of
    that shard), so that nothing malformed ever reaches DynamoDB."""
    if raw is None:
        return [None] * SHARDS
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if payload["l"] != listing.name or len(payload["p"]) != SHARDS:
            raise ValueError("another listing")
        positions = [_position(shard, p) for shard, p in enumerate(payload["p"])]
    # RecursionError: json.loads of deeply nested brackets (no cursor we issue nests).
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, binascii.Error):
        raise _bad_cursor() from None
    return positions


def _position(shard: int, raw: object) -> Position:
    if raw is None:
        return None
    if raw == END:
        return END
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError("not a position")
    created_at, job_id = raw
    if not (
        isinstance(created_at, str)
        and _CREATED_AT.fullmatch(created_at)
        and isinstance(job_id, str)
        and is_job_id(job_id)
        and shard_of(job_id) == shard
    ):
        raise ValueError("not a position")
    return (created_at, job_id)


def _bad_cursor() -> InvalidRequest:
    return InvalidRequest("invalid_cursor", "cursor must be a value returned as next by GET /jobs.")


# --- waiting for a job to finish ----------------------------------------------------

# How often a waiting request reads the job: twice a second at most (a wait holds an API
# invocation; each read is one more request on the table).
WAIT_POLL_SECONDS = 0.5
# The longest a request may wait for a job: under API Gateway's 29-second integration
# timeout, with room for the rest of the request (the API function's timeout is 28 s).
MAX_WAIT_SECONDS = 25


def wait_for_job(
    job_id: str,
    table: JobTable,
    seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    caller: Caller = ANONYMOUS_CALLER,
) -> Job:
    """The job (one ``caller`` may see: else JobNotFound) once it left queued/running,
    or as it is after ``seconds``.

    Reads the job every WAIT_POLL_SECONDS; the request's thread sleeps in between, so
    other requests (``chalice local`` is threaded; on AWS each is its own invocation)
    are not held up.
    """
    deadline = monotonic() + seconds
    while True:
        job = get_job(job_id, table, caller=caller)
        remaining = deadline - monotonic()
        if job.status.is_final or remaining <= 0:
            return job
        sleep(min(WAIT_POLL_SECONDS, remaining))


def wait_param(params: Mapping[str, str], max_wait_seconds: int) -> int | None:
    """``?wait=N`` on GET /jobs/{id}: whole seconds from 0 to the maximum."""
    unknown = sorted(set(params) - {"wait"})
    if unknown:
        raise InvalidRequest(
            "unknown_parameter", f"Unknown query parameter(s): {', '.join(unknown)}. Allowed: wait."
        )
    if "wait" not in params:
        return None
    return _int_param(params, "wait", 0, 0, max_wait_seconds)
