"""infra.moto_speedups as a whole: pinned to one moto release, applied and reverted
cleanly, and applied by the embedded emulator (and only there)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import jsonpath_ng.ext
import moto
import pytest
from moto import backends, mock_aws
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import Table
from moto.sqs import models as sqs_models
from moto.sqs.models import Queue, SQSBackend

from infra import moto_speedups
from infra.emulator import EmulatorHandle, start_emulator, wait_until

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _reverted() -> Iterator[None]:
    yield
    moto_speedups.revert()


def test_the_pin_is_the_installed_moto() -> None:
    # requirements-dev.txt pins moto; the speed-ups must be re-checked when it moves.
    assert moto.__version__ == moto_speedups.PINNED_MOTO_VERSION
    moto_speedups.check_version()


def test_another_moto_release_is_refused_before_anything_is_patched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Queue.add_message
    monkeypatch.setattr(moto, "__version__", "5.2.6")
    with pytest.raises(moto_speedups.UnsupportedMotoVersion, match=r"5\.2\.5.*5\.2\.6"):
        moto_speedups.apply()
    assert not moto_speedups.applied()
    assert Queue.add_message is original


def test_apply_and_revert_are_idempotent_and_restore_moto_exactly() -> None:
    before = {
        (owner, name): owner.__dict__.get(name)
        for owner, names in [
            (Queue, ["add_message", "delete_message", "messages", "wait_for_messages"]),
            (SQSBackend, ["receive_message", "change_message_visibility"]),
            (Table, ["query", "put_item", "delete_item"]),
            (Item, ["__init__"]),
            (sqs_models, ["camelcase_to_underscores"]),
            (backends, ["list_of_moto_modules"]),
            (jsonpath_ng.ext, ["parse"]),
        ]
        for name in names
    }
    moto_speedups.apply()
    moto_speedups.apply()
    assert moto_speedups.applied()
    assert Queue.add_message is not before[(Queue, "add_message")]
    moto_speedups.revert()
    moto_speedups.revert()
    assert not moto_speedups.applied()
    for (owner, name), value in before.items():
        assert owner.__dict__.get(name) is value, name
    assert "_messages" not in Queue.__dict__


def test_queues_change_hands_both_ways_with_their_messages() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
        for body in ("a", "b", "c"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        # Made by stock moto, taken over by the speed-ups: a receives, b stays.
        moto_speedups.apply()
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "a"
        sqs.send_message(QueueUrl=url, MessageBody="d")
        # Handed back: moto as released sees the same queue, a still in flight.
        moto_speedups.revert()
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in got] == ["b", "c", "d"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "4"


# --- the emulator applies them -------------------------------------------------------------


def _started(stock_moto: bool) -> tuple[EmulatorHandle, list[str]]:
    handle = start_emulator(output=subprocess.PIPE, stock_moto=stock_moto)
    lines: list[str] = []
    assert handle.process is not None and handle.process.stdout is not None
    stdout = handle.process.stdout

    def read() -> None:
        for raw in iter(stdout.readline, b""):
            lines.append(raw.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    assert wait_until(lambda: any("ready at" in line for line in lines), 15)
    return handle, lines


def _client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_the_emulator_runs_moto_with_the_speed_ups() -> None:
    handle, lines = _started(stock_moto=False)
    with handle:
        assert any("with infra.moto_speedups" in line for line in lines)
        # A rule only the speed-ups follow (SQS's, see test_moto_speedups_sqs.py): a
        # deduplication id outlives its deleted message.
        sqs = _client("sqs", handle.url)
        url = sqs.create_queue(QueueName="q.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        sqs.send_message(
            QueueUrl=url, MessageBody="a", MessageGroupId="g", MessageDeduplicationId="d"
        )
        message = sqs.receive_message(QueueUrl=url)["Messages"][0]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        sqs.send_message(
            QueueUrl=url, MessageBody="a again", MessageGroupId="g", MessageDeduplicationId="d"
        )
        assert "Messages" not in sqs.receive_message(QueueUrl=url)
    # The in-process moto of the tests is left as released.
    assert not moto_speedups.applied()


def test_the_emulator_can_run_moto_as_released() -> None:
    handle, lines = _started(stock_moto=True)
    with handle:
        assert any("moto as released" in line for line in lines)
        assert _client("sqs", handle.url).list_queues().get("QueueUrls", []) == []
