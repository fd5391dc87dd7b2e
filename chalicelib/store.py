"""Adapter: the DynamoDB job table.

Every status change is a conditional write, so a message delivered twice, a second worker,
or a cancellation racing a worker can never move a job backwards or let two runs both
write a result. A running job belongs to the attempt holding its lease token (``owner``);
only that attempt can checkpoint, finish or release it. Methods that change state return
the new Job, or None when their condition did not hold.

Each write that changes a job's status also rewrites the index keys derived from it
(``chalicelib.jobs.derived_attributes``) in the same request, so the indexes never
disagree with the item; a checkpoint changes no index key or projected attribute, so it
writes no index at all.

The table also holds Idempotency-Key records (``idempotency#<sha256>``) and control items
(``control#...``); they carry no index key, so no index lists them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.clients import ANONYMOUS
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import (
    ACTIVE,
    ESTIMATE_SECONDS,
    EXPIRES_AT,
    KIND_STATUS_KEYS,
    LANE,
    LATER,
    LIST_BY_CLIENT_KIND_STATUS,
    LIST_BY_CLIENT_STATUS,
    LIST_BY_KIND_STATUS,
    LIST_BY_STATUS,
    PENDING,
    PROGRESS_MARK,
    SCHEMA_ITEM,
    SCHEMA_VERSION,
    SHARDS,
    STATUS_KEYS,
    WORKER_ITEM,
    Job,
    JobStatus,
    Listing,
    active_key,
    derived_attributes,
    epoch_ms,
    from_item,
    is_job_item,
    iso_utc,
    later_key,
    pending_key,
    pending_partition,
    result_attribute,
    status_keys,
    to_item,
    watermark_item,
)
from chalicelib.observability import logger

_CONDITION_FAILED = "ConditionalCheckFailedException"
_KEY_IS_FREE = "attribute_not_exists(job_id) OR #expires < :now"
_NAMES = {
    "#status": "status",
    "#kind": "kind",
    "#result": "result",
    "#error": "error",
    "#owner": "owner",
    "#state": "state",
    "#input": "input",
    "#expires": EXPIRES_AT,
    "#status_key": LIST_BY_STATUS.partition_key,
    "#kind_status_key": LIST_BY_KIND_STATUS.partition_key,
    "#client_status_key": LIST_BY_CLIENT_STATUS.partition_key,
    "#client_kind_status_key": LIST_BY_CLIENT_KIND_STATUS.partition_key,
    "#active_key": ACTIVE.partition_key,
    "#client": "client",
    "#pending_key": PENDING.partition_key,
    "#pending_at": PENDING.sort_key,
    "#target": "target",
    "#later_key": LATER.partition_key,
    "#run_at": LATER.sort_key,
    "#progress_mark": PROGRESS_MARK,
}
# What a job leaving the queued status drops: it no longer has a message due, nor waits
# for its release (a job cancelled before its run_at leaves the later index).
_NOT_DUE = "#pending_key, #pending_at"
_NOT_WAITING = "#later_key"
_NOT_PENDING = f"{_NOT_DUE}, {_NOT_WAITING}"
# The job is the named client's (``:client``); an item written before clients has no
# client attribute and is anonymous's.
_CLIENT_IS = "#client = :client"
_ANONYMOUS_IS = "(#client = :client OR attribute_not_exists(#client))"
# What a job moving to a final status drops besides: it no longer counts to its client's
# quota of active jobs.
_NOT_ACTIVE = "#active_key"
# BatchGetItem's limit on keys per request.
_BATCH_GET_LIMIT = 100
# Retries of a BatchGetItem's unprocessed keys (throttling) before giving up.
_BATCH_GET_ROUNDS = 5
# BatchWriteItem's limit on requests a call (DynamoDB API Reference, "BatchWriteItem").
_BATCH_WRITE_LIMIT = 25
# Calls a BatchWriteItem's unprocessed items get (throttling), the first waits before a
# retry (doubled each time: 0.05 + 0.1 + 0.2 + 0.4 s), as the API Reference asks
# ("we strongly recommend that you use an exponential backoff algorithm").
_BATCH_WRITE_ROUNDS = 5
_BATCH_WRITE_BACKOFF_SECONDS = 0.05
# Reads of a job the migration makes while its status keeps changing under the rewrite.
_MIGRATION_TRIES = 3
# Queries a listing makes on one shard to fill a page while skipping expired jobs (whose
# TTL deletion lags): expired jobs are the oldest, so this is reached only in a table
# full of them; the page then ends early and the cursor moves past what was read.
_MAX_QUERIES_PER_SHARD = 10
# A listing position per shard: the (created_at, job_id) of the last job taken from it,
# END once nothing is left in it, or None before the first page.
END = "end"
Position = tuple[str, str] | str | None


class IdempotencyRecord(NamedTuple):
    job_id: str
    request_hash: str


class ListingPage(NamedTuple):
    jobs: list[Job]
    # Where the next page starts, per shard.
    positions: tuple[Position, ...]

    @property
    def last(self) -> bool:
        return all(position == END for position in self.positions)


class WorkerPause(NamedTuple):
    """The control item ``control#worker``: is the worker paused, since when (ISO UTC)."""

    paused: bool
    paused_at: str | None = None


class UnreadableJob(NamedTuple):
    """A job's item that cannot be read as a job (a state that is not JSON, a field a
    newer release wrote): its id, why (``error``, what parsing it raised), and its lease
    (epoch ms) read alone, None when it has none or that cannot be read either. Fail it
    with ``JobTable.fail_unreadable``, which needs no parse of it."""

    job_id: str
    lease_until: int | None
    error: Exception


