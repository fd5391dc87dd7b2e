from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.jobs import Job, JobStatus, from_item, is_job_id, to_item


def test_item_round_trip_keeps_every_field() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    job = Job.new(n=10**10, now=moment).with_(
        status=JobStatus.SUCCEEDED,
        progress=0.5,
        result=10**10,
        error="boom",
        attempts=2,
        started_at=moment,
        finished_at=moment,
    )
    assert from_item(to_item(job)) == job


def test_api_form_uses_iso_utc_strings() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = Job.new(n=1, now=moment).to_api()
    assert body["created_at"] == "2026-01-02T03:04:05.000Z"
    assert body["started_at"] is None and body["status"] == "queued"


def test_job_ids_are_uuid4() -> None:
    ids = {Job.new(n=1, now=datetime.now(UTC)).job_id for _ in range(100)}
    assert len(ids) == 100 and all(is_job_id(i) for i in ids)
