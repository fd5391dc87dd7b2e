"""The job record: its statuses, its fields, and its DynamoDB and queue-message forms.

This module is the single source of a job's shape. The store writes ``to_item`` and reads
``from_item``; the queue carries ``to_message``; the API returns ``to_api``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from chalicelib.errors import PoisonMessage

DEFAULT_KIND = "heavyLoad"
# The table's TTL attribute (epoch seconds). infra/stack.py passes this name to the
# template, which enables DynamoDB's TTL on it.
EXPIRES_AT = "expires_at"


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, message on the queue, no worker has started it
    RUNNING = "running"  # a worker claimed it and is counting
    SUCCEEDED = "succeeded"  # finished; result holds the return value
    FAILED = "failed"  # finished; error holds why

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    n: int
    status: JobStatus
    created_at: datetime
    progress: float = 0.0
    result: int | None = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When DynamoDB may delete the record (epoch seconds); None keeps it forever.
    expires_at: int | None = None

    @classmethod
    def new(
        cls, n: int, now: datetime, kind: str = DEFAULT_KIND, retention: timedelta | None = None
    ) -> Job:
        """A queued job with a fresh, unguessable id (uuid4: 122 random bits)."""
        expires_at = None if retention is None else int((now + retention).timestamp())
        return cls(
            job_id=str(uuid.uuid4()),
            kind=kind,
            n=n,
            status=JobStatus.QUEUED,
            created_at=now,
            expires_at=expires_at,
        )

    def is_expired(self, now: datetime) -> bool:
        """Past its expiry: gone for readers, even before DynamoDB's TTL deletes it."""
        return self.expires_at is not None and self.expires_at <= now.timestamp()

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)

    def to_api(self) -> dict[str, Any]:
        """The public representation returned by ``GET /jobs/{job_id}``."""
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "n": self.n,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": iso_utc(self.created_at),
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
        }


def is_job_id(value: str) -> bool:
    """True for a job id as this service issues them: a canonical lowercase uuid4."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return parsed.version == 4 and str(parsed) == value


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- DynamoDB item form (low-level AttributeValue maps) -------------------------------


def to_item(job: Job) -> dict[str, dict[str, Any]]:
    item: dict[str, dict[str, Any]] = {
        "job_id": {"S": job.job_id},
        "kind": {"S": job.kind},
        "n": {"N": str(job.n)},
        "status": {"S": job.status.value},
        "progress": {"N": _number(job.progress)},
        "attempts": {"N": str(job.attempts)},
        "created_at": {"S": iso_utc(job.created_at)},
    }
    if job.result is not None:
        item["result"] = {"N": str(job.result)}
    if job.error is not None:
        item["error"] = {"S": job.error}
    if job.started_at is not None:
        item["started_at"] = {"S": iso_utc(job.started_at)}
    if job.finished_at is not None:
        item["finished_at"] = {"S": iso_utc(job.finished_at)}
    if job.expires_at is not None:
        item[EXPIRES_AT] = {"N": str(job.expires_at)}
    return item


def from_item(item: dict[str, dict[str, Any]]) -> Job:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def num(name: str) -> Decimal | None:
        return Decimal(item[name]["N"]) if name in item else None

    result = num("result")
    return Job(
        job_id=item["job_id"]["S"],
        kind=item["kind"]["S"],
        n=int(item["n"]["N"]),
        status=JobStatus(item["status"]["S"]),
        created_at=datetime.fromisoformat(item["created_at"]["S"].replace("Z", "+00:00")),
        progress=float(num("progress") or 0),
        result=None if result is None else int(result),
        error=s("error"),
        attempts=int(num("attempts") or 0),
        started_at=_parse_iso(s("started_at")),
        finished_at=_parse_iso(s("finished_at")),
        expires_at=None if EXPIRES_AT not in item else int(item[EXPIRES_AT]["N"]),
    )


def _number(value: float) -> str:
    # DynamoDB numbers are decimal strings; repr keeps a float exact and short.
    return repr(float(value)) if value != int(value) else str(int(value))


# --- queue message form ---------------------------------------------------------------


def to_message(job: Job) -> str:
    """The SQS message body: only the id. The job's state lives in the table."""
    return json.dumps({"job_id": job.job_id})


def parse_message(body: str) -> str:
    """The job id a message names; PoisonMessage if no retry could make sense of it."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise PoisonMessage(f"message body is not JSON: {body[:80]!r}") from None
    if not isinstance(payload, dict):
        raise PoisonMessage("message body is not a JSON object")
    job_id = payload.get("job_id")
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise PoisonMessage(f"message names no valid job id: {job_id!r}")
    return job_id


# --- timestamps: ISO-8601 UTC with a Z, millisecond precision -------------------------


def iso_utc(moment: datetime | None) -> Any:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
