"""The job record: its statuses, its fields, and its DynamoDB and queue-message forms.

This module is the single source of a job's shape. The store writes ``to_item`` and reads
``from_item``; the queue carries ``to_message``; the API returns ``to_api``. The table's
indexes are declared here too (``INDEXES``): infra/stack.py renders them into the
template, so the table and the queries that read it cannot disagree.

Item layout (one item per job, key ``job_id``)::

    job_id kind input status created_at progress attempts         the job itself
    n                                                             heavyLoad's n (as before kinds)
    state                                                         the checkpoint (JSON text)
    result error started_at finished_at last_error request_hash   (when set)
    retry_of                                                      the job this one retries
    schedule                                                      the schedule that made it
    owner lease_until                                             a run's lease (running only)
    progress_mark                                                 the last published progress
    resume redrives                                               re-delivery bookkeeping
    expires_at                                                    TTL (epoch seconds)
    client                                                        who submitted it
    lane                                                          its lane (absent: lane 0)
    estimate_seconds                                              its kind's run time estimate
    all_key status_key kind_key kind_status_key                   listing index keys
    client_key client_status_key client_kind_key                  a client's listing keys
    client_kind_status_key
    active_key                                                    while queued or running
    pending_key pending_at                                        while a message is due
    run_at                                                        when it may start (later)
    later_key                                                     while it waits for run_at

``result`` is a number for an integer result (heavyLoad's, as before kinds), else JSON text.
Items written before kinds (schema version 2) have ``n`` and ``position`` instead of
``input`` and ``state``; ``from_item`` reads them as heavyLoad's input and state, and the
version 3 backfill adds ``input``. Items written before clients (version 3) have no
``client``; ``from_item`` reads them as ``anonymous``'s, and the version 4 backfill adds
it with the client listing keys.

Idempotency records (``idempotency#<sha256>``) and control items (``control#...``) share
the table; they carry none of the index keys, so no index lists them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from chalicelib.clients import ANONYMOUS, RECORDED_CLIENT
from chalicelib.errors import PoisonMessage

DEFAULT_KIND = "heavyLoad"
# The table's TTL attribute (epoch seconds). infra/stack.py passes this name to the
# template, which enables DynamoDB's TTL on it.
EXPIRES_AT = "expires_at"
# The attribute of a job's last published progress (Job.progress_mark): the checkpoint
# writes it, the stream's consumer compares it.
PROGRESS_MARK = "progress_mark"
# Idempotency records share the table; their key can never be a job id (not a uuid).
IDEMPOTENCY_PREFIX = "idempotency#"
# Control items (the watermark, the schema version) share it too, under this prefix.
CONTROL_PREFIX = "control#"
# The version of the item layout above. infra/stack.py brings the items of a table
# written by an older version up to it once (see JobTable.migrate), and records it in the
# control item SCHEMA_ITEM. Version 1 was the layout with one "recent" and one
# "by-status" index (release aa910a9); version 2 had no input, only heavyLoad's n;
# version 3 had no client.
SCHEMA_VERSION = 4

# --- sharding and the indexes ------------------------------------------------------------

# Every index partition key carries a shard, so no index has a single hot partition: a
# job's writes spread over SHARDS partitions of each index, and a listing reads one page
# per shard and merges them (DynamoDB: a partition serves at most 1,000 writes/s).
SHARDS = 4


def shard_of(job_id: str) -> int:
    """The job's shard: its id's first 32 bits (random in a uuid4) modulo SHARDS."""
    return int(job_id[:8], 16) % SHARDS


class IndexShape(NamedTuple):
    """A global secondary index of the job table, as the code queries it."""

    name: str
    partition_key: str  # a string attribute
    sort_key: str
    sort_key_type: str  # DynamoDB's scalar type of the sort key: "S" or "N"
    # Non-key attributes copied into the index; () means KEYS_ONLY. The listings copy only
    # expires_at (to filter expired jobs in the query): a checkpoint, which changes
    # neither a key nor a projected attribute, writes no index at all.
    projected: tuple[str, ...] = ()


# Listing indexes: newest first (sort key created_at) within a partition of the filter's
# values and the shard, e.g. "queued#2" or "heavyLoad#queued#2".
LIST_ALL = IndexShape("jobs-all", "all_key", "created_at", "S", (EXPIRES_AT,))
LIST_BY_STATUS = IndexShape("jobs-by-status", "status_key", "created_at", "S", (EXPIRES_AT,))
LIST_BY_KIND = IndexShape("jobs-by-kind", "kind_key", "created_at", "S", (EXPIRES_AT,))
LIST_BY_KIND_STATUS = IndexShape(
    "jobs-by-kind-status", "kind_status_key", "created_at", "S", (EXPIRES_AT,)
)
# The same four listings within one client's jobs: the client's name leads the partition,
# e.g. "alice#2" or "alice#heavyLoad#queued#2", so a client's listing reads only its own
# entries, however many jobs other clients have.
LIST_BY_CLIENT = IndexShape("jobs-by-client", "client_key", "created_at", "S", (EXPIRES_AT,))
LIST_BY_CLIENT_STATUS = IndexShape(
    "jobs-by-client-status", "client_status_key", "created_at", "S", (EXPIRES_AT,)
)
LIST_BY_CLIENT_KIND = IndexShape(
    "jobs-by-client-kind", "client_kind_key", "created_at", "S", (EXPIRES_AT,)
)
LIST_BY_CLIENT_KIND_STATUS = IndexShape(
    "jobs-by-client-kind-status", "client_kind_status_key", "created_at", "S", (EXPIRES_AT,)
)
# Sparse: a client's jobs that are queued or running (active_key is the client's name),
# oldest first, with each one's estimated run time. The quota check reads one partition
# of it, whose size the quota itself bounds; every move to a final status removes the key.
# Not sharded: the quota reads all of a client's entries at once, and a client's writes to
# its partition are bounded by its key's request rate, far under a partition's 1,000 a
# second (DynamoDB Developer Guide, "Best practices for designing and using partition
# keys effectively").
ESTIMATE_SECONDS = "estimate_seconds"
ACTIVE = IndexShape("jobs-active", "active_key", "created_at", "S", (ESTIMATE_SECONDS,))
# Sparse: only jobs whose message is due on the job queue (pending_at set) are in it, by
# when it was (or will be) put there. The recovery sweep reads it below a cutoff.
PENDING = IndexShape("jobs-pending", "pending_key", "pending_at", "N")
# Sparse: only queued jobs that wait for a run_at too far ahead for the delay queue (and
# whose message is not sent yet) are in it, soonest first (run_at: ISO UTC text, which
# sorts as time). The release (Worker.release_due) reads it up to now plus a look-ahead,
# with each job's lane (absent: lane 0), which names the pending partition it goes to.
RUN_AT = "run_at"
LANE = "lane"
LATER = IndexShape("jobs-later", "later_key", RUN_AT, "S", (LANE,))
INDEXES = (
    LIST_ALL,
    LIST_BY_STATUS,
    LIST_BY_KIND,
    LIST_BY_KIND_STATUS,
    PENDING,
    LIST_BY_CLIENT,
    LIST_BY_CLIENT_STATUS,
    LIST_BY_CLIENT_KIND,
    LIST_BY_CLIENT_KIND_STATUS,
    ACTIVE,
    LATER,
)


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
class Listing:
    """What GET /jobs lists: every job, or those of one kind and/or one status, of every
    client or of one. Each combination has its own index, so a filtered listing never
    reads other jobs, and a client's listing never reads another client's."""

    kind: str | None = None
    status: JobStatus | None = None
    client: str | None = None

    @property
    def index(self) -> IndexShape:
        if self.client is None:
            if self.kind is None:
                return LIST_ALL if self.status is None else LIST_BY_STATUS
            return LIST_BY_KIND if self.status is None else LIST_BY_KIND_STATUS
        if self.kind is None:
            return LIST_BY_CLIENT if self.status is None else LIST_BY_CLIENT_STATUS
        return LIST_BY_CLIENT_KIND if self.status is None else LIST_BY_CLIENT_KIND_STATUS

    def partition(self, shard: int) -> str:
        """The index's partition key value for ``shard``. A client's name, a kind's and a
        status never hold "#", and each combination has its own index."""
        values = [v for v in (self.client, self.kind, self.status) if v is not None]
        return "#".join([*values, str(shard)]) if values else f"all#{shard}"

    @property
    def name(self) -> str:
        """A stable name for this listing (bound into its cursors)."""
        name = f"kind={self.kind or ''}&status={self.status.value if self.status else ''}"
        return name if self.client is None else f"{name}&client={self.client}"

    def matches(self, job: Job) -> bool:
        return (
            (self.kind is None or job.kind == self.kind)
            and (self.status is None or job.status is self.status)
            and (self.client is None or job.client == self.client)
        )


def listing_keys(job_id: str, kind: str, status: JobStatus, client: str) -> dict[str, str]:
    """The job's partition keys in the eight listing indexes."""
    shard = shard_of(job_id)
    return {
        listing.index.partition_key: listing.partition(shard)
        for scope in (None, client)
        for listing in (
            Listing(client=scope),
            Listing(status=status, client=scope),
            Listing(kind=kind, client=scope),
            Listing(kind=kind, status=status, client=scope),
        )
    }


