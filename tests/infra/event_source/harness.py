"""What the runner's integration tests share: queues, the toy project wired to them, the
runner as a process, and readings of what happened (records, intervals, queue depth).

The fixtures that build these (``emulator``, ``sqs``, ``make_queue``, ``make_toy``,
``start_runner``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tests.infra.event_source.toy import REGION

IMPORT_ROOT = Path(__file__).resolve().parents[3]  # holds the `infra` package


@dataclass
class Queue:
    name: str
    url: str
    arn: str
    dlq_url: str | None = None

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


def queue_attribute(sqs: Any, url: str, name: str) -> str:
    value: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])["Attributes"][name]
    return value


def messages_in(sqs: Any, queue: Queue) -> int:
    """Visible plus in-flight messages."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def send(sqs: Any, queue: Queue, tag: str, group: str | None = None, **command: Any) -> str:
    """Send a toy command; on a FIFO queue, in ``group`` (default "g") deduplicated by tag."""
    extra: dict[str, str] = {}
    if queue.fifo:
        extra = {"MessageGroupId": group or "g", "MessageDeduplicationId": tag}
    message_id: str = sqs.send_message(
        QueueUrl=queue.url, MessageBody=json.dumps({"tag": tag, **command}), **extra
    )["MessageId"]
    return message_id


@dataclass
class Toy:
    directory: Path
    records: Path
    queue_a: Queue
    queue_b: Queue

    def read_records(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]

    def starts(self, function: str) -> list[dict[str, Any]]:
        return [
            r for r in self.read_records() if r["phase"] == "start" and r["function"] == function
        ]

    def tags_seen(self, function: str) -> list[str]:
        """Tags of every record delivered to ``function``, one per delivery."""
        return [
            json.loads(record["body"])["tag"]
            for start in self.starts(function)
            for record in start["event"]["Records"]
        ]

    def deliveries(self, function: str) -> list[tuple[str, int]]:
        """(tag, ApproximateReceiveCount) of every record delivered, in delivery order."""
        return [
            (
                json.loads(record["body"])["tag"],
                int(record["attributes"]["ApproximateReceiveCount"]),
            )
            for start in self.starts(function)
            for record in start["event"]["Records"]
        ]


@dataclass
class Runner:
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: BinaryIO

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        """The runner's own log lines whose message starts with ``prefix``."""
        marker = " event_source "
        return [
            line.split(marker, 1)[1]
            for line in self.log.splitlines()
            if marker in line and line.split(marker, 1)[1].startswith(prefix)
        ]


def runner_environment(endpoint: str) -> dict[str, str]:
    """The shell a user runs the runner from: boto3's standard variables, no profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("EVENT_SOURCE_MODE", None)  # each test says which mode it runs
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONPATH=os.pathsep.join(p for p in (str(IMPORT_ROOT), env.get("PYTHONPATH")) if p),
    )
    return env


def overlaps(starts_and_ends: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one time."""
    edges = sorted([(s, 1) for s, _ in starts_and_ends] + [(e, -1) for _, e in starts_and_ends])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def intervals(toy: Toy, function: str) -> list[tuple[float, float]]:
    """(start, end) of each completed invocation of ``function``, paired by process."""
    records = [r for r in toy.read_records() if r["function"] == function]
    started: dict[int, float] = {}
    result = []
    for record in records:
        if record["phase"] == "start":
            started[record["pid"]] = record["time"]
        else:
            result.append((started.pop(record["pid"]), record["time"]))
    return result
