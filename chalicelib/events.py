"""Job events: what one change of the job table means to the world outside.

Every change of a job's status is published to the stage's EventBridge bus
(``heavy-jobs-<stage>``) as one event, read from the table's change stream (DynamoDB
Streams, view type NEW_AND_OLD_IMAGES), never from the request or the run: a writer that
crashes after its write still has its change published, and a write that failed publishes
nothing. ``event_for`` is the whole mapping, pure: one stream record's old and new images
in, at most one ``JobEvent`` out. docs/events.md is the consumer's page.

The mapping, by what the write did to the item:

- created queued (an INSERT), or moved back to queued (a retry, a continuation, a
  re-drive): ``job.queued``;
- claimed by a run (queued -> running, or a take-over of a running job whose lease ran
  out: a new ``owner``): ``job.running``, with the run's ``attempt`` (a continuation is a
  run too, with the attempt it continues);
- finished: ``job.succeeded``, ``job.failed``, ``job.cancelled``;
- a checkpoint (status and owner unchanged) that set a new progress mark
  (``Job.progress_mark``): ``job.progress``. The run's checkpointer sets one only when
  its progress moved and at least PROGRESS_WINDOW_MS passed since the mark before
  (chalicelib.worker.Checkpointer), so a job's progress events are at least that far
  apart, across its runs too: the mark stays on the item;
- anything else (a heartbeat, a re-drive count, an index backfill, a TTL delete, an
  Idempotency-Key record, a control item): nothing.

Each event's id is the stream record's ``eventID``: unique per change, the same on every
delivery of that change, so a consumer drops duplicates by it (delivery is at least once).

Failure: a job item this release cannot read raises ``UnreadableChange``; the stream's
consumer reports that record as failed, the event source bisects and retries it a bounded
number of times and then sends its description to the on-failure queue. That costs the
records behind it on the same shard (the same job's later changes, and other jobs' in that
shard) the retries' time, never more; no job's run waits for events at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.jobs import Job, JobStatus, from_item, is_job_item

# The events' Source on the bus (an EventBridge rule matches on it).
EVENT_SOURCE = "heavy-jobs"
# The table stream's event source mapping (publish_job_events), declared once: Chalice's
# decorator takes the batch size and starting position; make deploy and make package set
# the rest (infra/deploy), and the local event source emulates them (infra/event_source).
# TRIM_HORIZON: a new mapping starts at the stream's oldest record (24 hours kept), so
# the changes between enabling the stream and creating the mapping are published too.
STREAM_BATCH_SIZE = 100
STREAM_STARTING_POSITION = "TRIM_HORIZON"
# A failed batch is split in two and each half retried, down to the failing record
# (BisectBatchOnFunctionError); a record is retried at most this many times, then its
# description goes to the on-failure queue and the shard moves on. With bisection a
# batch of STREAM_BATCH_SIZE reaches a single bad record in log2(100) < 7 splits, so the
# shard is held for at most about (7 + STREAM_MAX_RETRY_ATTEMPTS) invocations.
STREAM_BISECT_ON_ERROR = True
STREAM_MAX_RETRY_ATTEMPTS = 5
# A job's progress is published at most once every this long (of its workers' clocks),
# and about this often while a run keeps moving it: a rule that wants progress gets a
# bounded stream of it, whatever the job's checkpoint interval. The checkpointer
# (chalicelib.worker) spaces the progress marks by it; event_for publishes the marks.
PROGRESS_WINDOW_MS = 10_000


class EventType(StrEnum):
    """An event's detail-type."""

    QUEUED = "job.queued"  # recorded, or queued again (retry, continuation, re-drive)
    RUNNING = "job.running"  # a run started; the detail names its attempt
    SUCCEEDED = "job.succeeded"  # finished with its result
    FAILED = "job.failed"  # finished with its error
    CANCELLED = "job.cancelled"  # stopped on request
    PROGRESS = "job.progress"  # a checkpoint moved the progress (rate-limited)


EVENT_TYPES: tuple[str, ...] = tuple(member.value for member in EventType)

# The event of a move to each status.
_STATUS_EVENTS = {
    JobStatus.QUEUED: EventType.QUEUED,
    JobStatus.RUNNING: EventType.RUNNING,
    JobStatus.SUCCEEDED: EventType.SUCCEEDED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}

Image = Mapping[str, dict[str, Any]]


class UnreadableChange(ValueError):
    """A job item's change this release cannot read (a record no retry can publish)."""


@dataclass(frozen=True)
class JobEvent:
    """One event: its type, the id of the change it reports, and the job after it."""

    event_type: EventType
    event_id: str
    job: Job

    @property
    def detail(self) -> dict[str, Any]:
        """The job's API representation (with its client), the event's id, and for
        ``job.running`` the run's attempt."""
        detail = {**self.job.to_api(), "event_id": self.event_id}
        if self.event_type is EventType.RUNNING:
            detail["attempt"] = self.job.attempts
        return detail

    def to_entry(self, bus: str) -> dict[str, Any]:
        """The PutEvents request entry of this event on ``bus`` (its name or ARN)."""
        return {
            "EventBusName": bus,
            "Source": EVENT_SOURCE,
            "DetailType": self.event_type.value,
            "Detail": json.dumps(self.detail, separators=(",", ":")),
        }


def event_for(old_image: Image | None, new_image: Image | None, event_id: str) -> JobEvent | None:
    """The event of one change of the job table (a stream record's OldImage and NewImage,
    DynamoDB's attribute-value form; None where the record has none), or None when the
    change moves no job's status and is no published progress. Raises UnreadableChange
    for a job's item that cannot be read."""
    if new_image is None or not _is_job(new_image):
        return None  # a delete (TTL), an Idempotency-Key record or a control item
    new = _read(new_image)
    old = _read(old_image) if old_image is not None and _is_job(old_image) else None
    if old is None or old.status is not new.status:
        return JobEvent(_STATUS_EVENTS[new.status], event_id, new)
    if new.status is JobStatus.RUNNING and new.owner != old.owner:
        return JobEvent(EventType.RUNNING, event_id, new)  # a take-over: a new attempt
    if new.status is JobStatus.RUNNING and new.progress_mark != old.progress_mark:
        # A checkpoint its writer marked as due (the mark is only ever set by one).
        return JobEvent(EventType.PROGRESS, event_id, new)
    return None


def _is_job(image: Image) -> bool:
    try:
        return is_job_item(dict(image))
    except (KeyError, TypeError) as error:
        raise UnreadableChange(f"an item without a readable job_id: {error!r}") from error


def _read(image: Image) -> Job:
    try:
        return from_item(dict(image))
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        job_id = image.get("job_id", {}).get("S")
        raise UnreadableChange(f"job {job_id}'s item cannot be read: {error!r}") from error
