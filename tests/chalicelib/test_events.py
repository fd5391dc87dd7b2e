"""The mapping from a job table stream record to at most one job event (chalicelib.events).

Records are shaped as DynamoDB Streams delivers them to Lambda with NEW_AND_OLD_IMAGES
(AWS Lambda Developer Guide, "Using AWS Lambda with Amazon DynamoDB", example event); the
images are the items the store writes (chalicelib.jobs.to_item)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.events import (
    EVENT_SOURCE,
    EVENT_TYPES,
    PROGRESS_WINDOW_MS,
    EventType,
    JobEvent,
    UnreadableChange,
    event_for,
)
from chalicelib.jobs import Job, JobStatus, epoch_ms, idempotency_record_id, to_item

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
# A clock reading on a multiple of PROGRESS_WINDOW_MS: a heartbeat that crosses one
# publishes nothing by itself.
WINDOW_START = (epoch_ms(NOW) // PROGRESS_WINDOW_MS + 1) * PROGRESS_WINDOW_MS


def stream_record(
    old: dict[str, Any] | None, new: dict[str, Any] | None, event_id: str = "c4ca4238a0b9"
) -> dict[str, Any]:
    """A record as Lambda's DynamoDB event source delivers it (NEW_AND_OLD_IMAGES)."""
    image = new if new is not None else old
    assert image is not None
    name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
    dynamodb: dict[str, Any] = {
        "Keys": {"job_id": image["job_id"]},
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "ApproximateCreationDateTime": 1479499740,
    }
    if new is not None:
        dynamodb["NewImage"] = new
    if old is not None:
        dynamodb["OldImage"] = old
    return {
        "eventID": event_id,
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": dynamodb,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/jobs/stream/x",
    }


def map_record(record: dict[str, Any]) -> JobEvent | None:
    images = record["dynamodb"]
    return event_for(images.get("OldImage"), images.get("NewImage"), record["eventID"])


def queued(**changes: Any) -> Job:
    return Job.new(input={"n": 5}, now=NOW, client="alice").with_(**changes)


def running(job: Job, owner: str = "owner-1", attempts: int = 1, **changes: Any) -> Job:
    return job.with_(
        status=JobStatus.RUNNING,
        owner=owner,
        attempts=attempts,
        started_at=NOW,
        lease_until=WINDOW_START + 1_000,
        pending_at=None,
        **changes,
    )


def change(old: Job | None, new: Job | None, event_id: str = "e-1") -> JobEvent | None:
    return map_record(
        stream_record(
            None if old is None else to_item(old), None if new is None else to_item(new), event_id
        )
    )


def test_the_declared_types_are_the_contracts():
    assert EVENT_TYPES == (
        "job.queued",
        "job.running",
        "job.succeeded",
        "job.failed",
        "job.cancelled",
        "job.progress",
    )


def test_a_new_job_is_queued_with_the_records_id_and_its_api_form():
    job = queued()
    event = change(None, job, event_id="4b1d")
    assert event is not None
    assert event.event_type is EventType.QUEUED
    assert event.detail == {**job.to_api(), "event_id": "4b1d"}
    assert event.detail["client"] == "alice"


def test_every_run_is_running_with_its_attempt():
    job = queued()
    first = change(job, running(job, attempts=1))
    assert first is not None and first.event_type is EventType.RUNNING
    assert first.detail["attempt"] == 1
    # A take-over: the job stays running, a new owner claims it after the lease ran out.
    takeover = change(running(job, attempts=1), running(job, owner="owner-2", attempts=2))
    assert takeover is not None and takeover.event_type is EventType.RUNNING
    assert takeover.detail["attempt"] == 2
    # A retry: released to queued after a failed attempt, then claimed again.
    released = change(running(job), queued(job_id=job.job_id, attempts=1, last_error="boom"))
    assert released is not None and released.event_type is EventType.QUEUED
    retried = change(queued(job_id=job.job_id, attempts=1), running(job, attempts=2))
    assert retried is not None and retried.detail["attempt"] == 2


@pytest.mark.parametrize(
    ("status", "event_type", "fields"),
    [
        (JobStatus.SUCCEEDED, EventType.SUCCEEDED, {"result": 10, "progress": 1.0}),
        (JobStatus.FAILED, EventType.FAILED, {"error": "boom"}),
        (JobStatus.CANCELLED, EventType.CANCELLED, {}),
    ],
)
def test_a_finish_is_its_status_event(status, event_type, fields):
    job = running(queued())
    done = job.with_(status=status, owner=None, lease_until=None, finished_at=NOW, **fields)
    event = change(job, done)
    assert event is not None and event.event_type is event_type
    assert "attempt" not in event.detail
    assert {key: event.detail[key] for key in fields} == fields