# The listing keys that change with the status.
STATUS_KEYS = (
    LIST_BY_STATUS.partition_key,
    LIST_BY_KIND_STATUS.partition_key,
    LIST_BY_CLIENT_STATUS.partition_key,
    LIST_BY_CLIENT_KIND_STATUS.partition_key,
)
# Of those, the ones that name the kind (a job whose kind cannot be read drops out of them).
KIND_STATUS_KEYS = (LIST_BY_KIND_STATUS.partition_key, LIST_BY_CLIENT_KIND_STATUS.partition_key)


def status_keys(job_id: str, kind: str, status: JobStatus, client: str) -> dict[str, str]:
    """The listing keys that change with the status (what a status change rewrites)."""
    keys = listing_keys(job_id, kind, status, client)
    return {name: keys[name] for name in STATUS_KEYS}


def active_key(client: str) -> str:
    """The partition key of ``client``'s queued and running jobs in the active index."""
    return client


def pending_key(job_id: str, lane: int = 0) -> str:
    """The job's partition key in the pending index: its lane's partition of its shard,
    so the recovery sweep reads each lane's pending jobs against that lane's watermark.
    Lane 0's keys are those of before lanes."""
    return f"pending#{shard_of(job_id)}" if lane == 0 else f"pending#{lane}#{shard_of(job_id)}"


