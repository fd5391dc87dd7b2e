"""Lanes: a job's lane is chosen at submission from its client or kind, recorded on the
job and in every message of it, and picks its message group; each lane keeps its own
watermark, and the recovery sweep compares a lane's pending jobs with that lane's own."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chalicelib import connections
from chalicelib.config import Settings, get_settings
from chalicelib.errors import SettingsError
from chalicelib.jobs import (
    Job,
    JobStatus,
    epoch_ms,
    from_item,
    lane_of,
    parse_message,
    to_item,
    to_message,
    utc_now,
)
from chalicelib.queue import MESSAGE_GROUP, message_group
from chalicelib.service import submit_job
from chalicelib.worker import Outcome, Worker
from tests.chalicelib.test_worker import delivery

Receive = Callable[..., list[dict[str, Any]]]
LANES = 3
RETENTION = timedelta(days=1)


def lane_settings(
    monkeypatch: pytest.MonkeyPatch, lanes: int = LANES, key: str = "client"
) -> Settings:
    monkeypatch.setenv("JOBS_LANES", str(lanes))
    monkeypatch.setenv("JOBS_LANE_KEY", key)
    get_settings.cache_clear()
    connections.reset()
    return get_settings()


def lane_worker(settings: Settings) -> Worker:
    real = connections.worker()
    return Worker(real.table, real.queue, real.delay_queue, settings)


def client_in_lane(lane: int, lanes: int = LANES) -> str:
    """A client name whose lane among ``lanes`` is ``lane``."""
    return next(f"c{i}" for i in range(1000) if lane_of(f"c{i}", lanes) == lane)


def groups(messages: list[dict[str, Any]]) -> dict[str, str]:
    """job id -> the message group its message went to. Deletes them from the job queue,
    so their groups are free for the next message."""
    queue = connections.job_queue()
    for message in messages:
        queue.delete(message["ReceiptHandle"])
    return {parse_message(m["Body"]).job_id: m["Attributes"]["MessageGroupId"] for m in messages}


def test_a_lane_is_a_sha256_of_its_key_modulo_the_lanes_the_same_in_every_process() -> None:
    digest = hashlib.sha256(b"acme").digest()
    assert lane_of("acme", 4) == int.from_bytes(digest[:8], "big") % 4
    assert lane_of("acme", 1) == 0
    assert len({lane_of(f"client-{i}", 4) for i in range(50)}) == 4


def test_lane_0_keeps_the_group_and_message_of_before_lanes_and_lane_i_has_its_own() -> None:
    job = Job.new(n=1)
    assert to_message(job) == to_message(job.with_(lane=0))
    assert "lane" not in to_message(job)
    assert message_group(to_message(job)) == MESSAGE_GROUP
    assert message_group(to_message(job.with_(lane=2))) == f"{MESSAGE_GROUP}-2"
    assert parse_message(to_message(job.with_(lane=2), resume=True)).lane == 2
    assert message_group("not json") == MESSAGE_GROUP


def test_a_job_recorded_before_lanes_is_lane_0s() -> None:
    job = Job.new(n=1).with_(lane=2)
    assert from_item(to_item(job)).lane == 2
    item = to_item(job.with_(lane=0))
    assert "lane" not in item
    assert from_item(item).lane == 0
    assert item["pending_key"]["S"].count("#") == 1  # as before lanes


@pytest.mark.parametrize("bad", ["-1", "0", "two"])
def test_lanes_below_one_or_not_a_number_are_refused(bad: str) -> None:
    env = {name: "x" for name in ("JOBS_TABLE_NAME", "JOBS_QUEUE_NAME")}
    env.update(JOBS_DELAY_QUEUE_NAME="x", JOBS_STAGE="x", JOBS_LANES=bad)
    with pytest.raises(SettingsError, match="JOBS_LANES"):
        Settings.from_mapping(env)


def test_a_lane_key_other_than_client_or_kind_is_refused() -> None:
    env = {
        "JOBS_TABLE_NAME": "x",
        "JOBS_QUEUE_NAME": "x",
        "JOBS_DELAY_QUEUE_NAME": "x",
        "JOBS_STAGE": "x",
        "JOBS_LANE_KEY": "tenant",
    }
    with pytest.raises(SettingsError, match="JOBS_LANE_KEY"):
        Settings.from_mapping(env)


@pytest.mark.parametrize("key", ["client", "kind"])
def test_submission_records_the_lane_of_its_key_and_sends_to_the_lanes_group(
    aws: dict[str, str], receive: Receive, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    settings = lane_settings(monkeypatch, key=key)
    table, queue = connections.job_table(), connections.job_queue()
    submitted = [
        submit_job(
            "heavyLoad", {"n": 10}, table, queue, RETENTION, client=client, settings=settings
        )
        for client in ("c0", "c1", "c2", "c3", "c4", "c5")
    ]
    sent = groups(receive()) | groups(receive())
    for submission in submitted:
        job = submission.job
        lane = lane_of(job.client if key == "client" else job.kind, LANES)
        assert job.lane == lane
        assert table.get(job.job_id).lane == lane  # type: ignore[union-attr]
        assert job.to_api()["lane"] == lane
        assert sent[job.job_id] == (MESSAGE_GROUP if lane == 0 else f"{MESSAGE_GROUP}-{lane}")
    if key == "client":
        assert len({s.job.lane for s in submitted}) > 1


def test_one_lane_puts_every_job_in_lane_0(aws: dict[str, str], receive: Receive) -> None:
    table, queue = connections.job_table(), connections.job_queue()
    for client in ("c0", "c1", "c2", "c3"):
        job = submit_job(
            "heavyLoad", {"n": 10}, table, queue, RETENTION, client=client, settings=get_settings()
        ).job
        assert job.lane == 0
    assert set(groups(receive()).values()) == {MESSAGE_GROUP}


def test_continuations_retries_and_redrives_stay_in_the_jobs_lane(
    aws: dict[str, str],
    make_job: Callable[..., Job],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_RETRY_BASE_SECONDS", "0")  # no backoff to wait out
    settings = lane_settings(monkeypatch)
    worker = lane_worker(settings)
    table = connections.job_table()
    # A retry: the attempt raises; the delay queue's message names the lane, and the
    # forwarder sends it on unchanged, to the lane's group.
    failing = make_job(lane=2)
    monkeypatch.setattr(
        Worker, "_run_claimed", lambda self, job, owner, *a: self._after_failure(job, owner, "boom")
    )
    assert worker.process_message(to_message(failing)) is Outcome.RETRYING
    delayed = receive(aws["DelayQueueUrl"])
    assert [parse_message(m["Body"]).lane for m in delayed] == [2]
    worker.forward(delayed[0]["Body"], delayed[0]["MessageId"])
    assert groups(receive()) == {failing.job_id: f"{MESSAGE_GROUP}-2"}
    # A continuation: released and sent from the claimed job, lane and all.
    continuing = make_job(lane=1)
    monkeypatch.setattr(
        Worker,
        "_run_claimed",
        lambda self, job, owner, *a: self._continue_later(job, owner, lambda: 10**9),
    )
    assert worker.process_message(to_message(continuing)) is Outcome.CONTINUED
    assert groups(receive()) == {continuing.job_id: f"{MESSAGE_GROUP}-1"}
    # A dead-letter re-drive of a job that never started.
    never_started = make_job(lane=2)
    assert worker.process_dead_letter(to_message(never_started), 23) is Outcome.REDRIVEN
    assert groups(receive()) == {never_started.job_id: f"{MESSAGE_GROUP}-2"}
    assert table.get(never_started.job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_each_lane_has_its_own_watermark_and_lane_0_keeps_the_one_of_before(
    aws: dict[str, str], make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = lane_settings(monkeypatch)
    worker = lane_worker(settings)
    table = connections.job_table()
    worker.process_message(to_message(make_job(lane=0)), delivery(sent_at_ms=1_000))
    worker.process_message(to_message(make_job(lane=2)), delivery(sent_at_ms=5_000))
    assert (table.watermark(), table.watermark(1), table.watermark(2)) == (1_000, None, 5_000)
    raw = table._client.get_item(
        TableName=table.table_name, Key={"job_id": {"S": "control#watermark"}}
    )
    assert raw["Item"]["sent_ms"]["N"] == "1000"


def test_the_sweep_compares_a_pending_job_with_its_own_lanes_watermark(
    aws: dict[str, str],
    make_job: Callable[..., Job],
    receive: Receive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lane 1 has received messages sent long after these jobs were due, so its job lost
    its message; lane 0 has not got that far (its jobs are waiting their turn behind a
    long run), so its job, due at the same moment, is left alone: its message is ahead."""
    settings = lane_settings(monkeypatch)
    worker = lane_worker(settings)
    now_ms = epoch_ms(utc_now())
    lost_after_ms = settings.lost_after_seconds * 1000
    due = now_ms - 10 * lost_after_ms
    waiting_in_0 = make_job(lane=0, pending_at=due)
    lost_in_1 = make_job(lane=1, pending_at=due)
    connections.job_queue().send(to_message(waiting_in_0), waiting_in_0.job_id)  # not empty
    table = connections.job_table()
    table.raise_watermark(due - 1_000, lane=0)
    table.raise_watermark(now_ms, lane=1)

    assert worker.recover_stalled() == [lost_in_1.job_id]
    assert groups(receive()) == {
        waiting_in_0.job_id: MESSAGE_GROUP,
        lost_in_1.job_id: f"{MESSAGE_GROUP}-1",
    }
    assert table.get(waiting_in_0.job_id).pending_at == due  # type: ignore[union-attr]
