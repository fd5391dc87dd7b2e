"""The job record: its statuses, its fields, and its DynamoDB and queue-message forms.

This module is the single source of a job's shape. The store writes ``to_item`` and reads
``from_item``; the queue carries ``to_message``; the API returns ``to_api``.
"""

from __future__ import annotations

import hashlib
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
# The index that lists jobs by status, newest first (partition: status, sort: created_at).
STATUS_INDEX = "by-status"
# The index that lists all jobs, newest first: partition LISTED (the same value on every
# job, absent from idempotency records), sort created_at.
RECENT_INDEX = "recent"
LISTED = "listed"
LISTED_VALUE = "job"
# Idempotency records share the table; their key can never be a job id (not a uuid).
IDEMPOTENCY_PREFIX = "idempotency#"


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, message on the queue, no worker is running it now
    RUNNING = "running"  # a worker claimed it and is counting, heartbeat fresh
    SUCCEEDED = "succeeded"  # finished; result holds the return value
    FAILED = "failed"  # finished; error holds why
    CANCELLED = "cancelled"  # stopped on request; it will never run (again)

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


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
    # Starts of a run by a worker; a planned continuation (after a checkpoint taken
    # before the function's timeout) is not a new attempt.
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When DynamoDB may delete the record (epoch seconds); None keeps it forever.
    expires_at: int | None = None
    # The checkpoint: how far the job got (for heavyLoad, the loop counter).
    position: int = 0
    # The lease (epoch milliseconds): a running job's owner renews it at every checkpoint
    # (its heartbeat); a job queued again for a retry or a continuation gets one that
    # covers the wait. Past it, the job is presumed lost and is re-driven.
    lease_until: int | None = None
    # Lease token of the attempt that owns the running job; its writes need it.
    owner: str | None = None
    # Queued again to continue from its checkpoint: the next start is not an attempt.
    resume: bool = False
    # The error of the last failed attempt, while the job waits to be retried.
    last_error: str | None = None
    # The Idempotency-Key's request fingerprint, when the job was submitted with one.
    request_hash: str | None = None

    @classmethod
    def new(
        cls,
        n: int,
        now: datetime,
        kind: str = DEFAULT_KIND,
        retention: timedelta | None = None,
        request_hash: str | None = None,
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
            request_hash=request_hash,
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


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def request_fingerprint(n: int, kind: str = DEFAULT_KIND) -> str:
    """What an Idempotency-Key binds to: the parsed request, not its bytes."""
    canonical = json.dumps({"kind": kind, "n": n}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_record_id(scope: str, key: str) -> str:
    """The table key of an Idempotency-Key record; keys are scoped to their client."""
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
    return IDEMPOTENCY_PREFIX + digest


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
        "position": {"N": str(job.position)},
        LISTED: {"S": LISTED_VALUE},
    }
    optional: dict[str, dict[str, Any] | None] = {
        "result": None if job.result is None else {"N": str(job.result)},
        "error": None if job.error is None else {"S": job.error},
        "started_at": None if job.started_at is None else {"S": iso_utc(job.started_at)},
        "finished_at": None if job.finished_at is None else {"S": iso_utc(job.finished_at)},
        EXPIRES_AT: None if job.expires_at is None else {"N": str(job.expires_at)},
        "lease_until": None if job.lease_until is None else {"N": str(job.lease_until)},
        "last_error": None if job.last_error is None else {"S": job.last_error},
        "owner": None if job.owner is None else {"S": job.owner},
        "resume": {"BOOL": True} if job.resume else None,
        "request_hash": None if job.request_hash is None else {"S": job.request_hash},
    }
    item.update({name: value for name, value in optional.items() if value is not None})
    return item


def from_item(item: dict[str, dict[str, Any]]) -> Job:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def num(name: str) -> int | None:
        return int(Decimal(item[name]["N"])) if name in item else None

    return Job(
        job_id=item["job_id"]["S"],
        kind=item["kind"]["S"],
        n=int(item["n"]["N"]),
        status=JobStatus(item["status"]["S"]),
        created_at=_parse_iso(item["created_at"]["S"]),
        progress=float(Decimal(item["progress"]["N"])) if "progress" in item else 0.0,
        result=num("result"),
        error=s("error"),
        attempts=num("attempts") or 0,
        started_at=_parse_optional_iso(s("started_at")),
        finished_at=_parse_optional_iso(s("finished_at")),
        expires_at=num(EXPIRES_AT),
        position=num("position") or 0,
        lease_until=num("lease_until"),
        last_error=s("last_error"),
        owner=s("owner"),
        resume=bool(item.get("resume", {}).get("BOOL", False)),
        request_hash=s("request_hash"),
    )


def _number(value: float) -> str:
    # DynamoDB numbers are decimal strings; repr keeps a float exact and short.
    return repr(float(value)) if value != int(value) else str(int(value))


# --- queue message form ---------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """What a queue message says: which job, and whether it continues from a checkpoint."""

    job_id: str
    resume: bool = False


def to_message(job_id: str, resume: bool = False) -> str:
    """The SQS message body: only the id (and the resume flag). State lives in the table."""
    payload: dict[str, Any] = {"job_id": job_id}
    if resume:
        payload["resume"] = True
    return json.dumps(payload)


def parse_message(body: str) -> Message:
    """What a message says; PoisonMessage if no retry could make sense of it."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise PoisonMessage(f"message body is not JSON: {body[:80]!r}") from None
    if not isinstance(payload, dict):
        raise PoisonMessage("message body is not a JSON object")
    job_id = payload.get("job_id")
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise PoisonMessage(f"message names no valid job id: {job_id!r}")
    return Message(job_id=job_id, resume=payload.get("resume") is True)


# --- timestamps: ISO-8601 UTC with a Z, millisecond precision -------------------------


def iso_utc(moment: datetime | None) -> Any:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _parse_optional_iso(text: str | None) -> datetime | None:
    return None if text is None else _parse_iso(text)
