"""infra.event_source.receives: the journal of receives in flight, and taking back what a
dead runner's receives took, on in-process moto with the speed-ups (which give FIFO
queues their ReceiveRequestAttemptId). The runner as a process is in test_shutdown.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.event_source.receives import (
    ATTEMPT_WINDOW_SECONDS,
    RECOVERY_MARGIN_SECONDS,
    ReceiveJournal,
    recover,
)
from tests.infra.moto_flavours import client, moto_as

STAGE = "dev"


@pytest.fixture
def queue() -> Iterator[str]:
    with moto_as("fast"):
        url: str = client("sqs").create_queue(
            QueueName="jobs.fifo", Attributes={"FifoQueue": "true", "VisibilityTimeout": "900"}
        )["QueueUrl"]
        yield url


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def send(url: str, body: str) -> None:
    client("sqs").send_message(
        QueueUrl=url, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=body
    )


def counts(url: str) -> tuple[int, int]:
    """(visible, in flight)."""
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def receive_as(journal: ReceiveJournal, url: str, pid: int) -> list[dict[str, Any]]:
    """A receive journalled as a runner makes it, then left as if ``pid`` had made it
    and died (wait 0: its poll is already over)."""
    attempt = journal.begin(url, 10, 0)
    entry = journal.directory / f"{attempt}.json"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "pid": pid}))
    messages: list[dict[str, Any]] = (
        client("sqs")
        .receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, ReceiveRequestAttemptId=attempt
        )
        .get("Messages", [])
    )
    return messages


def run_recover(journal: ReceiveJournal, **kwargs: Any) -> int:
    return recover(journal, client("sqs"), "fn", threading.Event(), **kwargs)


def test_what_a_dead_runners_receive_took_is_visible_again(
    tmp_path: Path, queue: str, dead_pid: int
) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    send(queue, "a")
    send(queue, "b")
    assert len(receive_as(journal, queue, dead_pid)) == 2
    assert counts(queue) == (0, 2)

    assert run_recover(journal) == 2

    assert counts(queue) == (2, 0)
    assert journal.orphaned() == []


def test_a_live_runners_receives_are_left_alone(tmp_path: Path, queue: str) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    send(queue, "a")
    receive_as(journal, queue, os.getpid())

    assert run_recover(journal) == 0
    assert counts(queue) == (0, 1)


def test_a_receive_whose_messages_were_settled_has_nothing_to_take_back(
    tmp_path: Path, queue: str, dead_pid: int
) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    send(queue, "a")
    send(queue, "b")
    (message, _) = receive_as(journal, queue, dead_pid)
    client("sqs").delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    assert run_recover(journal) == 0  # SQS refuses the retry: nothing is ours any more
    assert counts(queue) == (0, 1)  # and the other message is left to its invocation
    assert journal.orphaned() == []


def test_a_receive_too_old_to_retry_is_forgotten(tmp_path: Path, queue: str, dead_pid: int) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    send(queue, "a")
    receive_as(journal, queue, dead_pid)
    later = time.time() + ATTEMPT_WINDOW_SECONDS

    assert run_recover(journal, clock=lambda: later) == 0
    assert counts(queue) == (0, 1)  # back when its visibility timeout ends
    assert journal.orphaned() == []


def test_recovery_waits_until_the_dead_runners_long_poll_is_over(
    tmp_path: Path, queue: str, dead_pid: int
) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    send(queue, "a")
    receive_as(journal, queue, dead_pid)
    entry = next(journal.directory.glob("*.json"))
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "wait_seconds": 20}))
    stop = threading.Event()
    stop.set()  # the runner stops before the poll is over: nothing is retried yet

    assert recover(journal, client("sqs"), "fn", stop) == 0
    assert counts(queue) == (0, 1) and len(journal.orphaned()) == 1
    over = time.time() + 20 + RECOVERY_MARGIN_SECONDS
    assert run_recover(journal, clock=lambda: over) == 1


def test_an_unreadable_entry_is_removed(tmp_path: Path, queue: str) -> None:
    journal = ReceiveJournal(tmp_path, STAGE, "fn")
    journal.directory.mkdir(parents=True)
    (journal.directory / "broken.json").write_text("{not json")

    assert journal.orphaned() == []
    assert not (journal.directory / "broken.json").exists()