def pending_partition(lane: int, shard: int) -> str:
    """The pending index's partition of ``lane``'s jobs in ``shard`` (``pending_key``)."""
    return f"pending#{shard}" if lane == 0 else f"pending#{lane}#{shard}"


def lane_of(key: str, lanes: int) -> int:
    """The lane of a job whose lane key (its client or kind) is ``key``, among ``lanes``:
    a SHA-256 of the key modulo the lanes, the same in every process and release
    (Python's ``hash`` of a string changes per process)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % lanes


def later_key(job_id: str) -> str:
    """The job's partition key in the later index."""
    return f"later#{shard_of(job_id)}"


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    # The validated input, defaults filled in (JSON object).
    input: dict[str, Any]
    status: JobStatus
    created_at: datetime
    progress: float = 0.0
    # What the kind's function returned, in JSON form (heavyLoad: an int).
    result: Any = None
    error: str | None = None
    # Starts of a run by a worker; a planned continuation (after a checkpoint taken
    # before the function's timeout) is not a new attempt.
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When DynamoDB may delete the record (epoch seconds); None keeps it forever.
    expires_at: int | None = None
    # The checkpoint: the JSON state the kind last reported (heavyLoad: the loop counter);
    # None before the first checkpoint.
    state: Any = None
    # The lease (epoch milliseconds) of a running job: its owner renews it at every
    # checkpoint (the heartbeat). Past it, the run is presumed dead.
    lease_until: int | None = None
    # Lease token of the attempt that owns the running job; its writes need it.
    owner: str | None = None
    # When the checkpoint that was last published as job.progress was taken (epoch ms of
    # its worker's clock); None: none yet. A checkpoint sets a new one only when it is
    # due (chalicelib.worker.Checkpointer), and the table's stream publishes exactly the
    # checkpoints that change it (chalicelib.events). Kept across runs, so a continuation
    # or a retry keeps the spacing. Not in the API form.
    progress_mark: int | None = None
    # Queued again to continue from its checkpoint: the next start is not an attempt.
    resume: bool = False
    # The error of the last failed attempt, while the job waits to be retried.
    last_error: str | None = None
    # The Idempotency-Key's request fingerprint, when the job was submitted with one.
    request_hash: str | None = None
    # A queued job's message is due on the job queue since this moment (epoch ms): set
    # when the job is written (before its message is sent), or released for a retry (the
    # moment the delay queue forwards it) or a continuation, or re-driven; removed when a
    # worker claims it, and when it is cancelled or finished. See Worker.recover_stalled.
    pending_at: int | None = None
    # Times a dead-lettered message of the job, never started, was sent again.
    redrives: int = 0
    # The failed or cancelled job this one retries (POST /jobs/{id}/retry).
    retry_of: str | None = None
    # The client that submitted it (chalicelib.clients): a key's client, or anonymous.
    client: str = ANONYMOUS
    # Its kind's estimate of its run time, whole seconds, as the job was submitted: what
    # it counts towards its client's quota of active work while it is queued or running.
    estimate_seconds: int = 1
    # Its lane (chalicelib.queue.message_group), chosen at submission and kept for its
    # whole life: every message of the job goes to the lane's message group. A job
    # recorded before lanes is lane 0's.
    lane: int = 0
    # When it may start (POST /jobs with run_at or delay_seconds); None: at once.
    run_at: datetime | None = None
    # Waiting in the later index for its release (no message sent yet): see LATER.
    later: bool = False
    # The name of the client's schedule whose fire made it (chalicelib.schedules).
    schedule: str | None = None

    @classmethod
    def new(
        cls,
        n: int | None = None,
        now: datetime | None = None,
        kind: str = DEFAULT_KIND,
        retention: timedelta | None = None,
        request_hash: str | None = None,
        input: dict[str, Any] | None = None,
        retry_of: str | None = None,
        client: str = ANONYMOUS,
        estimate_seconds: int = 1,
        lane: int = 0,
        run_at: datetime | None = None,
        later: bool = False,
        schedule: str | None = None,
    ) -> Job:
        """A queued job with a fresh, unguessable id (uuid4: 122 random bits), its message
        due now, or at ``run_at`` when that is later (the record then expires
        ``retention`` after it); ``later`` keeps it in the later index instead, no
        message due until its release. ``input`` is the validated input; ``n`` is short
        for heavyLoad's ``{"n": n}``."""
        if input is None:
            if n is None:
                raise TypeError("a job needs its input (or heavyLoad's n)")
            input = {"n": n}
        now = now or utc_now()
        due = now if run_at is None else max(now, run_at)
        expires_at = None if retention is None else int((due + retention).timestamp())
        return cls(
            job_id=str(uuid.uuid4()),
            kind=kind,
            input=input,
            status=JobStatus.QUEUED,
            created_at=now,
            expires_at=expires_at,
            request_hash=request_hash,
            pending_at=None if later else epoch_ms(due),
            retry_of=retry_of,
            client=client,
            estimate_seconds=estimate_seconds,
            lane=lane,
            run_at=run_at,
            later=later,
            schedule=schedule,
        )

    @property
    def n(self) -> int | None:
        """heavyLoad's n (its representation has it, as before kinds); None otherwise."""
        n = self.input.get("n") if self.kind == DEFAULT_KIND else None
        return n if isinstance(n, int) else None

    def is_expired(self, now: datetime) -> bool:
        """Past its expiry: gone for readers, even before DynamoDB's TTL deletes it."""
        return self.expires_at is not None and self.expires_at <= now.timestamp()

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)

    def to_api(self) -> dict[str, Any]:
        """The public representation returned by ``GET /jobs/{job_id}``."""
        body = {
            "job_id": self.job_id,
            "kind": self.kind,
            "input": self.input,
            "status": self.status.value,
            "n": self.n,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": iso_utc(self.created_at),
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
            "client": self.client,
            "lane": self.lane,
            "run_at": iso_utc(self.run_at),
            "schedule": self.schedule,
        }
        if self.retry_of is not None:
            body["retry_of"] = self.retry_of
        return body


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


