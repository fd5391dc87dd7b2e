"""The worker through the real SQS handler (app.process_job), against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import connections, kinds, worker
from chalicelib.jobs import Job, JobStatus
from chalicelib.kinds import JobContext
from chalicelib.store import JobTable


def run_worker(client: Client, event: dict[str, Any]) -> Any:
    return client.lambda_.invoke("process_job", event)


def status(client: Client, job_id: str) -> dict[str, Any]:
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    return dict(response.json_body)


def test_job_lifecycle_post_queue_worker_get(
    client: Client, receive: Callable[..., list[dict[str, Any]]], sqs_event: Any
) -> None:
    submitted = client.http.post(
        "/heavy", headers={"Content-Type": "application/json"}, body=b'{"n": 12345}'
    ).json_body
    messages = receive()
    assert len(messages) == 1

    run_worker(client, sqs_event(messages[0]))

    job = status(client, submitted["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"] == 12345
    assert job["progress"] == 1
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_result_is_an_int_even_for_the_largest_n(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", lambda n, ctx: n)  # skip 1e10 iterations
    job = make_job(n=10**10)
    run_worker(client, sqs_event(message_for(job)))
    body = status(client, job.job_id)
    assert body["result"] == 10**10 and type(body["result"]) is int


def test_duplicate_delivery_of_finished_job_changes_nothing(
    make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    job = make_job(n=10)
    run_worker(client, sqs_event(message_for(job)))
    first = status(client, job.job_id)

    run_worker(client, sqs_event(message_for(job)))  # acknowledged: no exception

    assert status(client, job.job_id) == first


def test_duplicate_delivery_of_running_job_does_not_run_it_again(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = make_job(n=10)
    connections.job_table().start(job.job_id, job.created_at)  # another worker has it
    calls: list[int] = []
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", lambda n, ctx: calls.append(n) or n)

    run_worker(client, sqs_event(message_for(job)))

    assert calls == []
    assert status(client, job.job_id)["status"] == "running"
    assert status(client, job.job_id)["attempts"] == 1


POISON_BODIES = {
    "not-json": "this is not json",
    "empty": "",
    "json-array": "[1, 2]",
    "json-string": '"job"',
    "no-job-id": '{"n": 5}',
    "job-id-not-string": '{"job_id": 5}',
    "job-id-not-uuid": '{"job_id": "abc"}',
    "unknown-job": '{"job_id": "6f9619ff-8b86-4011-b42d-00c04fc964ff"}',
}


@pytest.mark.parametrize("body", POISON_BODIES.values(), ids=POISON_BODIES.keys())
def test_poison_message_is_acknowledged_without_failing_its_batch(
    body: str, make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    good = make_job(n=10)

    run_worker(client, sqs_event(body, message_for(good)))  # no exception: batch acked

    assert status(client, good.job_id)["status"] == "succeeded"


def test_poison_outcome_is_reported(aws: dict[str, str]) -> None:
    outcome = worker.process_message("nope", connections.job_table(), 1.0)
    assert outcome is worker.Outcome.POISON


def test_job_that_raises_is_recorded_failed(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(n: int, ctx: JobContext) -> int:
        raise ValueError("counting went wrong")

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", broken)
    job = make_job(n=10)

    run_worker(client, sqs_event(message_for(job)))

    body = status(client, job.job_id)
    assert body["status"] == "failed"
    assert body["error"] == "ValueError: counting went wrong"
    assert body["result"] is None and body["finished_at"] is not None


def test_unknown_kind_fails_the_job(
    make_job: Callable[..., Job], message_for: Any, client: Client, sqs_event: Any
) -> None:
    job = make_job(n=10, kind="noSuchKind")
    run_worker(client, sqs_event(message_for(job)))
    body = status(client, job.job_id)
    assert body["status"] == "failed" and "noSuchKind" in body["error"]


def test_aws_failure_raises_so_sqs_redelivers(
    make_job: Callable[..., Job],
    message_for: Any,
    client: Client,
    sqs_event: Any,
    aws: dict[str, str],
) -> None:
    import boto3

    job = make_job(n=10)
    boto3.client("dynamodb").delete_table(TableName=aws["TableName"])
    with pytest.raises(Exception, match="DynamoDB"):
        run_worker(client, sqs_event(message_for(job)))


class SpyTable(JobTable):
    """The real table adapter, recording every progress write."""

    def __init__(self, table: JobTable) -> None:
        super().__init__(table._client, table.table_name)
        self.progress: list[float] = []

    def report_progress(self, job_id: str, attempt: int, progress: float) -> Job | None:
        self.progress.append(progress)
        return super().report_progress(job_id, attempt, progress)


class FakeClock:
    """A monotonic clock that advances a fixed step each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_progress_is_monotonic_rate_limited_and_reaches_one(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kinds, "CHUNK", 1000)
    n = 100_000  # 100 chunks
    job = make_job(n=n)
    table = SpyTable(connections.job_table())
    clock = FakeClock(step=0.25)  # each chunk "takes" 0.25 s

    outcome = worker.process_message(message_for(job), table, 1.0, monotonic=clock)

    assert outcome is worker.Outcome.SUCCEEDED
    assert table.progress == sorted(table.progress)
    assert all(0 < p <= 1 for p in table.progress)
    # 100 chunks x 0.25 s = 25 s of fake time: about one write a second, never more.
    assert 20 <= len(table.progress) <= 26
    assert table.get(job.job_id).progress == 1  # type: ignore[union-attr]


def test_progress_is_visible_while_the_job_runs(
    make_job: Callable[..., Job], message_for: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def watching(n: int, ctx: JobContext) -> int:
        for done in range(0, n + 1, n // 4):
            ctx.report(done)
            seen.append(status(client, job.job_id))
        return n

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", watching)
    job = make_job(n=400)
    worker.process_message(
        message_for(job), connections.job_table(), 1.0, monotonic=FakeClock(step=2.0)
    )

    assert [s["status"] for s in seen] == ["running"] * 5
    assert [s["progress"] for s in seen] == [0, 0.25, 0.5, 0.75, 1.0]
    assert seen[0]["started_at"] is not None


def test_heavy_load_counts_to_n_exactly() -> None:
    reports: list[int] = []
    ctx = JobContext(report=reports.append)
    n = 3 * kinds.CHUNK + 17
    assert kinds.heavy_load(n, ctx) == n
    assert reports[-1] == n and reports == sorted(reports)
    assert kinds.heavy_load(0, ctx) == 0


def test_job_statuses_are_the_four_of_the_contract() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed"]


def test_message_body_is_the_job_id_only(make_job: Callable[..., Job]) -> None:
    from chalicelib.jobs import parse_message, to_message

    job = make_job()
    assert json.loads(to_message(job)) == {"job_id": job.job_id}
    assert parse_message(to_message(job)) == job.job_id
