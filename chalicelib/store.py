"""Adapter: the DynamoDB job table.

Every status change is a conditional write, so a message delivered twice, a second worker,
or a cancellation racing a worker can never move a job backwards or let two runs both
write a result. A running job belongs to the attempt holding its lease token (``owner``);
only that attempt can checkpoint, finish or release it. Methods that change state return
the new Job, or None when their condition did not hold.

The table also holds Idempotency-Key records (key ``idempotency#<sha256>``); they have no
``status``, so the status index never lists them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import (
    EXPIRES_AT,
    LISTED,
    LISTED_VALUE,
    RECENT_INDEX,
    STATUS_INDEX,
    Job,
    JobStatus,
    epoch_ms,
    from_item,
    iso_utc,
    to_item,
)

_CONDITION_FAILED = "ConditionalCheckFailedException"
_KEY_IS_FREE = "attribute_not_exists(job_id) OR #expires < :now"
_NAMES = {
    "#status": "status",
    "#result": "result",
    "#error": "error",
    "#owner": "owner",
    "#position": "position",
    "#expires": EXPIRES_AT,
}


@dataclass(frozen=True)
class IdempotencyRecord:
    job_id: str
    request_hash: str


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

    def get(self, job_id: str) -> Job | None:
        item = self._get_item(job_id)
        return from_item(item) if item else None

    def by_status(self, status: JobStatus) -> Iterator[Job]:
        """Every job with ``status``, newest first, through the status index."""
        paginator = self._client.get_paginator("query")
        try:
            for page in paginator.paginate(
                TableName=self.table_name,
                IndexName=STATUS_INDEX,
                KeyConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":status": {"S": status.value}},
                ScanIndexForward=False,
            ):
                for item in page["Items"]:
                    yield from_item(item)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"DynamoDB Query failed: {error}") from error

    def page(
        self,
        status: JobStatus | None,
        limit: int,
        start_key: dict[str, Any] | None,
        now: datetime,
    ) -> tuple[list[Job], dict[str, Any] | None]:
        """One page of jobs, newest first, with the key to continue from (None at the end).

        Through the status index, or the recent index for every status; never a scan.
        Expired jobs are filtered out (DynamoDB's TTL deletes them only eventually), so
        a page may hold fewer than ``limit`` jobs and still have a next key.
        """
        if status is None:
            index, partition, value = RECENT_INDEX, LISTED, LISTED_VALUE
        else:
            index, partition, value = STATUS_INDEX, "status", status.value
        kwargs: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": "#partition = :partition",
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ExpressionAttributeNames": {"#partition": partition, "#expires": EXPIRES_AT},
            "ExpressionAttributeValues": {
                ":partition": {"S": value},
                ":now": _attr(int(now.timestamp())),
            },
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        try:
            response = self._client.query(TableName=self.table_name, **kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ValidationException" and start_key:
                raise ValueError("the start key does not fit this listing") from error
            raise StoreUnavailable(f"DynamoDB Query failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB Query failed: {error}") from error
        jobs = [from_item(item) for item in response["Items"]]
        return jobs, response.get("LastEvaluatedKey")

    # --- a worker's run of a job --------------------------------------------------------

    def claim(
        self, job_id: str, owner: str, now: datetime, lease_ms: int, resume: bool = False
    ) -> Job | None:
        """Start a run of the job under lease token ``owner``; None if it is not free.

        Free means: queued (and, for a plain message, not waiting for a continuation), or
        running with an expired lease (its worker died). Each such start is an attempt.
        With ``resume`` (a continuation message), only a job queued for continuation is
        taken, and it is not counted as a new attempt.
        """
        if resume:
            condition = "#status = :queued AND resume = :true"
            values: dict[str, Any] = {":queued": JobStatus.QUEUED, ":true": True, ":inc": 0}
        else:
            condition = (
                "(#status = :queued AND attribute_not_exists(resume))"
                " OR (#status = :running AND lease_until < :now_ms)"
            )
            values = {":queued": JobStatus.QUEUED, ":running": JobStatus.RUNNING, ":inc": 1}
        return self._update(
            job_id,
            "SET #status = :running, #owner = :owner, lease_until = :lease,"
            " started_at = if_not_exists(started_at, :now), attempts = attempts + :inc"
            " REMOVE resume",
            condition,
            {
                **values,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
                ":lease": epoch_ms(now) + lease_ms,
                ":now": now,
                ":now_ms": epoch_ms(now),
            },
        )

    def checkpoint(
        self, job_id: str, owner: str, position: int, progress: float, lease_until_ms: int
    ) -> Job | None:
        """Save how far the run got and renew its lease (the heartbeat); owner only."""
        return self._update(
            job_id,
            "SET #position = :position, progress = :progress, lease_until = :lease",
            "#status = :running AND #owner = :owner",
            {
                ":position": position,
                ":progress": progress,
                ":lease": lease_until_ms,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
            },
        )

    def succeed(self, job_id: str, owner: str, result: int, now: datetime) -> Job | None:
        """Finish the job with its result; only the run that owns it can."""
        return self._update(
            job_id,
            "SET #status = :succeeded, #result = :result, progress = :one, finished_at = :now"
            " REMOVE #owner, lease_until, last_error",
            "#status = :running AND #owner = :owner",
            {
                ":succeeded": JobStatus.SUCCEEDED,
                ":result": result,
                ":one": 1,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
            },
        )

    def fail(self, job_id: str, owner: str, error: str, now: datetime) -> Job | None:
        """Finish the job as failed; only the run that owns it can."""
        return self._update(
            job_id,
            "SET #status = :failed, #error = :error, finished_at = :now REMOVE #owner, lease_until",
            "#status = :running AND #owner = :owner",
            {
                ":failed": JobStatus.FAILED,
                ":error": error,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":owner": owner,
            },
        )

    def release(
        self,
        job_id: str,
        owner: str,
        lease_until_ms: int,
        resume: bool,
        last_error: str | None = None,
    ) -> Job | None:
        """Queue the job again, keeping its checkpoint: to continue it in a new invocation
        (``resume``) or to retry it after a failed attempt. The lease covers the wait for
        the next delivery; if none comes by then, the recovery sweep re-drives the job."""
        update = "SET #status = :queued, lease_until = :lease REMOVE #owner"
        values: dict[str, Any] = {
            ":queued": JobStatus.QUEUED,
            ":lease": lease_until_ms,
            ":running": JobStatus.RUNNING,
            ":owner": owner,
        }
        if resume:
            update = "SET #status = :queued, lease_until = :lease, resume = :true REMOVE #owner"
            values[":true"] = True
        if last_error is not None:
            update = update.replace("SET ", "SET last_error = :last_error, ", 1)
            values[":last_error"] = last_error
        return self._update(job_id, update, "#status = :running AND #owner = :owner", values)

    # --- outside a run: cancellation, dead letters, recovery ---------------------------

    def cancel(self, job_id: str, now: datetime) -> Job | None:
        """Cancel a queued or running job. A queued one will never start; a running one's
        owner fails its next checkpoint and stops. None if the job is already final."""
        return self._update(
            job_id,
            "SET #status = :cancelled, finished_at = :now REMOVE #owner, lease_until, resume",
            "#status IN (:queued, :running)",
            {
                ":cancelled": JobStatus.CANCELLED,
                ":now": now,
                ":queued": JobStatus.QUEUED,
                ":running": JobStatus.RUNNING,
            },
        )

    def fail_unfinished(self, job_id: str, error: str, now: datetime) -> Job | None:
        """Fail a job that is still queued or running, whoever holds it (dead letters,
        crash loops, a message that could not be sent). None if it is already final."""
        return self._update(
            job_id,
            "SET #status = :failed, #error = :error, finished_at = :now"
            " REMOVE #owner, lease_until, resume",
            "#status IN (:queued, :running)",
            {
                ":failed": JobStatus.FAILED,
                ":error": error,
                ":now": now,
                ":queued": JobStatus.QUEUED,
                ":running": JobStatus.RUNNING,
            },
        )

    def requeue_lost(self, job: Job, lease_until_ms: int) -> Job | None:
        """Queue again a job whose lease expired (as read in ``job``), with a new lease
        covering the re-drive. A running job's old owner, if it still lives, fails its
        next checkpoint and stops. Condition: status and lease unchanged since read, so
        concurrent sweeps re-drive it once."""
        return self._update(
            job.job_id,
            "SET #status = :queued, lease_until = :lease REMOVE #owner",
            "#status = :status AND lease_until = :old",
            {
                ":queued": JobStatus.QUEUED,
                ":lease": lease_until_ms,
                ":status": job.status,
                ":old": job.lease_until or 0,
            },
        )

    # --- plumbing ---------------------------------------------------------------------

    def _get_item(self, key: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key=_key(key), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _update(
        self, job_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> Job | None:
        used = set(re.findall(r"[:#]\w+", f"{update} {condition}"))
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=update,
                # The job must exist: an update would otherwise create a stub item.
                ConditionExpression=f"attribute_exists(job_id) AND ({condition})",
                ExpressionAttributeNames={k: v for k, v in _NAMES.items() if k in used},
                ExpressionAttributeValues={k: _attr(v) for k, v in values.items() if k in used},
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == _CONDITION_FAILED:
                return None
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {error}") from error
        return from_item(response["Attributes"])

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(TableName=self.table_name, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"DynamoDB {operation} failed: {error}") from error


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
