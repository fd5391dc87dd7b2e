"""Jobs that run later (docs/later.md), against moto with an injected clock: what
``run_at`` and ``delay_seconds`` accept, that a job waits off the job queue until its time
(in the delay queue, or in the later index until its release), that it is released and
runs at its time, once, whatever is delivered twice, that a cancelled one never runs,
that it counts towards its client's quota, and when its record expires."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections, service
from chalicelib.config import Settings, get_settings
from chalicelib.errors import InvalidRequest, QuotaExceeded, StoreUnavailable
from chalicelib.jobs import (
    PENDING,
    RUN_AT_MS,
    Job,
    JobStatus,
    epoch_ms,
    later_message,
    parse_message,
    pending_key,
    utc_now,
)
from chalicelib.queue import DelayQueue, JobQueue, lane_group, message_group
from chalicelib.requests import parse_heavy_request, parse_job_request, parse_run_at
from chalicelib.store import JobTable
from chalicelib.worker import RELEASE_AHEAD_SECONDS, Outcome, Worker
from tests.chalicelib.test_config import REQUIRED
from tests.chalicelib.test_lanes import client_in_lane, lane_settings

RETENTION = timedelta(days=7)
NOW = datetime(2030, 1, 2, 9, 0, 0, tzinfo=UTC)
SETTINGS = Settings.from_mapping(REQUIRED)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


class SpyDelayQueue(DelayQueue):
    """The real delay queue adapter, recording every send (body, DelaySeconds)."""

    def __init__(self, queue: DelayQueue) -> None:
        super().__init__(queue._client, queue.queue_name)
        self.sent: list[tuple[str, int]] = []

    def send(self, body: str, delay_seconds: int) -> str:
        self.sent.append((body, delay_seconds))
        return super().send(body, delay_seconds)


class SpyJobQueue(JobQueue):
    """The real job queue adapter, recording every send (body, deduplication id)."""

    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue._client, queue.queue_name)
        self.sent: list[tuple[str, str]] = []

    def send(self, body: str, deduplication_id: str) -> str:
        self.sent.append((body, deduplication_id))
        return super().send(body, deduplication_id)


class Clock:
    """A settable ``now``."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def table(aws: dict[str, str]) -> JobTable:
    return connections.job_table()


@pytest.fixture
def queues(aws: dict[str, str]) -> tuple[SpyJobQueue, SpyDelayQueue]:
    real = connections.worker()
    return SpyJobQueue(real.queue), SpyDelayQueue(real.delay_queue)


def worker_at(
    clock: Clock, queues: tuple[SpyJobQueue, SpyDelayQueue], sleeps: list[float] | None = None
) -> Worker:
    real = connections.worker()
    worker = Worker(real.table, queues[0], queues[1], get_settings(), clock)
    worker.sleep = (sleeps if sleeps is not None else []).append
    return worker


def submit(
    run_at: datetime | None,
    clock: Clock,
    queues: tuple[SpyJobQueue, SpyDelayQueue],
    **kwargs: Any,
) -> Job:
    return service.submit_job(
        "heavyLoad",
        {"n": 1},
        connections.job_table(),
        queues[0],
        RETENTION,
        now=clock,
        run_at=run_at,
        delay_queue=queues[1],
        **kwargs,
    ).job


# --- what the API accepts ---------------------------------------------------------------