def request_fingerprint(kind: str, input: dict[str, Any]) -> str:
    """What an Idempotency-Key binds to: the parsed request (kind and validated input),
    not its bytes. heavyLoad's is computed as before kinds existed, so a key recorded by
    an earlier release still replays its job."""
    if kind == DEFAULT_KIND and set(input) == {"n"}:
        canonical = json.dumps({"kind": kind, "n": input["n"]}, sort_keys=True)
    else:
        canonical = json.dumps({"kind": kind, "input": input}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_record_id(scope: str, key: str) -> str:
    """The table key of an Idempotency-Key record; keys are scoped to their client."""
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
    return IDEMPOTENCY_PREFIX + digest


# The control items' keys (CONTROL_PREFIX: never a job id, never an idempotency key).
# Lane 0's watermark (watermark_item gives each lane's).
WATERMARK_ITEM = CONTROL_PREFIX + "watermark"
SCHEMA_ITEM = CONTROL_PREFIX + "schema"
# Whether the worker is paused (`make pause`), for the API to report.
WORKER_ITEM = CONTROL_PREFIX + "worker"


def watermark_item(lane: int) -> str:
    """The key of ``lane``'s watermark: lane 0 keeps the one item of before lanes."""
    return WATERMARK_ITEM if lane == 0 else f"{WATERMARK_ITEM}#{lane}"


# --- DynamoDB item form (low-level AttributeValue maps) -------------------------------


def to_item(job: Job) -> dict[str, dict[str, Any]]:
    item: dict[str, dict[str, Any]] = {
        "job_id": {"S": job.job_id},
        "kind": {"S": job.kind},
        "input": {"S": json.dumps(job.input, separators=(",", ":"))},
        "status": {"S": job.status.value},
        "progress": {"N": _number(job.progress)},
        "attempts": {"N": str(job.attempts)},
        "created_at": {"S": iso_utc(job.created_at)},
        "client": {"S": job.client},
        ESTIMATE_SECONDS: {"N": str(job.estimate_seconds)},
    }
    optional: dict[str, dict[str, Any] | None] = {
        # Written for heavyLoad as before kinds: code of the previous release reads it.
        "n": None if job.n is None else {"N": str(job.n)},
        "state": None if job.state is None else {"S": json.dumps(job.state)},
        "result": None if job.result is None else result_attribute(job.result),
        "error": None if job.error is None else {"S": job.error},
        "started_at": None if job.started_at is None else {"S": iso_utc(job.started_at)},
        "finished_at": None if job.finished_at is None else {"S": iso_utc(job.finished_at)},
        EXPIRES_AT: None if job.expires_at is None else {"N": str(job.expires_at)},
        "lease_until": None if job.lease_until is None else {"N": str(job.lease_until)},
        "last_error": None if job.last_error is None else {"S": job.last_error},
        "owner": None if job.owner is None else {"S": job.owner},
        PROGRESS_MARK: None if job.progress_mark is None else {"N": str(job.progress_mark)},
        "resume": {"BOOL": True} if job.resume else None,
        "request_hash": None if job.request_hash is None else {"S": job.request_hash},
        "redrives": {"N": str(job.redrives)} if job.redrives else None,
        "retry_of": None if job.retry_of is None else {"S": job.retry_of},
        LANE: {"N": str(job.lane)} if job.lane else None,
        RUN_AT: None if job.run_at is None else {"S": iso_utc(job.run_at)},
        "schedule": None if job.schedule is None else {"S": job.schedule},
    }
    item.update({name: value for name, value in optional.items() if value is not None})
    item.update(derived_attributes(job))
    return item


def derived_attributes(job: Job) -> dict[str, dict[str, Any]]:
    """The index keys an item of ``job`` carries: its listing keys, and while its message
    is due, its pending key and time. Every write that changes what they derive from
    (status, pending_at) rewrites them in the same request; every move to a final status
    removes its active key."""
    keys = listing_keys(job.job_id, job.kind, job.status, job.client)
    derived = {name: {"S": value} for name, value in keys.items()}
    if not job.status.is_final:
        derived[ACTIVE.partition_key] = {"S": active_key(job.client)}
    if job.pending_at is not None and job.status is JobStatus.QUEUED:
        derived[PENDING.partition_key] = {"S": pending_key(job.job_id, job.lane)}
        derived[PENDING.sort_key] = {"N": str(job.pending_at)}
    if job.later and job.status is JobStatus.QUEUED:
        derived[LATER.partition_key] = {"S": later_key(job.job_id)}
    return derived


def from_item(item: dict[str, dict[str, Any]]) -> Job:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def num(name: str) -> int | None:
        return int(Decimal(item[name]["N"])) if name in item else None

    return Job(
        job_id=item["job_id"]["S"],
        kind=item["kind"]["S"],
        input=item_input(item),
        status=JobStatus(item["status"]["S"]),
        created_at=_parse_iso(item["created_at"]["S"]),
        progress=float(Decimal(item["progress"]["N"])) if "progress" in item else 0.0,
        result=_result(item.get("result")),
        error=s("error"),
        attempts=num("attempts") or 0,
        started_at=_parse_optional_iso(s("started_at")),
        finished_at=_parse_optional_iso(s("finished_at")),
        expires_at=num(EXPIRES_AT),
        # Before kinds, heavyLoad's checkpoint was the number "position" (0: none yet).
        state=json.loads(item["state"]["S"]) if "state" in item else num("position") or None,
        lease_until=num("lease_until"),
        last_error=s("last_error"),
        owner=s("owner"),
        progress_mark=num(PROGRESS_MARK),
        resume=bool(item.get("resume", {}).get("BOOL", False)),
        request_hash=s("request_hash"),
        pending_at=num(PENDING.sort_key),
        redrives=num("redrives") or 0,
        retry_of=s("retry_of"),
        client=s("client") or ANONYMOUS,
        estimate_seconds=num(ESTIMATE_SECONDS) or 1,
        lane=num(LANE) or 0,
        run_at=_parse_optional_iso(s(RUN_AT)),
        later=LATER.partition_key in item,
        schedule=s("schedule"),
    )


def item_input(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A job item's input; an item written before kinds has only heavyLoad's n."""
    if "input" in item:
        value: dict[str, Any] = json.loads(item["input"]["S"])
        return value
    return {"n": int(item["n"]["N"])}


def result_attribute(result: Any) -> dict[str, Any]:
    """A result's attribute: a number for an int (as before kinds), else JSON text."""
    if isinstance(result, int) and not isinstance(result, bool):
        return {"N": str(result)}
    return {"S": json.dumps(result, separators=(",", ":"))}


def _result(attribute: dict[str, Any] | None) -> Any:
    if attribute is None:
        return None
    if "N" in attribute:
        return int(Decimal(attribute["N"]))
    return json.loads(attribute["S"])


def is_job_item(item: dict[str, dict[str, Any]]) -> bool:
    """True for a job's item (not an Idempotency-Key record or a control item)."""
    return "status" in item and is_job_id(item["job_id"]["S"])


def _number(value: float) -> str:
    # DynamoDB numbers are decimal strings; repr keeps a float exact and short.
    return repr(float(value)) if value != int(value) else str(int(value))


# --- queue message form ---------------------------------------------------------------


class Message(NamedTuple):
    """What a queue message says: which job (and its kind and client, so that the claim
    can rewrite the job's listing keys without reading it first), and whether it
    continues from a checkpoint, and its lane. ``kind`` is None in a message that does not
    name it; a message that names no client is an anonymous job's (every job before
    clients was), one that names no lane is lane 0's (every job before lanes was)."""

    job_id: str
    kind: str | None = None
    resume: bool = False
    client: str = ANONYMOUS
    lane: int = 0


def to_message(job: Job, resume: bool = False) -> str:
    """The SQS message body: the job's id, kind, client (unless anonymous: the message is
    then as before clients), lane (unless 0: as before lanes) and the resume flag. State
    lives in the table; the lane picks the message group (chalicelib.queue.message_group)."""
    payload: dict[str, Any] = {"job_id": job.job_id, "kind": job.kind}
    if job.client != ANONYMOUS:
        payload["client"] = job.client
    if job.lane:
        payload["lane"] = job.lane
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
    kind = payload.get("kind")
    if kind is not None and not (isinstance(kind, str) and kind):
        raise PoisonMessage(f"message names no valid kind: {kind!r}")
    client = payload.get("client", ANONYMOUS)
    if not (isinstance(client, str) and RECORDED_CLIENT.fullmatch(client)):
        raise PoisonMessage(f"message names no valid client: {client!r}")
    lane = payload.get("lane", 0)
    if not (isinstance(lane, int) and not isinstance(lane, bool) and lane >= 0):
        raise PoisonMessage(f"message names no valid lane: {lane!r}")
    return Message(
        job_id=job_id,
        kind=kind,
        resume=payload.get("resume") is True,
        client=client,
        lane=lane,
    )


# A message of a job that runs later names its run_at (epoch ms), so the delay queue's
# forwarder can tell a message that came back before its time (Worker.forward); the job
# queue's consumer ignores it.
RUN_AT_MS = "run_at_ms"


def later_message(job: Job) -> str:
    """The delay queue's message of a job that runs later: its job message and its run_at."""
    payload = json.loads(to_message(job))
    if job.run_at is not None:
        payload[RUN_AT_MS] = epoch_ms(job.run_at)
    return json.dumps(payload)


def message_run_at_ms(body: str) -> int | None:
    """The run_at a delay queue message names (epoch ms), None if none (a retry's, or a
    body that is not a job message: the job queue's consumer judges those)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = payload.get(RUN_AT_MS) if isinstance(payload, dict) else None
    return value if type(value) is int else None


# --- timestamps: ISO-8601 UTC with a Z, millisecond precision -------------------------


def iso_utc(moment: datetime | None) -> Any:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _parse_optional_iso(text: str | None) -> datetime | None:
    return None if text is None else _parse_iso(text)