class ActiveEntry(NamedTuple):
    """A client's queued or running job in the active index: its id, when it was created
    (ISO UTC), and its estimated run time (whole seconds)."""

    job_id: str
    created_at: str
    estimate_seconds: int


class LaterEntry(NamedTuple):
    """A job in the later index: it waits for its release, to start at ``run_at`` (ISO UTC)."""

    job_id: str
    run_at: str
    lane: int = 0


class PendingEntry(NamedTuple):
    """A job in the pending index: its message is due on the job queue since ``pending_at``."""

    job_id: str
    pending_at: int


class JobTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    # --- creating and reading ---------------------------------------------------------

    def create(self, job: Job) -> None:
        """Write a new job; a second write of the same id fails (ids are never reused)."""
        self._call(
            "put_item", Item=to_item(job), ConditionExpression="attribute_not_exists(job_id)"
        )

    def create_many(
        self, jobs: Sequence[Job], sleep: Callable[[float], None] = time.sleep
    ) -> list[Job]:
        """Write new jobs, _BATCH_WRITE_LIMIT a BatchWriteItem call, retrying the items
        DynamoDB leaves unprocessed with exponential backoff; returns the jobs not known
        to be written (empty when all were), in order.

        BatchWriteItem takes no condition, so unlike ``create`` a put would replace an
        item of the same id: each job must be new (``Job.new``: a fresh uuid4, never
        reused). A job still unprocessed after _BATCH_WRITE_ROUNDS calls was not written;
        a call that fails whole (StoreUnavailable) may have written any of its items, so
        its jobs and every later one are returned, and writing stops: the caller fails
        them (``fail_submission``, which does nothing to a job that does not exist).
        """
        for start in range(0, len(jobs), _BATCH_WRITE_LIMIT):
            chunk = {job.job_id: job for job in jobs[start : start + _BATCH_WRITE_LIMIT]}
            requests = [{"PutRequest": {"Item": to_item(job)}} for job in chunk.values()]
            delay = _BATCH_WRITE_BACKOFF_SECONDS
            for round in range(_BATCH_WRITE_ROUNDS):
                if round:
                    sleep(delay)
                    delay *= 2
                try:
                    response = self._call_unscoped(
                        "batch_write_item", RequestItems={self.table_name: requests}
                    )
                except StoreUnavailable:
                    logger.exception("BatchWriteItem failed; its jobs are not known written")
                    unwritten = {
                        request["PutRequest"]["Item"]["job_id"]["S"] for request in requests
                    }
                    return [j for j in chunk.values() if j.job_id in unwritten] + list(
                        jobs[start + _BATCH_WRITE_LIMIT :]
                    )
                requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
                if not requests:
                    break
            else:
                unwritten = {request["PutRequest"]["Item"]["job_id"]["S"] for request in requests}
                return [j for j in chunk.values() if j.job_id in unwritten] + list(
                    jobs[start + _BATCH_WRITE_LIMIT :]
                )
        return []

    def create_with_key(self, job: Job, record_id: str, now: datetime) -> IdempotencyRecord | None:
        """Write the job and its Idempotency-Key record in one transaction.

        Returns None when both were written, or the record already holding the key (the
        job it created and its request fingerprint). An expired record counts as absent.
        """
        key_record = {
            "job_id": {"S": record_id},
            "target": {"S": job.job_id},
            "request_hash": {"S": job.request_hash or ""},
        }
        if job.expires_at is not None:
            key_record[EXPIRES_AT] = {"N": str(job.expires_at)}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": key_record,
                            # The key is free, or held by a record past its expiry.
                            "ConditionExpression": _KEY_IS_FREE,
                            "ExpressionAttributeNames": {"#expires": EXPIRES_AT},
                            "ExpressionAttributeValues": {":now": _attr(int(now.timestamp()))},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": to_item(job),
                            "ConditionExpression": "attribute_not_exists(job_id)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "TransactionCanceledException":
                raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
            existing = self._get_item(record_id)
            if existing is None:  # the holder expired and vanished meanwhile: try again
                raise StoreUnavailable("Idempotency-Key record changed; retry") from error
            return IdempotencyRecord(existing["target"]["S"], existing["request_hash"]["S"])
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
        return None

    def key_holder(self, record_id: str, now: datetime) -> IdempotencyRecord | None:
        """The unexpired Idempotency-Key record ``record_id``, if any (consistent read)."""
        item = self._get_item(record_id)
        if item is None:
            return None
        expires = item.get(EXPIRES_AT)
        # Expired as create_with_key sees it (_KEY_IS_FREE): the key is free again.
        if expires is not None and int(Decimal(expires["N"])) < int(now.timestamp()):
            return None
        return IdempotencyRecord(item["target"]["S"], item["request_hash"]["S"])

    def get(self, job_id: str) -> Job | None:
        item = self._get_item(job_id)
        return from_item(item) if item else None

    def get_many(self, job_ids: Sequence[str], consistent: bool = False) -> dict[str, Job]:
        """The jobs with these ids that exist, by id (BatchGetItem, 100 keys a request).
        An item that cannot be read as a job is left out and logged: it does not hide
        the others (``read_many`` returns it too)."""
        found: dict[str, Job] = {}
        for job_id, job in self.read_many(job_ids, consistent).items():
            if isinstance(job, UnreadableJob):
                logger.warning(
                    "A job's record cannot be read; left out",
                    job_id=job_id,
                    reason=f"{type(job.error).__name__}: {job.error}",
                )
            else:
                found[job_id] = job
        return found

    def read_many(
        self, job_ids: Sequence[str], consistent: bool = False
    ) -> dict[str, Job | UnreadableJob]:
        """The jobs with these ids that exist, by id, each read on its own: an item that
        cannot be read as a job is an UnreadableJob, never an exception that would hide
        the others. StoreUnavailable if DynamoDB fails."""
        found: dict[str, Job | UnreadableJob] = {}
        unique = list(dict.fromkeys(job_ids))
        for start in range(0, len(unique), _BATCH_GET_LIMIT):
            keys = [_key(job_id) for job_id in unique[start : start + _BATCH_GET_LIMIT]]
            for _ in range(_BATCH_GET_ROUNDS):
                request = {self.table_name: {"Keys": keys, "ConsistentRead": consistent}}
                response = self._call_unscoped("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    if is_job_item(item):
                        job = _read(item)
                        found[job.job_id] = job
                keys = response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys")
                if not keys:
                    break
            else:
                raise StoreUnavailable("DynamoDB BatchGetItem left keys unprocessed; retry")
        return found

    # --- listing ----------------------------------------------------------------------

    def page(
        self, listing: Listing, limit: int, positions: Sequence[Position], now: datetime
    ) -> ListingPage:
        """One page of ``listing``, newest first, from ``positions`` (one per shard).

        One Query per shard on the listing's index (keys and expires_at only; expired jobs
        are filtered out in the query, as DynamoDB's TTL deletes them only eventually),
        merged by (created_at, job_id) descending; the first ``limit`` are read with one
        BatchGetItem. A job that left the listing between the two reads (its status
        changed) is left out, so a page may hold fewer than ``limit`` jobs and still have
        more after it. ValueError if a position does not fit the index.
        """
        candidates: list[tuple[str, str, int]] = []
        continuations: dict[int, tuple[str, str] | None] = {}
        for shard, position in enumerate(positions):
            if position == END:
                continue
            start = position if isinstance(position, tuple) else None
            keys, continuation = self._listing_keys(listing, shard, start, limit, now)
            candidates += [(created_at, job_id, shard) for created_at, job_id in keys]
            continuations[shard] = continuation
        candidates.sort(reverse=True)
        taken, left = candidates[:limit], candidates[limit:]
        next_positions = list(positions)
        for shard, continuation in continuations.items():
            mine = [(created_at, job_id) for created_at, job_id, s in taken if s == shard]
            unread = any(s == shard for _, _, s in left)
            if mine:
                next_positions[shard] = mine[-1]
            elif continuation is not None and not unread:
                next_positions[shard] = continuation  # it returned only expired jobs
            if continuation is None and not unread:
                next_positions[shard] = END
        jobs = self.get_many([job_id for _, job_id, _ in taken])
        listed = [
            jobs[job_id]
            for _, job_id, _ in taken
            if job_id in jobs and listing.matches(jobs[job_id]) and not jobs[job_id].is_expired(now)
        ]
        return ListingPage(listed, tuple(next_positions))

    def _listing_keys(
        self,
        listing: Listing,
        shard: int,
        start: tuple[str, str] | None,
        limit: int,
        now: datetime,
    ) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
        """Up to ``limit`` unexpired (created_at, job_id) of one shard, newest first, after
        ``start``; and where the index continues (None: nothing more)."""
        index = listing.index
        partition = listing.partition(shard)
        kwargs: dict[str, Any] = {
            "IndexName": index.name,
            "KeyConditionExpression": "#partition = :partition",
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ExpressionAttributeNames": {"#partition": index.partition_key, "#expires": EXPIRES_AT},
            "ExpressionAttributeValues": {
                ":partition": {"S": partition},
                ":now": _attr(int(now.timestamp())),
            },
            "ScanIndexForward": False,
            "Limit": limit,
        }
        keys: list[tuple[str, str]] = []
        continuation = start
        for queries in range(_MAX_QUERIES_PER_SHARD):
            if continuation is not None:
                created_at, job_id = continuation
                kwargs["ExclusiveStartKey"] = {
                    "job_id": {"S": job_id},
                    index.sort_key: {"S": created_at},
                    index.partition_key: {"S": partition},
                }
            elif queries:
                break
            response = self._query(kwargs, has_start=continuation is not None)
            keys += [(item[index.sort_key]["S"], item["job_id"]["S"]) for item in response["Items"]]
            last = response.get("LastEvaluatedKey")
            continuation = (last[index.sort_key]["S"], last["job_id"]["S"]) if last else None
            if continuation is None or len(keys) >= limit:
                break
        return keys, continuation

    def _query(self, kwargs: dict[str, Any], has_start: bool) -> Any:
        try:
            return self._client.query(TableName=self.table_name, **kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ValidationException" and has_start:
                raise ValueError("the start key does not fit this listing") from error
            raise StoreUnavailable(f"DynamoDB Query failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB Query failed: {error}") from error

    # --- a worker's run of a job --------------------------------------------------------

    def claim(
        self,
        job_id: str,
        kind: str,
        owner: str,
        now: datetime,
        lease_ms: int,
        resume: bool = False,
        client: str | None = None,
    ) -> Job | None:
        """Start a run of the job under lease token ``owner``; None if it is not free.

        Free means: queued (and, for a plain message, not waiting for a continuation), or
        running with an expired lease (its run died: a take-over). Each such start is an
        attempt, except a continuation's (``resume``) start of a job queued to continue.
        The claim ends the job's pending state: its message has arrived. ``kind`` must be
        the job's (it names the job's listing keys); a job of another kind is not claimed.
        ``client``, the job's, names its client's listing keys (a job of another client is
        not claimed either); None reads it first (one
        consistent GetItem of that attribute: a client never changes, so the read cannot
        go stale before the write). None if the job is missing.
        """
        if client is None:
            client = self.client_of(job_id)
            if client is None:
                return None
        if resume:
            continued = self._claim(
                job_id,
                kind,
                client,
                owner,
                now,
                lease_ms,
                "#status = :queued AND resume = :true",
                0,
            )
            if continued is not None:
                return continued
        condition = (
            "#status = :running AND lease_until < :now_ms"
            if resume
            else "(#status = :queued AND attribute_not_exists(resume))"
            " OR (#status = :running AND lease_until < :now_ms)"
        )
        return self._claim(job_id, kind, client, owner, now, lease_ms, condition, 1)

    def client_of(self, job_id: str) -> str | None:
        """The client of the job (anonymous for a job written before clients), reading
        only that attribute; None if there is no such job."""
        response = self._call(
            "get_item",
            Key=_key(job_id),
            ProjectionExpression="job_id, #client",
            ExpressionAttributeNames={"#client": "client"},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        return str(item.get("client", {}).get("S", ANONYMOUS))

    def _claim(
        self,
        job_id: str,
        kind: str,
        client: str,
        owner: str,
        now: datetime,
        lease_ms: int,
        condition: str,
        increment: int,
    ) -> Job | None:
        return self._update(
            job_id,
            "SET #status = :to, #owner = :owner, lease_until = :lease,"
            " started_at = if_not_exists(started_at, :now), attempts = attempts + :inc, "
            + _STATUS_KEYS
            + f" REMOVE resume, {_NOT_PENDING}",
            # The kind and client named the keys written: they must be the job's (an item
            # written before clients has none: anonymous's).
            f"#kind = :kind AND {_ANONYMOUS_IS if client == ANONYMOUS else _CLIENT_IS}"
            f" AND ({condition})",
            {
                **_status_values(job_id, kind, JobStatus.RUNNING, client),
                ":queued": JobStatus.QUEUED,
                ":running": JobStatus.RUNNING,
                ":true": True,
                ":inc": increment,
                ":kind": kind,
                ":client": client,
                ":owner": owner,
                ":lease": epoch_ms(now) + lease_ms,
                ":now": now,
                ":now_ms": epoch_ms(now),
            },
        )

    def checkpoint(
        self,
        job_id: str,
        owner: str,
        state: str,
        progress: float,
        lease_until_ms: int,
        progress_mark: int | None = None,
    ) -> Job | None:
        """Save the run's state (JSON text, at most MAX_STATE_BYTES) and progress and renew
        its lease (the heartbeat); owner only. ``progress_mark`` (epoch ms), when given,
        becomes the job's progress mark: this checkpoint is then published as its
        progress (chalicelib.events); without it, the mark is left as it is.

        It changes no index key or projected attribute (the mark is neither), so no
        index is written."""
        update = "SET #state = :state, progress = :progress, lease_until = :lease"
        values: dict[str, Any] = {
            ":state": state,
            ":progress": progress,
            ":lease": lease_until_ms,
            ":running": JobStatus.RUNNING,
            ":owner": owner,
        }
        if progress_mark is not None:
            update += ", #progress_mark = :progress_mark"
            values[":progress_mark"] = progress_mark
        return self._update(job_id, update, "#status = :running AND #owner = :owner", values)

    def succeed(self, job: Job, owner: str, result: Any, now: datetime) -> Job | None:
        """Finish the job with its result (JSON form); only the run that owns it can."""
        return self._update(
            job.job_id,
            "SET #status = :to, #result = :result, progress = :one, finished_at = :now, "
            + _STATUS_KEYS
            + f" REMOVE #owner, lease_until, last_error, {_NOT_ACTIVE}",
            "#status = :running AND #owner = :owner",
            {
                **_status_values(job.job_id, job.kind, JobStatus.SUCCEEDED, job.client),
                ":one": 1,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
            },
            raw_values={":result": result_attribute(result)},
        )

    def fail(self, job: Job, owner: str, error: str, now: datetime) -> Job | None:
        """Finish the job as failed; only the run that owns it can."""
        return self._update(
            job.job_id,
            "SET #status = :to, #error = :error, finished_at = :now, "
            + _STATUS_KEYS
            + f" REMOVE #owner, lease_until, {_NOT_ACTIVE}",
            "#status = :running AND #owner = :owner",
            {
                **_status_values(job.job_id, job.kind, JobStatus.FAILED, job.client),
                ":error": error,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
            },
        )

    def release(
        self,
        job: Job,
        owner: str,
        pending_at_ms: int,
        resume: bool,
        last_error: str | None = None,
    ) -> Job | None:
        """Queue the job again, keeping its checkpoint: to continue it in a new invocation
        (``resume``) or to retry it after a failed attempt. Its message is due on the job
        queue from ``pending_at_ms`` (now, or when the delay queue forwards a retry)."""
        update = (
            "SET #status = :to, #pending_key = :pending_key, #pending_at = :pending_at, "
            + _STATUS_KEYS
        )
        values: dict[str, Any] = {
            **_status_values(job.job_id, job.kind, JobStatus.QUEUED, job.client),
            ":pending_key": pending_key(job.job_id, job.lane),
            ":pending_at": pending_at_ms,
            ":running": JobStatus.RUNNING,
            ":owner": owner,
        }
        if resume:
            update += ", resume = :true"
            values[":true"] = True
        if last_error is not None:
            update += ", last_error = :last_error"
            values[":last_error"] = last_error
        return self._update(
            job.job_id,
            update + " REMOVE #owner, lease_until",
            "#status = :running AND #owner = :owner",
            values,
        )

    # --- outside a run: cancellation, failures, dead letters, recovery -----------------

    def cancel(self, job: Job, now: datetime) -> Job | None:
        """Cancel a queued or running job. A queued one will never start; a running one's
        owner fails its next checkpoint and stops. None if the job is already final."""
        return self._finish_unfinished(job, JobStatus.CANCELLED, now, {})

    def fail_unfinished(self, job: Job, error: str, now: datetime) -> Job | None:
        """Fail a job that is still queued or running, whoever holds it (dead letters,
        crash loops). None if it is already final."""
        return self._finish_unfinished(job, JobStatus.FAILED, now, {"#error": error})

    def fail_unreadable(self, job_id: str, error: str, now: datetime) -> bool:
        """Fail a queued or running job whose item cannot be read as a job (a state that
        is not JSON, a field a newer release wrote): the same write as ``fail_unfinished``,
        built without parsing the item. Only its kind and client are read (two attributes,
        for the listing keys of its new status); an item without a kind drops out of the
        kind and status listings, one without a client (written before clients) is
        anonymous's. False if there is no such job or it is already final."""
        response = self._call(
            "get_item",
            Key=_key(job_id),
            ProjectionExpression="job_id, #kind, #client",
            ExpressionAttributeNames={"#kind": "kind", "#client": "client"},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return False
        kind = item.get("kind", {}).get("S")
        client = item.get("client", {}).get("S", ANONYMOUS)
        failed = self._finish(job_id, kind, client, JobStatus.FAILED, now, {"#error": error})
        return failed is not None

    def _finish_unfinished(
        self, job: Job, status: JobStatus, now: datetime, extra: dict[str, Any]
    ) -> Job | None:
        item = self._finish(job.job_id, job.kind, job.client, status, now, extra, "ALL_NEW")
        return None if item is None else from_item(item)

    def _finish(
        self,
        job_id: str,
        kind: str | None,
        client: str,
        status: JobStatus,
        now: datetime,
        extra: dict[str, Any],
        returns: str = "NONE",
    ) -> dict[str, Any] | None:
        """Move a queued or running job to final ``status``, whoever holds it: the item as
        written (``returns``: ALL_NEW, or NONE for no attributes), or None if the job is
        missing or already final. ``kind`` None: no kind and status listing keys."""
        sets = "".join(f", {name} = :{name[1:]}" for name in extra)
        status_keys_set, removed = _STATUS_KEYS, ""
        if kind is None:
            status_keys_set = _STATUS_KEYS_WITHOUT_KIND
            removed = ", " + ", ".join(f"#{name}" for name in KIND_STATUS_KEYS)
        return self._write(
            job_id,
            "SET #status = :to, finished_at = :now, "
            + status_keys_set
            + sets
            + f" REMOVE #owner, lease_until, resume, {_NOT_PENDING}, {_NOT_ACTIVE}{removed}",
            "#status IN (:queued, :running)",
            {
                **_status_values(job_id, kind or "", status, client),
                **{f":{name[1:]}": value for name, value in extra.items()},
                ":now": now,
                ":queued": JobStatus.QUEUED,
                ":running": JobStatus.RUNNING,
            },
            returns=returns,
        )

    def fail_submission(
        self, job: Job, error: str, now: datetime, key_record_id: str | None = None
    ) -> bool:
        """Fail a job whose message could not be sent, and release its Idempotency-Key
        record (if any) in the same transaction, so that a retry with the same key creates
        a new job instead of replaying the failed one. False if the job had already left
        ``queued`` (nothing changed)."""
        update = {
            "TableName": self.table_name,
            "Key": _key(job.job_id),
            "UpdateExpression": "SET #status = :to, #error = :error, finished_at = :now, "
            + _STATUS_KEYS
            + f" REMOVE {_NOT_PENDING}, {_NOT_ACTIVE}",
            "ConditionExpression": "#status = :queued",
        }
        values: dict[str, Any] = {
            **_status_values(job.job_id, job.kind, JobStatus.FAILED, job.client),
            ":error": error,
            ":now": now,
            ":queued": JobStatus.QUEUED,
        }
        _add_expression(update, values)
        items: list[dict[str, Any]] = [{"Update": update}]
        if key_record_id is not None:
            release = {
                "TableName": self.table_name,
                "Key": _key(key_record_id),
                # Only the record that points at this job: never another job's key.
                "ConditionExpression": "#target = :job_id",
            }
            _add_expression(release, {":job_id": job.job_id})
            items.append({"Delete": release})
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
        return True

    def redrive_pending(self, job_id: str, pending_at_ms: int, now_ms: int) -> Job | None:
        """Mark a queued job whose message was due at ``pending_at_ms`` as due again now
        (before its message is sent again). Condition: still queued and still due at that
        time, so concurrent sweeps re-drive it once, and at most once per cutoff period."""
        return self._update(
            job_id,
            "SET #pending_at = :now_ms",
            "#status = :queued AND #pending_at = :old",
            {":queued": JobStatus.QUEUED, ":old": pending_at_ms, ":now_ms": now_ms},
        )

    def clear_pending(self, job_id: str, pending_at_ms: int) -> Job | None:
        """Drop the pending mark of a job that is no longer queued (written by code that
        predates the pending index), so the sweep stops finding it."""
        return self._update(
            job_id,
            f"REMOVE {_NOT_PENDING}",
            "#pending_at = :old AND #status <> :queued",
            {":queued": JobStatus.QUEUED, ":old": pending_at_ms},
        )

    def requeue_running(self, job: Job, now_ms: int) -> Job | None:
        """Queue again a running job whose lease expired long ago (as read in ``job``): its
        run died and its message is gone too. A late zombie owner fails its next
        checkpoint and stops. Condition: status and lease unchanged since read, so
        concurrent sweeps re-drive it once."""
        return self._update(
            job.job_id,
            "SET #status = :to, #pending_key = :pending_key, #pending_at = :now_ms, "
            + _STATUS_KEYS
            + " REMOVE #owner, lease_until",
            "#status = :running AND lease_until = :old",
            {
                **_status_values(job.job_id, job.kind, JobStatus.QUEUED, job.client),
                ":pending_key": pending_key(job.job_id, job.lane),
                ":now_ms": now_ms,
                ":running": JobStatus.RUNNING,
                ":old": job.lease_until or 0,
            },
        )

    def redrive_dead_letter(self, job: Job, now_ms: int, max_redrives: int) -> Job | None:
        """Count one more re-drive of a job that never started (queued, no attempt) and
        mark its message due now; None once it was re-driven ``max_redrives`` times or if
        it started meanwhile."""
        return self._update(
            job.job_id,
            "SET redrives = if_not_exists(redrives, :zero) + :one,"
            " #pending_key = :pending_key, #pending_at = :now_ms",
            "#status = :queued AND attempts = :zero"
            " AND (attribute_not_exists(redrives) OR redrives < :max)",
            {
                ":queued": JobStatus.QUEUED,
                ":zero": 0,
                ":one": 1,
                ":max": max_redrives,
                ":pending_key": pending_key(job.job_id, job.lane),
                ":now_ms": now_ms,
            },
        )

    def lost_pending(
        self, cutoff_ms: int, limit_per_shard: int, lane: int = 0
    ) -> list[PendingEntry]:
        """Queued jobs of ``lane`` whose message was due before ``cutoff_ms``, oldest due
        first: one Query per shard of the lane's partitions of the pending index, at most
        ``limit_per_shard`` each. Jobs due after the cutoff, and other lanes' jobs, are
        never read, however many there are."""
        entries: list[PendingEntry] = []
        for shard in range(SHARDS):
            response = self._query(
                {
                    "IndexName": PENDING.name,
                    "KeyConditionExpression": "#pending_key = :pending_key"
                    " AND #pending_at < :cutoff",
                    "ExpressionAttributeNames": {
                        "#pending_key": PENDING.partition_key,
                        "#pending_at": PENDING.sort_key,
                    },
                    "ExpressionAttributeValues": {
                        ":pending_key": {"S": pending_partition(lane, shard)},
                        ":cutoff": _attr(cutoff_ms),
                    },
                    "Limit": limit_per_shard,
                },
                has_start=False,
            )
            # Only the keys: typed by the index (a string and a number), so always readable.
            entries += [
                PendingEntry(item["job_id"]["S"], int(Decimal(item[PENDING.sort_key]["N"])))
                for item in response["Items"]
            ]
        return sorted(entries, key=lambda entry: entry.pending_at)

    def due_later(self, before: datetime, limit_per_shard: int) -> list[LaterEntry]:
        """Jobs waiting in the later index whose run_at is before ``before``, soonest
        first: one Query per shard, at most ``limit_per_shard`` each. Jobs due after it
        are never read, however many wait: the read costs the same with none or 10,000."""
        entries: list[LaterEntry] = []
        for shard in range(SHARDS):
            response = self._query(
                {
                    "IndexName": LATER.name,
                    "KeyConditionExpression": "#later_key = :later_key AND #run_at < :before",
                    "ExpressionAttributeNames": {
                        "#later_key": LATER.partition_key,
                        "#run_at": LATER.sort_key,
                    },
                    "ExpressionAttributeValues": {
                        ":later_key": {"S": f"later#{shard}"},
                        ":before": {"S": iso_utc(before)},
                    },
                    "Limit": limit_per_shard,
                },
                has_start=False,
            )
            entries += [
                LaterEntry(
                    item["job_id"]["S"],
                    item[LATER.sort_key]["S"],
                    int(item[LANE]["N"]) if LANE in item else 0,
                )
                for item in response["Items"]
            ]
        return sorted(entries, key=lambda entry: entry.run_at)

    def release_later(
        self, job_id: str, run_at: str, pending_at_ms: int, lane: int = 0
    ) -> Job | None:
        """Take a job out of the later index into ``lane``'s partition of the pending
        index, its message due from ``pending_at_ms`` (its run_at), before the message is
        sent: if the send is lost, the recovery sweep sends it after that. Condition: still
        queued and still waiting (and for this run_at), so a cancelled job is never
        released, and two releases of one job make one message."""
        return self._update(
            job_id,
            "SET #pending_key = :pending_key, #pending_at = :pending_at REMOVE #later_key",
            "#status = :queued AND attribute_exists(#later_key) AND #run_at = :run_at",
            {
                ":queued": JobStatus.QUEUED,
                ":pending_key": pending_key(job_id, lane),
                ":pending_at": pending_at_ms,
                ":run_at": run_at,
            },
        )

    def hold_later(self, job_id: str, run_at: str, pending_at_ms: int) -> Job | None:
        """Put a released job whose send failed back in the later index (undoing
        ``release_later``), so the next release sends it, still ahead of its time.
        Condition: still queued, due at that time and not waiting again (a sweep that
        re-sent it meanwhile moved its due time)."""
        return self._update(
            job_id,
            f"SET #later_key = :later_key REMOVE {_NOT_DUE}",
            "#status = :queued AND #pending_at = :pending_at AND #run_at = :run_at"
            " AND attribute_not_exists(#later_key)",
            {
                ":queued": JobStatus.QUEUED,
                ":later_key": later_key(job_id),
                ":pending_at": pending_at_ms,
                ":run_at": run_at,
            },
        )

    def active(self, client: str, limit: int) -> list[ActiveEntry]:
        """Up to ``limit`` of ``client``'s queued and running jobs, oldest first, with
        their estimates: Queries of the client's one partition of the sparse active index,
        a page at a time, until ``limit`` entries or the end. It reads no other client's
        entry and no finished job's, so its cost is bounded by ``limit`` whatever the
        table holds. The index is eventually consistent: a job written or finished a
        moment ago may be missing or still there."""
        kwargs: dict[str, Any] = {
            "IndexName": ACTIVE.name,
            "KeyConditionExpression": "#active_key = :client",
            "ExpressionAttributeNames": {"#active_key": ACTIVE.partition_key},
            "ExpressionAttributeValues": {":client": {"S": active_key(client)}},
            "ScanIndexForward": True,
            "Limit": limit,
        }
        entries: list[ActiveEntry] = []
        while len(entries) < limit:
            kwargs["Limit"] = limit - len(entries)
            response = self._query(kwargs, has_start=False)
            entries += [
                ActiveEntry(
                    item["job_id"]["S"],
                    item[ACTIVE.sort_key]["S"],
                    int(Decimal(item[ESTIMATE_SECONDS]["N"])) if ESTIMATE_SECONDS in item else 1,
                )
                for item in response["Items"]
            ]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return entries

    def running(self, limit_per_shard: int) -> list[Job | UnreadableJob]:
        """The jobs the status index lists as running (at most a few: one worker), read
        consistently, each on its own (``read_many``: an unreadable one is an
        UnreadableJob); one Query per shard, then one BatchGetItem."""
        listing = Listing(status=JobStatus.RUNNING)
        job_ids: list[str] = []
        for shard in range(SHARDS):
            response = self._query(
                {
                    "IndexName": listing.index.name,
                    "KeyConditionExpression": "#partition = :partition",
                    "ExpressionAttributeNames": {"#partition": listing.index.partition_key},
                    "ExpressionAttributeValues": {":partition": {"S": listing.partition(shard)}},
                    "Limit": limit_per_shard,
                },
                has_start=False,
            )
            job_ids += [item["job_id"]["S"] for item in response["Items"]]
        return list(self.read_many(job_ids, consistent=True).values())

    def rewrite_derived(
        self, job: Job, with_input: bool = False, with_client: bool = False
    ) -> Job | None:
        """Rewrite the index keys of ``job`` (as read) from its status: for items whose
        status was changed by code that predates them; ``with_input`` also writes its
        input (an item written before kinds has only n), ``with_client`` its client (an
        item written before clients has none: anonymous's). Condition: status unchanged."""
        derived = derived_attributes(job)
        item = to_item(job)
        if with_input:
            derived["input"] = item["input"]
        if with_client:
            derived["client"] = item["client"]
        names = {f"#d{i}": name for i, name in enumerate(derived)}
        values = {f":d{i}": value for i, value in enumerate(derived.values())}
        update = "SET " + ", ".join(f"{n} = {v}" for n, v in zip(names, values, strict=True))
        removed = [] if PENDING.partition_key in derived else [_NOT_DUE]
        if LATER.partition_key not in derived:
            removed.append(_NOT_WAITING)
        if ACTIVE.partition_key not in derived:
            removed.append(_NOT_ACTIVE)
        if removed:
            update += " REMOVE " + ", ".join(removed)
        return self._update(
            job.job_id, update, "#status = :status", {":status": job.status}, values, names
        )

    # --- control items ------------------------------------------------------------------

    def worker_paused(self) -> WorkerPause:
        """Whether the worker is paused, as `make pause`/`make resume` last recorded it
        (not paused when never recorded)."""
        item = self._call("get_item", Key=_key(WORKER_ITEM)).get("Item") or {}
        return WorkerPause(
            paused=bool(item.get("paused", {}).get("BOOL", False)),
            paused_at=item.get("paused_at", {}).get("S"),
        )

    def record_worker_paused(self, paused: bool, now: datetime) -> None:
        """Record that the worker was paused (at ``now``) or resumed. Written by the
        operator's `make pause`/`make resume` after the event source itself changed: the
        event source is the truth, this item what the API reports of it."""
        update = "SET paused = :paused" + (", paused_at = :at" if paused else " REMOVE paused_at")
        values = {":paused": _attr(paused), **({":at": _attr(now)} if paused else {})}
        self._call(
            "update_item",
            Key=_key(WORKER_ITEM),
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )

    def watermark(self, lane: int = 0) -> int | None:
        """The largest SentTimestamp (epoch ms) a worker has recorded receiving from
        ``lane``'s message group, if any."""
        item = self._call("get_item", Key=_key(watermark_item(lane))).get("Item")
        return int(item["sent_ms"]["N"]) if item and "sent_ms" in item else None

    def raise_watermark(self, sent_ms: int, lane: int = 0) -> bool:
        """Record ``sent_ms`` as ``lane``'s watermark unless it is already as high; True if
        raised."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=_key(watermark_item(lane)),
                UpdateExpression="SET sent_ms = :sent",
                # It only grows: a late or out-of-order writer cannot pull it back.
                ConditionExpression="attribute_not_exists(sent_ms) OR sent_ms < :sent",
                ExpressionAttributeValues={":sent": _attr(sent_ms)},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == _CONDITION_FAILED:
                return False
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        return True

    def schema_version(self) -> int:
        """The item layout version the table's items are at (1 when never recorded: a
        table written by release aa910a9, or a new one)."""
        item = self._get_item(SCHEMA_ITEM)
        return int(item["version"]["N"]) if item else 1

    def migrate(self, page_size: int = 200) -> MigrationReport:
        """Bring every job item to SCHEMA_VERSION's layout, then record that version.

        Run once per table (by infra/stack.py when a stage is applied; it needs Scan, which
        no function of the app is granted). Each job item gets the index keys its status
        derives and, if written before kinds, its input (from n), if written before
        clients, its client (anonymous: those jobs were every caller's); a queued job without a
        pending time gets its creation time (its message went with the queue an older
        version used, so the recovery sweep sends it again). Each rewrite is conditional
        on the status read; a job that changed meanwhile is read again, up to
        _MIGRATION_TRIES times. A job still changing after that is counted in ``unsettled``
        and the version is not recorded, so the next apply migrates again. Idempotent: safe
        to run again, or after an interruption.
        """
        report = MigrationReport()
        for item in self._scan(page_size):
            report.scanned += 1
            if not is_job_item(item):
                continue
            for _ in range(_MIGRATION_TRIES):
                job = from_item(item)
                if job.status is JobStatus.QUEUED and job.pending_at is None:
                    job = job.with_(pending_at=epoch_ms(job.created_at))
                wanted = derived_attributes(job)
                # Version 3: every job item has its input (before kinds: only heavyLoad's n).
                no_input = "input" not in item
                # Version 4: every job item has its client (before clients: anonymous's)
                # and the client listing keys; a final job has no active key.
                no_client = "client" not in item
                settled = not no_input and not no_client
                stale_active = job.status.is_final and ACTIVE.partition_key in item
                if (
                    settled
                    and not stale_active
                    and all(item.get(k) == v for k, v in wanted.items())
                ):
                    break
                if (
                    self.rewrite_derived(job, with_input=no_input, with_client=no_client)
                    is not None
                ):
                    report.rewritten += 1
                    break
                fresh = self._get_item(job.job_id)
                if fresh is None:
                    break
                item = fresh
            else:
                report.unsettled += 1
        if report.unsettled:
            return report
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={"job_id": {"S": SCHEMA_ITEM}, "version": _attr(SCHEMA_VERSION)},
                # Never lowers a version a newer release recorded.
                ConditionExpression="attribute_not_exists(version) OR version < :version",
                ExpressionAttributeValues={":version": _attr(SCHEMA_VERSION)},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != _CONDITION_FAILED:
                raise StoreUnavailable(f"DynamoDB PutItem failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB PutItem failed: {error}") from error
        return report

    def _scan(self, page_size: int) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Limit": page_size, "ConsistentRead": True}
        while True:
            response = self._call("scan", **kwargs)
            yield from response["Items"]
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # --- plumbing ---------------------------------------------------------------------

    def _get_item(self, key: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key=_key(key), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        raw_values: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
    ) -> Job | None:
        item = self._write(job_id, update, condition, values, raw_values, names, "ALL_NEW")
        return None if item is None else from_item(item)

    def _write(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        raw_values: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
        returns: str = "ALL_NEW",
    ) -> dict[str, Any] | None:
        """A conditional UpdateItem of an existing job: the attributes ``returns`` asks
        for (an empty dict for NONE), or None if the condition did not hold."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(job_id),
            "UpdateExpression": update,
            # The job must exist: an update would otherwise create a stub item.
            "ConditionExpression": f"attribute_exists(job_id) AND ({condition})",
            "ReturnValues": returns,
        }
        _add_expression(request, values, names, raw_values)
        try:
            response = self._client.update_item(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] == _CONDITION_FAILED:
                return None
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        attributes: dict[str, Any] = response.get("Attributes", {})
        return attributes

    def _call(self, operation: str, **kwargs: Any) -> Any:
        return self._call_unscoped(operation, TableName=self.table_name, **kwargs)

    def _call_unscoped(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"DynamoDB {operation} failed: {error}") from error


@dataclass
class MigrationReport:
    scanned: int = 0
    rewritten: int = 0
    # Jobs whose status changed under each of the migration's tries (left as they were).
    unsettled: int = 0


# A status change sets the status and the four listing keys derived from it (each
# attribute's placeholders are its own name: "#status_key = :status_key").
_STATUS_KEYS = ", ".join(f"#{name} = :{name}" for name in STATUS_KEYS)
# The same for a job whose kind is unknown: it drops out of the listings by kind.
_STATUS_KEYS_WITHOUT_KIND = ", ".join(
    f"#{name} = :{name}" for name in STATUS_KEYS if name not in KIND_STATUS_KEYS
)


def _status_values(job_id: str, kind: str, status: JobStatus, client: str) -> dict[str, Any]:
    """The values of a change of a job to ``status``: ``:to`` and its listing keys."""
    keys = status_keys(job_id, kind, status, client)
    return {":to": status, **{f":{name}": value for name, value in keys.items()}}


def _add_expression(
    request: dict[str, Any],
    values: dict[str, Any],
    names: dict[str, str] | None = None,
    raw_values: dict[str, Any] | None = None,
) -> None:
    """Add the placeholders ``request``'s expressions use (and only those: DynamoDB
    rejects unused ones) from ``_NAMES``, ``names``, ``values`` and ``raw_values``."""
    text = " ".join(str(request.get(k, "")) for k in ("UpdateExpression", "ConditionExpression"))
    used = set(re.findall(r"[:#]\w+", text))
    all_names = {**_NAMES, **(names or {})}
    request["ExpressionAttributeNames"] = {k: v for k, v in all_names.items() if k in used}
    request["ExpressionAttributeValues"] = {
        **{k: _attr(v) for k, v in values.items() if k in used},
        **{k: v for k, v in (raw_values or {}).items() if k in used},
    }
    if not request["ExpressionAttributeNames"]:
        del request["ExpressionAttributeNames"]


def _read(item: dict[str, Any]) -> Job | UnreadableJob:
    """A job's item as a Job, or as an UnreadableJob when it cannot be parsed (anything
    ``from_item`` raises: a value that is not JSON, a missing or mistyped field)."""
    try:
        return from_item(item)
    except Exception as error:
        try:
            lease_until: int | None = int(Decimal(item["lease_until"]["N"]))
        except Exception:
            lease_until = None
        return UnreadableJob(item["job_id"]["S"], lease_until, error)


def _key(job_id: str) -> dict[str, dict[str, str]]:
    return {"job_id": {"S": job_id}}


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, JobStatus):
        return {"S": value.value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, datetime):
        return {"S": iso_utc(value)}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    raise TypeError(f"no DynamoDB form for {value!r}")