def test_a_queued_job_cancelled_is_cancelled():
    job = queued()
    event = change(job, job.with_(status=JobStatus.CANCELLED, finished_at=NOW, pending_at=None))
    assert event is not None and event.event_type is EventType.CANCELLED


def test_a_checkpoint_without_a_new_mark_publishes_nothing():
    """Its progress moved, its heartbeat crossed a PROGRESS_WINDOW_MS boundary of the
    clock: still nothing, unless its writer marked it as due (the progress mark)."""
    for mark in (None, WINDOW_START - PROGRESS_WINDOW_MS):
        before = running(queued(), progress=0.1, progress_mark=mark)
        before = before.with_(lease_until=WINDOW_START - 100)
        after = before.with_(progress=0.2, state=7, lease_until=WINDOW_START + 200)
        assert change(before, after) is None
        assert change(before, before.with_(lease_until=WINDOW_START + 200)) is None  # heartbeat


def test_a_checkpoint_that_sets_a_new_mark_is_published_as_progress():
    job = running(queued(), progress=0.1)
    first = job.with_(progress=0.2, state=2, progress_mark=WINDOW_START + 1_000)
    published = change(job, first, event_id="e-7")
    assert published is not None and published.event_type is EventType.PROGRESS
    assert published.detail == {**first.to_api(), "event_id": "e-7"}
    assert "progress_mark" not in published.detail
    second = first.with_(progress=0.3, state=3, progress_mark=WINDOW_START + 11_000)
    again = change(first, second)
    assert again is not None and again.event_type is EventType.PROGRESS
    assert again.detail["progress"] == pytest.approx(0.3)


def test_a_run_publishes_exactly_its_marked_checkpoints():
    """Checkpoints every second for 35 s, of which the writer marked those at 3, 13, 23
    and 33 s: those four are published, each once, and nothing else, whatever windows of
    the clock their heartbeats cross."""
    job = running(queued(), progress=0.1)
    checkpoints = [job]
    for second in range(1, 36):
        previous = checkpoints[-1]
        mark = job.lease_until + second * 1_000 if second % 10 == 3 else previous.progress_mark
        checkpoints.append(
            previous.with_(
                progress=0.1 + second / 100,
                lease_until=job.lease_until + second * 1_000,
                progress_mark=mark,
            )
        )
    events = [change(old, new) for old, new in itertools.pairwise(checkpoints)]
    published = [e for e in events if e is not None]
    assert [e.event_type for e in published] == [EventType.PROGRESS] * 4
    assert [e.detail["progress"] for e in published] == pytest.approx([0.13, 0.23, 0.33, 0.43])


def test_changes_that_move_no_status_publish_nothing():
    job = queued()
    assert change(job, job.with_(redrives=1)) is None  # a dead letter's re-drive
    assert change(job, None) is None  # a TTL delete (REMOVE)


def test_items_that_are_not_jobs_publish_nothing():
    record_id = idempotency_record_id("alice", "key-1")
    idempotency = {"job_id": {"S": record_id}, "target": {"S": queued().job_id}}
    assert event_for(None, idempotency, "e-1") is None
    control = {"job_id": {"S": "control#watermark"}, "sent_ms": {"N": "1"}}
    assert event_for(control, control, "e-2") is None


def test_an_unreadable_job_item_raises():
    item = to_item(queued())
    item["status"] = {"S": "exploded"}
    with pytest.raises(UnreadableChange, match=item["job_id"]["S"]):
        event_for(None, item, "e-1")


def test_the_entry_is_the_buses_putevents_shape():
    job = running(queued(), attempts=3)
    event = JobEvent(EventType.RUNNING, "e-9", job)
    entry = event.to_entry("heavy-jobs-dev")
    assert entry == {
        "EventBusName": "heavy-jobs-dev",
        "Source": EVENT_SOURCE,
        "DetailType": "job.running",
        "Detail": entry["Detail"],
    }
    assert json.loads(entry["Detail"]) == {**job.to_api(), "event_id": "e-9", "attempt": 3}