def test_run_at_is_rfc_3339_with_a_z_or_an_offset_and_is_kept_in_utc() -> None:
    now = lambda: NOW  # noqa: E731
    assert parse_run_at({"run_at": "2030-01-02T10:00:00Z"}, SETTINGS, now) == at(3600)
    assert parse_run_at({"run_at": "2030-01-02T11:00:00+01:00"}, SETTINGS, now) == at(3600)
    assert parse_run_at({"run_at": "2030-01-02t09:00:01.5z"}, SETTINGS, now) == at(1.5)
    nanos = parse_run_at({"run_at": "2030-01-02T09:00:00.123456789Z"}, SETTINGS, now)
    assert nanos == at(0.123456)
    assert parse_run_at({"delay_seconds": 90}, SETTINGS, now) == at(90)
    assert parse_run_at({}, SETTINGS, now) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"run_at": "2030-01-02T10:00:00"},  # no offset: whose time?
        {"run_at": "2030-01-02 10:00:00Z"},
        {"run_at": "2030-01-02"},
        {"run_at": "2030-02-30T10:00:00Z"},
        {"run_at": "2030-01-02T25:00:00Z"},
        {"run_at": "9999-12-31T23:59:59-23:00"},
        {"run_at": "2030-01-02T10:00:00+24:00"},
        {"run_at": 1893574800},
        {"run_at": None},
        {"delay_seconds": -1},
        {"delay_seconds": 1.5},
        {"delay_seconds": True},
        {"delay_seconds": "60"},
        {"run_at": "2030-01-02T10:00:00Z", "delay_seconds": 60},
    ],
)
def test_a_malformed_or_doubled_time_is_400_invalid_run_at(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_run_at(payload, SETTINGS, lambda: NOW)
    assert refused.value.code == "invalid_run_at"


def test_a_time_beyond_the_retention_is_refused_and_one_within_it_accepted() -> None:
    days = SETTINGS.retention_days
    within = {"run_at": f"2030-01-0{2 + days}T09:00:00Z"}
    assert parse_run_at(within, SETTINGS, lambda: NOW) == NOW + SETTINGS.retention
    for payload in (
        {"run_at": f"2030-01-0{2 + days}T09:00:00.001Z"},
        {"delay_seconds": int(SETTINGS.retention.total_seconds()) + 1},
        {"delay_seconds": 10**40},
    ):
        with pytest.raises(InvalidRequest) as refused:
            parse_run_at(payload, SETTINGS, lambda: NOW)
        assert refused.value.code == "invalid_run_at"
        assert "retention" in refused.value.message


def test_both_post_bodies_take_the_fields() -> None:
    body = json.dumps({"kind": "heavyLoad", "input": {"n": 3}, "delay_seconds": 5})
    assert parse_job_request(body, SETTINGS, lambda: NOW).run_at == at(5)
    heavy = parse_heavy_request(
        json.dumps({"n": 3, "run_at": "2030-01-02T09:01:00Z"}), {}, SETTINGS, lambda: NOW
    )
    assert heavy.run_at == at(60) and heavy.input == {"n": 3}


def test_the_service_refuses_a_run_at_beyond_the_retention_writing_nothing(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    with pytest.raises(InvalidRequest) as refused:
        submit(clock.moment + RETENTION + timedelta(seconds=1), clock, queues)
    assert refused.value.code == "invalid_run_at"
    assert queues[0].sent == queues[1].sent == []
    assert service.list_jobs({}, table).jobs == []


# --- waiting, off the job queue ------------------------------------------------------------


def test_a_time_past_runs_at_once(queues: tuple[SpyJobQueue, SpyDelayQueue]) -> None:
    clock = Clock(utc_now())
    job = submit(clock.moment - timedelta(hours=1), clock, queues)
    assert [parse_message(body).job_id for body, _ in queues[0].sent] == [job.job_id]
    assert queues[1].sent == []


def test_a_job_due_within_sqs_delays_waits_in_the_delay_queue_not_on_the_job_queue(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(seconds=600.5)
    job = submit(run_at, clock, queues)
    assert queues[0].sent == []
    [(body, delay)] = queues[1].sent
    assert delay == 600  # whole seconds, never late: the forwarder waits the rest
    assert json.loads(body)[RUN_AT_MS] == epoch_ms(run_at)
    shown = table.get(job.job_id)
    assert shown is not None and shown.to_api()["status"] == "queued"
    assert shown.to_api()["run_at"] == run_at.isoformat(timespec="milliseconds")[:-6] + "Z"
    assert shown.pending_at == epoch_ms(run_at)  # the sweep would not send it before then


def test_a_job_due_later_waits_in_the_later_index_with_no_message_and_expires_after_it(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(days=3)
    job = submit(run_at, clock, queues)
    assert queues[0].sent == queues[1].sent == []
    stored = table.get(job.job_id)
    assert stored is not None and stored.later and stored.pending_at is None
    assert stored.expires_at == int((run_at + RETENTION).timestamp())
    assert table.due_later(run_at + timedelta(seconds=1), 10)[0].job_id == job.job_id


def test_a_job_waiting_for_its_time_counts_towards_its_clients_quota(
    queues: tuple[SpyJobQueue, SpyDelayQueue],
) -> None:
    clock = Clock(utc_now())
    settings = replace(SETTINGS, max_active_per_client=1)
    submit(clock.moment + timedelta(days=1), clock, queues, client="alice", settings=settings)
    with pytest.raises(QuotaExceeded):
        submit(None, clock, queues, client="alice", settings=settings)


# --- the release and the forwarder -------------------------------------------------------------


def test_the_release_sends_a_job_minutes_before_its_time_delayed_to_it_and_only_once(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=2)
    job = submit(run_at, clock, queues)
    worker = worker_at(clock, queues)

    clock.moment = run_at - timedelta(seconds=RELEASE_AHEAD_SECONDS + 1)
    assert worker.release_due() == []  # not yet within the look-ahead
    clock.moment = run_at - timedelta(seconds=200.4)
    assert worker.release_due() == [job.job_id]
    [(body, delay)] = queues[1].sent
    assert delay == 200 and parse_message(body).job_id == job.job_id
    assert worker.release_due() == []  # out of the index: released once
    released = table.get(job.job_id)
    assert released is not None and not released.later
    assert released.pending_at == epoch_ms(run_at)
    assert queues[0].sent == []


def test_two_releases_of_one_entry_send_one_message(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    job = submit(clock.moment + timedelta(hours=1), clock, queues)
    [entry] = table.due_later(clock.moment + timedelta(hours=2), 10)
    first = worker_at(clock, queues)
    second = worker_at(clock, queues)
    assert first._release_one(entry) is True
    assert second._release_one(entry) is False  # the conditional write refused it
    assert [parse_message(body).job_id for body, _ in queues[1].sent] == [job.job_id]


def test_a_job_cancelled_before_its_time_is_never_released_nor_run(
    client: Client, queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=1)
    job = submit(run_at, clock, queues)
    assert client.http.post(f"/jobs/{job.job_id}/cancel").status_code == 200
    assert table.due_later(run_at + timedelta(seconds=1), 10) == []
    clock.moment = run_at
    assert worker_at(clock, queues).release_due() == []
    assert queues[1].sent == []


def test_a_job_cancelled_after_its_release_never_runs(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(seconds=30)
    job = submit(run_at, clock, queues)
    service.cancel_job(job.job_id, table)
    clock.moment = run_at
    worker = worker_at(clock, queues)
    [(body, _)] = queues[1].sent
    assert worker.forward(body, "delay-message-1") is Outcome.FORWARDED
    assert worker.process_message(queues[0].sent[0][0]) is Outcome.CANCELLED
    stored = table.get(job.job_id)
    assert stored is not None and stored.status is JobStatus.CANCELLED and stored.attempts == 0


def test_the_forwarder_never_puts_a_job_on_the_job_queue_before_its_time(
    queues: tuple[SpyJobQueue, SpyDelayQueue],
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(seconds=1800)  # past SQS's 15 minutes
    job = Job.new(n=1, now=clock.moment, run_at=run_at)
    sleeps: list[float] = []
    worker = worker_at(clock, queues, sleeps)
    clock.moment = run_at - timedelta(seconds=900)
    assert worker.forward(later_message(job), "m-1") is Outcome.DELAYED
    assert queues[1].sent == [(later_message(job), 900)] and queues[0].sent == []
    clock.moment = run_at - timedelta(seconds=0.25)  # DelaySeconds rounds down
    assert worker.forward(later_message(job), "m-2") is Outcome.FORWARDED
    assert sleeps == [0.25]  # it waits the rest first
    assert [dedup for _, dedup in queues[0].sent] == ["m-2"]


def test_a_job_released_and_forwarded_twice_runs_once(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=1)
    job = submit(run_at, clock, queues)
    clock.moment = run_at - timedelta(seconds=60)
    worker = worker_at(clock, queues)
    worker.release_due()
    clock.moment = run_at
    [(body, _)] = queues[1].sent
    worker.forward(body, "delay-message-1")
    worker.forward(body, "delay-message-1")  # the delay queue delivered it twice
    worker.forward(body, "delay-message-2")  # or its send was made twice
    outcomes = [worker.process_message(sent) for sent, _ in queues[0].sent]
    assert outcomes.count(Outcome.SUCCEEDED) == 1
    assert set(outcomes) <= {Outcome.SUCCEEDED, Outcome.DUPLICATE}
    finished = table.get(job.job_id)
    assert finished is not None and finished.status is JobStatus.SUCCEEDED
    assert finished.attempts == 1 and finished.started_at is not None
    assert finished.run_at is not None and finished.started_at >= finished.run_at


def test_a_release_whose_send_is_lost_is_sent_by_the_sweep_after_its_time_never_before(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=1)
    job = submit(run_at, clock, queues)
    [entry] = table.due_later(run_at + timedelta(seconds=1), 10)
    table.release_later(entry.job_id, entry.run_at, epoch_ms(run_at))  # then a crash
    worker = worker_at(clock, queues)
    lost_after = timedelta(seconds=get_settings().lost_after_seconds)
    clock.moment = run_at + lost_after - timedelta(seconds=1)
    assert worker.recover_stalled() == []
    clock.moment = run_at + lost_after + timedelta(seconds=1)
    assert worker.recover_stalled() == [job.job_id]


def test_the_minutely_function_releases_due_jobs(
    client: Client, queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    # No delay queue given: it waits in the later index, even this close to its time.
    job = service.submit_job(
        "heavyLoad",
        {"n": 1},
        table,
        queues[0],
        RETENTION,
        now=clock,
        run_at=clock.moment + timedelta(seconds=RELEASE_AHEAD_SECONDS / 2),
    ).job
    assert job.later
    client.lambda_.invoke(
        "recover_stalled_jobs",
        client.events.generate_cw_event("aws.events", "Scheduled Event", {}, []),
    )
    stored = table.get(job.job_id)
    assert stored is not None and not stored.later


# --- over HTTP ---------------------------------------------------------------------------------


def test_post_jobs_and_post_heavy_take_the_time_and_get_shows_it(client: Client) -> None:
    headers = {"Content-Type": "application/json"}
    accepted = client.http.post(
        "/jobs",
        headers=headers,
        body=json.dumps({"kind": "heavyLoad", "input": {"n": 1}, "delay_seconds": 3600}),
    )
    assert accepted.status_code == 202
    assert accepted.json_body["status"] == "queued" and accepted.json_body["run_at"]
    assert int(accepted.headers["Retry-After"]) >= 3600  # no use polling before its time
    heavy = client.http.post(
        "/heavy", headers=headers, body=json.dumps({"n": 1, "run_at": "2000-01-01T00:00:00Z"})
    )
    assert heavy.status_code in (200, 202)
    shown = client.http.get(f"/jobs/{heavy.json_body['job_id']}")
    assert shown.json_body["run_at"] == "2000-01-01T00:00:00.000Z"
    refused = client.http.post(
        "/jobs",
        headers=headers,
        body=json.dumps({"kind": "heavyLoad", "run_at": "tomorrow"}),
    )
    assert refused.status_code == 400
    assert refused.json_body["error"]["code"] == "invalid_run_at"


def test_rewriting_a_waiting_jobs_index_keys_keeps_it_waiting(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    job = submit(clock.moment + timedelta(days=1), clock, queues)
    assert table.rewrite_derived(job) is not None  # the migration's write
    assert [e.job_id for e in table.due_later(clock.moment + timedelta(days=2), 10)] == [job.job_id]
    service.cancel_job(job.job_id, table)
    cancelled = table.get(job.job_id)
    assert cancelled is not None and table.rewrite_derived(cancelled) is not None
    assert table.due_later(clock.moment + timedelta(days=2), 10) == []


class FailingDelayQueue(SpyDelayQueue):
    """The delay queue while SQS is unavailable."""

    def send(self, body: str, delay_seconds: int) -> str:
        raise StoreUnavailable("SQS is down")


def test_a_release_whose_send_fails_leaves_the_job_waiting_for_the_next_release(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable
) -> None:
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=1)
    job = submit(run_at, clock, queues)
    clock.moment = run_at - timedelta(seconds=120)
    down = worker_at(clock, (queues[0], FailingDelayQueue(queues[1])))
    with pytest.raises(StoreUnavailable):
        down.release_due()
    waiting = table.get(job.job_id)
    assert waiting is not None and waiting.later and waiting.pending_at is None
    assert worker_at(clock, queues).release_due() == [job.job_id]  # SQS is back


def test_a_job_that_runs_later_is_released_into_its_own_lane(
    queues: tuple[SpyJobQueue, SpyDelayQueue], table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a stage with lanes, the release puts a waiting job in its lane's partition of the
    pending index (the sweep of its lane finds it if the send is lost) and its message in
    its lane's message group."""
    settings = lane_settings(monkeypatch, 3)
    client = client_in_lane(2, 3)
    clock = Clock(utc_now())
    run_at = clock.moment + timedelta(hours=2)
    job = submit(run_at, clock, queues, client=client, settings=settings)
    assert job.lane == 2
    [entry] = table.due_later(run_at + timedelta(seconds=1), 10)
    assert entry.lane == 2

    clock.moment = run_at - timedelta(seconds=60)
    assert worker_at(clock, queues).release_due() == [job.job_id]
    [(body, _)] = queues[1].sent
    assert message_group(body) == lane_group(2)
    item = table._client.get_item(
        TableName=table.table_name, Key={"job_id": {"S": job.job_id}}, ConsistentRead=True
    )["Item"]
    assert item[PENDING.partition_key] == {"S": pending_key(job.job_id, 2)}
