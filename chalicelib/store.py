"""Adapter: the DynamoDB job table.

Every status change is a conditional write, so a message delivered twice, or a second
worker, can never move a job backwards or overwrite another worker's result. Methods that
change state return the new Job, or None when the condition did not hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import Job, JobStatus, from_item, iso_utc, to_item

_CONDITION_FAILED = "ConditionalCheckFailedException"


class JobTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    def create(self, job: Job) -> None:
        """Write a new job; a second write of the same id fails (ids are never reused)."""
        self._call(
            "put_item",
            Item=to_item(job),
            ConditionExpression="attribute_not_exists(job_id)",
        )

    def get(self, job_id: str) -> Job | None:
        response = self._call("get_item", Key=_key(job_id), ConsistentRead=True)
        item = response.get("Item")
        return from_item(item) if item else None

    def start(self, job_id: str, now: datetime) -> Job | None:
        """Claim a queued job for one run: status running, attempts + 1.

        Condition: the job is still queued. A redelivered message, or a second worker,
        finds it running or finished and gets None.
        """
        return self._update(
            job_id,
            "SET #status = :running, started_at = :now, attempts = attempts + :one",
            "#status = :queued",
            {":running": JobStatus.RUNNING, ":queued": JobStatus.QUEUED, ":now": now, ":one": 1},
        )

    def report_progress(self, job_id: str, attempt: int, progress: float) -> Job | None:
        """Record progress, only while this attempt still owns the running job."""
        return self._update(
            job_id,
            "SET progress = :progress",
            "#status = :running AND attempts = :attempt",
            {":progress": progress, ":running": JobStatus.RUNNING, ":attempt": attempt},
        )

    def succeed(self, job_id: str, attempt: int, result: int, now: datetime) -> Job | None:
        """Finish the job with its result; only the attempt that owns it can."""
        return self._update(
            job_id,
            "SET #status = :succeeded, #result = :result, progress = :one, finished_at = :now",
            "#status = :running AND attempts = :attempt",
            {
                ":succeeded": JobStatus.SUCCEEDED,
                ":result": result,
                ":one": 1,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":attempt": attempt,
            },
        )

    def fail(self, job_id: str, attempt: int, error: str, now: datetime) -> Job | None:
        """Finish the job as failed; only the attempt that owns it can."""
        return self._update(
            job_id,
            "SET #status = :failed, #error = :error, finished_at = :now",
            "#status = :running AND attempts = :attempt",
            {
                ":failed": JobStatus.FAILED,
                ":error": error,
                ":now": now,
                ":running": JobStatus.RUNNING,
                ":attempt": attempt,
            },
        )

    def fail_queued(self, job_id: str, error: str, now: datetime) -> Job | None:
        """Fail a job that never started (e.g. its message could not be sent)."""
        return self._update(
            job_id,
            "SET #status = :failed, #error = :error, finished_at = :now",
            "#status = :queued",
            {
                ":failed": JobStatus.FAILED,
                ":queued": JobStatus.QUEUED,
                ":error": error,
                ":now": now,
            },
        )

    def _update(
        self, job_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> Job | None:
        names = {"#status": "status", "#result": "result", "#error": "error"}
        used = {k: v for k, v in names.items() if k in update or k in condition}
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=update,
                # The job must exist: an update would otherwise create a stub item.
                ConditionExpression=f"attribute_exists(job_id) AND ({condition})",
                ExpressionAttributeNames=used,
                ExpressionAttributeValues={k: _attr(v) for k, v in values.items()},
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


def _attr(value: Any) -> dict[str, str]:
    if isinstance(value, JobStatus):
        return {"S": value.value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, datetime):
        return {"S": iso_utc(value)}
    if isinstance(value, (int, float)):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    raise TypeError(f"no DynamoDB form for {value!r}")
