"""Logs are JSON lines carrying the job id; metrics are CloudWatch EMF lines.

Log lines are read through a second handler with Powertools' own formatter (the Logger's
handler holds the stdout it found at import); metric lines are printed, read via capsys."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import config, connections, kinds
from chalicelib.jobs import Job
from chalicelib.observability import NAMESPACE, SERVICE, Metric, count, dimensions, logger
from tests.chalicelib.test_config import REQUIRED
from tests.conftest import STAGE
from tests.fake_kinds import kind_running


@pytest.fixture(autouse=True)
def log_buffer() -> Iterator[io.StringIO]:
    """A second handler on the service's logger, with Powertools' own JSON formatter."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    service_logger = logging.getLogger(SERVICE)
    service_logger.addHandler(handler)
    yield buffer
    service_logger.removeHandler(handler)


def lines(capsys: pytest.CaptureFixture[str], log_buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every log line and every metric line written since the last call, parsed."""
    text = log_buffer.getvalue() + capsys.readouterr().out
    log_buffer.seek(0)
    log_buffer.truncate()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def metric_names(records: list[dict[str, Any]]) -> list[str]:
    names = []
    for record in records:
        for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
            assert directive["Namespace"] == NAMESPACE
            names += [metric["Name"] for metric in directive["Metrics"]]
    return names


def metric_dimensions(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each metric line's dimensions (its one dimension set), with their values."""
    found = []
    for record in records:
        for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
            (names,) = directive["Dimensions"]
            found.append({name: record[name] for name in names})
    return found


def test_worker_logs_are_json_with_the_job_id(
    make_job: Callable[..., Job],
    message_for: Any,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
) -> None:
    job = make_job(n=10)
    lines(capsys, log_buffer)

    connections.worker().process_message(message_for(job))

    records = lines(capsys, log_buffer)  # every line parses as JSON
    logs = [r for r in records if "_aws" not in r]
    assert [r["message"] for r in logs] == ["Job started", "Job succeeded"]
    assert all(r["job_id"] == job.job_id for r in logs)
    assert all(r["service"] == "jobs" and r["level"] == "INFO" for r in logs)
    assert metric_names(records) == [
        Metric.STARTED,
        Metric.QUEUE_WAIT,
        Metric.SUCCEEDED,
        Metric.RUN_DURATION,
    ]


def test_a_failing_job_logs_its_error_with_the_job_id(
    make_job: Callable[..., Job],
    message_for: Any,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_MAX_ATTEMPTS", "1")
    connections.reset()

    def broken(input: Any, ctx: kinds.Context) -> int:
        raise RuntimeError("no")

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(broken))
    job = make_job(n=10)
    lines(capsys, log_buffer)

    connections.worker().process_message(message_for(job))

    records = lines(capsys, log_buffer)
    logs = [r for r in records if "_aws" not in r]
    assert all(r["job_id"] == job.job_id for r in logs)
    assert any(r["level"] == "ERROR" and "RuntimeError" in r.get("exception", "") for r in logs)
    assert Metric.FAILED in metric_names(records)


def test_api_logs_and_counts_accepted_jobs(
    client: Client,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
) -> None:
    lines(capsys, log_buffer)
    job_id = client.http.post(
        "/heavy", headers={"Content-Type": "application/json"}, body=b'{"n": 5}'
    ).json_body["job_id"]
    client.http.post(f"/jobs/{job_id}/cancel")

    records = lines(capsys, log_buffer)
    logs = [r for r in records if "_aws" not in r]
    assert [r["message"] for r in logs] == ["Job queued", "Job cancelled"]
    assert all(r["job_id"] == job_id for r in logs)
    assert metric_names(records) == [Metric.ACCEPTED, Metric.CANCELLED]


def test_the_job_id_does_not_leak_to_later_lines(
    make_job: Callable[..., Job],
    message_for: Any,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
) -> None:
    connections.worker().process_message(message_for(make_job(n=1)))
    lines(capsys, log_buffer)
    connections.worker().process_message("not json")
    (record,) = [r for r in lines(capsys, log_buffer) if "_aws" not in r]
    assert "job_id" not in record


def test_every_metric_line_carries_the_service_and_the_stage(
    make_job: Callable[..., Job],
    message_for: Any,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
) -> None:
    """Stages sharing an account write separate metrics: each line names its stage (the
    stage's JOBS_STAGE, here the tests' own) next to the service."""
    lines(capsys, log_buffer)
    connections.worker().process_message(message_for(make_job(n=10)))
    found = metric_dimensions(lines(capsys, log_buffer))
    assert len(found) == 4
    assert all(d == dimensions(STAGE) for d in found)
    assert all(set(d.values()) == {SERVICE, STAGE} for d in found)


def test_the_stage_is_read_when_a_metric_is_emitted_not_at_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], log_buffer: io.StringIO
) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    emitted = []
    for stage in ("dev", "prod"):
        monkeypatch.setenv(config.STAGE, stage)
        connections.reset()  # a new process: settings read afresh
        lines(capsys, log_buffer)
        count(Metric.FAILED)
        (found,) = metric_dimensions(lines(capsys, log_buffer))
        assert found == dimensions(stage)
        emitted.append(found)
    assert emitted[0] != emitted[1]


def test_a_batch_logs_and_counts_its_queued_jobs_once(
    client: Client,
    capsys: pytest.CaptureFixture[str],
    log_buffer: io.StringIO,
) -> None:
    lines(capsys, log_buffer)
    items = [{"kind": "heavyLoad", "input": {"n": n}} for n in (1, -1, 2)]
    results = client.http.post(
        "/jobs/batch",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"jobs": items}).encode(),
    ).json_body["results"]

    records = lines(capsys, log_buffer)
    logs = [r for r in records if "_aws" not in r]
    assert [r["message"] for r in logs] == ["Jobs queued"]
    assert logs[0]["job_ids"] == [results[0]["job"]["job_id"], results[2]["job"]["job_id"]]
    assert metric_names(records) == [Metric.ACCEPTED]
    (metric,) = [r for r in records if "_aws" in r]
    assert metric[Metric.ACCEPTED] == [2]
