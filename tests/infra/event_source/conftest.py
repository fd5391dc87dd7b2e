"""Fixtures for the runner's integration tests: a moto server, fresh queues, the toy
project wired to them, and ``python -m infra.event_source`` started on it (stopped after
the test). The helpers they return are in ``harness.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.emulator import EmulatorHandle, start_emulator
from tests.infra.event_source.harness import (
    IMPORT_ROOT,
    Queue,
    Runner,
    Toy,
    queue_attribute,
    runner_environment,
)
from tests.infra.event_source.toy import REGION, STAGE, toy_config, write_toy_project


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator() as handle:
        yield handle


@pytest.fixture
def sqs(emulator: EmulatorHandle) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def make_queue(sqs: Any) -> Iterator[Callable[..., Queue]]:
    """Factory for a fresh queue (unique name), optionally FIFO, optionally with a
    dead-letter queue (FIFO too for a FIFO queue, as SQS requires)."""
    urls: list[str] = []

    def make(
        visibility: int = 5, max_receive_count: int | None = None, fifo: bool = False
    ) -> Queue:
        # 5 s by default: well past a cold start plus the toy's work, so a message is
        # redelivered only when a test means it to be (visibility=1 and a failure).
        name = f"q-{uuid.uuid4().hex[:12]}"
        suffix = ".fifo" if fifo else ""
        fifo_attributes = {"FifoQueue": "true"} if fifo else {}
        attributes = {"VisibilityTimeout": str(visibility), **fifo_attributes}
        dlq_url = None
        if max_receive_count is not None:
            dlq = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attributes)
            dlq_url = dlq["QueueUrl"]
            urls.append(dlq_url)
            dlq_arn = queue_attribute(sqs, dlq_url, "QueueArn")
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
            )
        url = sqs.create_queue(QueueName=name + suffix, Attributes=attributes)["QueueUrl"]
        urls.append(url)
        return Queue(name + suffix, url, queue_attribute(sqs, url, "QueueArn"), dlq_url)

    yield make
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def make_toy(tmp_path: Path, make_queue: Callable[..., Queue]) -> Callable[..., Toy]:
    """Factory: the toy project under tmp_path, wired to fresh queues A and B."""

    def make(
        queue_a: Queue | None = None, queue_b: Queue | None = None, **stage_overrides: Any
    ) -> Toy:
        a = queue_a or make_queue()
        b = queue_b or make_queue()
        records = tmp_path / "records.jsonl"
        config = toy_config(a.name, b.name, records, **stage_overrides)
        return Toy(write_toy_project(tmp_path / "toy", config), records, a, b)

    return make


@pytest.fixture
def start_runner(emulator: EmulatorHandle, tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Factory: ``python -m infra.event_source`` on a project; stopped after the test.

    ``environment`` adds variables to the runner's (e.g. ``EVENT_SOURCE_MODE``).
    """
    runners: list[Runner] = []

    def start(toy: Toy, *extra: str, environment: dict[str, str] | None = None) -> Runner:
        log_path = tmp_path / f"runner-{len(runners)}.log"
        log_file = log_path.open("wb")
        command = [
            sys.executable, "-m", "infra.event_source",
            "--project-dir", str(toy.directory), "--stage", STAGE, "--poll-seconds", "1",
            *extra,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            cwd=IMPORT_ROOT,  # `-m` looks in the working directory first
            env={**runner_environment(emulator.url), **(environment or {})},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, so cleanup can reach stragglers
        )
        runners.append(Runner(process, log_path, log_file))
        return runners[-1]

    yield start
    for runner in runners:
        if runner.process.poll() is None:
            runner.process.terminate()
            try:
                runner.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(runner.process.pid, signal.SIGKILL)
                runner.process.wait()
        runner.log_file.close()
