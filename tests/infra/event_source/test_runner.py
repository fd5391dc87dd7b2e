"""Integration tests for infra.event_source: the runner as users run it,
``python -m infra.event_source``, against a real moto server and the toy Chalice project,
observed from outside: queues, a record file the toy handlers append to, the runner's log,
and /proc.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from infra.emulator import EmulatorHandle
from infra.run import PROJECT_DIR, Services
from tests.infra.event_source.harness import (
    Queue,
    Runner,
    Toy,
    intervals,
    messages_in,
    overlaps,
    queue_attribute,
    send,
)
from tests.infra.event_source.toy import REGION, docs_event, shape
from tests.infra.harness import isolated_environment, run_make
from tests.processes import child_pids, is_running
from tests.waiting import wait_for


def test_both_queues_are_served_with_lambdas_event_context_and_environment(
    make_toy: Callable[..., Toy], start_runner: Callable[..., Runner], sqs: Any
) -> None:
    toy = make_toy()
    sqs.send_message(
        QueueUrl=toy.queue_a.url,
        MessageBody=json.dumps({"tag": "a0"}),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "demo"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    send(sqs, toy.queue_a, "a1", sleep=0.2)
    send(sqs, toy.queue_a, "a2", sleep=0.2)
    send(sqs, toy.queue_b, "b0")

    runner = start_runner(toy, "--burst")
    assert runner.process.wait(30) == 0, runner.log

    assert sorted(toy.tags_seen("handle_a")) == ["a0", "a1", "a2"]
    assert toy.tags_seen("handle_b") == ["b0"]
    assert messages_in(sqs, toy.queue_a) == messages_in(sqs, toy.queue_b) == 0

    # The event: Lambda's shape, exactly as AWS's sample for a message without attributes.
    sample = docs_event("aws_docs_sqs_event_standard.json")["Records"][0]
    (b_start,) = toy.starts("handle_b")
    (b_record,) = b_start["event"]["Records"]
    assert shape(b_record) == shape(sample)
    assert (b_record["eventSourceARN"], b_record["awsRegion"]) == (toy.queue_b.arn, REGION)
    a0 = next(s for s in toy.starts("handle_a") if "a0" in s["event"]["Records"][0]["body"])
    a0_record = a0["event"]["Records"][0]
    assert a0_record["messageAttributes"]["kind"] == {
        "stringValue": "demo", "stringListValues": [], "binaryListValues": [], "dataType": "String",
    }  # fmt: skip
    assert base64.b64decode(a0_record["messageAttributes"]["blob"]["binaryValue"]) == b"\x00\xff"
    assert isinstance(a0_record["md5OfMessageAttributes"], str)

    # The context and environment each function was configured with.
    for start in toy.starts("handle_a"):
        assert start["context"]["function_name"] == "toy-dev-handle_a"
        assert start["context"]["memory_limit_in_mb"] == 256
        assert 0 < start["context"]["remaining_ms"] <= 1000
        assert start["env"] == {
            "TOY_STAGE_VAR": "from-stage",
            "TOY_FUNCTION_VAR": "only-a",
            "AWS_LAMBDA_FUNCTION_NAME": "toy-dev-handle_a",
        }
    assert b_start["context"]["memory_limit_in_mb"] == 512
    assert b_start["env"]["TOY_FUNCTION_VAR"] is None

    # Reserved concurrency 1: one instance, started cold once, then warm, never overlapping.
    assert len({s["pid"] for s in toy.starts("handle_a")}) == 1
    assert overlaps(intervals(toy, "handle_a")) == 1
    a_lines = [line for line in runner.log.splitlines() if "function=toy-dev-handle_a" in line]
    assert len(a_lines) == 3
    assert sum("start=cold" in line for line in a_lines) == 1
    assert all("outcome=succeeded deleted=1" in line for line in a_lines)
    assert "toy handle_b: {'tag': 'b0'}" in runner.log  # the handler's own output


def test_scheduled_handlers_get_eventbridge_events_every_period(
    make_toy: Callable[..., Toy], start_runner: Callable[..., Runner]
) -> None:
    toy = make_toy()
    runner = start_runner(toy, "--schedule-period-seconds", "0.3")

    def ticks() -> list[dict[str, Any]]:
        if not toy.records.exists():
            return []
        lines = [json.loads(line) for line in toy.records.read_text().splitlines()]
        return [line for line in lines if line["phase"] == "tick"]

    wait_for(lambda: len(ticks()) >= 2, 20, "two scheduled invocations")
    event = ticks()[0]["event"]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"] == [f"arn:aws:events:{REGION}:123456789012:rule/toy-dev-tick"]
    assert event["region"] == REGION and event["detail"] == {}
    assert "tick (toy-dev-tick) <- schedule rate(1 minute): every 0.3 s" in runner.log


@pytest.mark.parametrize("reserved", [1, 3])
def test_reserved_concurrency_bounds_the_instances_running_at_once(
    reserved: int,
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    # Each invocation stays busy until all three have started (at most 10 s): with room
    # for three they overlap by construction, however slow the cold starts; with room for
    # one, the barrier times out each time and they still never overlap. The timeout and
    # visibility leave room for that wait.
    toy = make_toy(
        queue_a=make_queue(visibility=60),
        queue_b=make_queue(visibility=60),
        reserved_concurrency=reserved,
        lambda_timeout=30,
    )
    for n in range(3):
        send(sqs, toy.queue_a, f"a{n}", barrier=3, barrier_seconds=0.5 if reserved == 1 else 10)

    assert start_runner(toy, "--burst").process.wait(30) == 0

    spans = intervals(toy, "handle_a")
    assert len(spans) == 3
    # The same measure sees all three at once when slots allow it.
    assert overlaps(spans) == min(reserved, 3)
    assert len({s["pid"] for s in toy.starts("handle_a")}) <= reserved


def test_a_failing_message_is_redelivered_then_dead_lettered(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    toy = make_toy(queue_a=make_queue(visibility=1, max_receive_count=2))
    send(sqs, toy.queue_a, "boom", **{"raise": True})
    runner = start_runner(toy)

    def dead_lettered() -> list[dict[str, Any]]:
        response = sqs.receive_message(QueueUrl=toy.queue_a.dlq_url, WaitTimeSeconds=1)
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    (dead,) = wait_for(dead_lettered, 20, "the message in the dead-letter queue")

    assert json.loads(dead["Body"])["tag"] == "boom"
    counts = [
        s["event"]["Records"][0]["attributes"]["ApproximateReceiveCount"]
        for s in toy.starts("handle_a")
    ]
    assert counts == ["1", "2"]  # maxReceiveCount deliveries, then SQS's redrive
    assert runner.log.count("outcome=failed deleted=0") == 2
    assert "RuntimeError: toy failure for boom" in runner.log  # the traceback is logged


def test_batch_item_failures_delete_only_the_successful_records(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    toy = make_toy(queue_b=make_queue(visibility=1, max_receive_count=2))
    sqs.send_message_batch(
        QueueUrl=toy.queue_b.url,
        Entries=[
            {"Id": tag, "MessageBody": json.dumps({"tag": tag, "fail": tag == "bad"})}
            for tag in ("ok1", "bad", "ok2")
        ],
    )
    runner = start_runner(toy)

    wait_for(lambda: queue_attribute(sqs, toy.queue_b.dlq_url or "", "ApproximateNumberOfMessages")
             == "1", 20, "the failed record in the dead-letter queue")  # fmt: skip

    seen = toy.tags_seen("handle_b")
    assert (seen.count("ok1"), seen.count("ok2"), seen.count("bad")) == (1, 1, 2)
    assert "outcome=partial" in runner.log
    assert messages_in(sqs, toy.queue_b) == 0


def test_an_invocation_past_the_timeout_is_killed_and_the_next_one_cold_starts(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    toy = make_toy(queue_a=make_queue(visibility=1, max_receive_count=1))
    send(sqs, toy.queue_a, "slow", sleep=30)
    runner = start_runner(toy)
    (slow,) = wait_for(lambda: toy.starts("handle_a"), 15, "the slow invocation to start")

    wait_for(lambda: "Task timed out after 1.00 seconds" in runner.log, 20, "the timeout")
    wait_for(lambda: not is_running(slow["pid"]), 10, "the timed-out instance to be killed")
    after_id = send(sqs, toy.queue_a, "after")

    def after_line() -> str | None:
        return next((line for line in runner.log.splitlines() if f"ids={after_id}" in line), None)

    line = wait_for(after_line, 15, "the next invocation's log line")
    assert "outcome=succeeded" in line and "start=cold" in line
    after = next(s for s in toy.starts("handle_a") if "after" in s["event"]["Records"][0]["body"])
    assert after["pid"] != slow["pid"]
    assert "outcome=failed deleted=0" in runner.log


def test_an_instance_that_dies_fails_its_batch_and_is_replaced(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    toy = make_toy(queue_a=make_queue(visibility=1, max_receive_count=1))
    send(sqs, toy.queue_a, "die", exit=True)
    runner = start_runner(toy)
    wait_for(lambda: "exit status 3" in runner.log, 15, "the instance to die")
    after_id = send(sqs, toy.queue_a, "after")

    def after_line() -> str | None:
        return next((line for line in runner.log.splitlines() if f"ids={after_id}" in line), None)

    line = wait_for(after_line, 15, "the next invocation's log line")
    assert "outcome=succeeded" in line and "start=cold" in line
    died = next(line for line in runner.log.splitlines() if "exit status 3" in line)
    assert "outcome=failed deleted=0" in died


# How long the handler signalled in the middle of its work would still run.
HANDLER_SECONDS = 30


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_runner_and_all_its_children_promptly(
    signum: int,
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    # A long timeout (and a queue that allows it) so the handler is busy when we signal.
    toy = make_toy(
        queue_a=make_queue(visibility=60), queue_b=make_queue(visibility=60), lambda_timeout=30
    )
    send(sqs, toy.queue_a, "long", sleep=HANDLER_SECONDS)
    runner = start_runner(toy)
    (busy,) = wait_for(lambda: toy.starts("handle_a"), 15, "the invocation to start")
    children = child_pids(runner.process.pid)
    assert busy["pid"] in children

    began = time.monotonic()
    runner.process.send_signal(signum)
    assert runner.process.wait(HANDLER_SECONDS) == 0
    # Promptly: it did not wait for the busy handler, which had most of its 30 s left
    # (a ratio to the handler's own work, not an absolute threshold for this machine).
    assert time.monotonic() - began < HANDLER_SECONDS / 3

    wait_for(lambda: not any(is_running(pid) for pid in children), 10, "children to exit")
    # The message was neither deleted nor made visible: it is still in flight.
    assert messages_in(sqs, toy.queue_a) == 1
    assert queue_attribute(sqs, toy.queue_a.url, "ApproximateNumberOfMessages") == "0"


def test_a_function_timeout_longer_than_the_visibility_timeout_is_refused(
    make_toy: Callable[..., Toy], start_runner: Callable[..., Runner]
) -> None:
    toy = make_toy(lambda_timeout=6)  # the toy's queues have a 5 s visibility timeout

    runner = start_runner(toy, "--burst")

    assert runner.process.wait(15) == 2
    assert "visibility timeout: 5 seconds is less than function timeout: 6" in runner.log


@pytest.mark.parametrize(
    ("environment", "extra", "first_line"),
    [
        ({}, (), "mode=exact"),
        ({"EVENT_SOURCE_MODE": "aws"}, ("--pollers", "2"), "mode=aws pollers=2"),
        ({"EVENT_SOURCE_MODE": "aws"}, ("--mode", "exact"), "mode=exact"),  # the flag wins
    ],
)
def test_the_first_line_names_the_mode_in_force(
    environment: dict[str, str],
    extra: tuple[str, ...],
    first_line: str,
    make_toy: Callable[..., Toy],
    start_runner: Callable[..., Runner],
) -> None:
    runner = start_runner(make_toy(), "--burst", *extra, environment=environment)

    assert runner.process.wait(30) == 0, runner.log
    assert runner.log.splitlines()[0].endswith(f" event_source {first_line}")
    serving = runner.lines("serving handle_a")
    assert len(serving) == 1 and ("mode aws" in serving[0]) == ("aws" in first_line)


def test_an_unknown_mode_stops_the_runner(
    make_toy: Callable[..., Toy], start_runner: Callable[..., Runner]
) -> None:
    runner = start_runner(make_toy(), "--burst", environment={"EVENT_SOURCE_MODE": "fast"})

    assert runner.process.wait(30) == 2
    assert "EVENT_SOURCE_MODE='fast': expected one of exact, aws" in runner.log


def test_a_handler_cannot_import_what_the_package_lacks(
    make_toy: Callable[..., Toy], start_runner: Callable[..., Runner], sqs: Any
) -> None:
    # requests is installed for the tests, but the toy has no requirements.txt.
    toy = make_toy()
    send(sqs, toy.queue_a, "lazy", **{"import": "requests"})

    runner = start_runner(toy, "--burst")

    assert runner.process.wait(30) == 0, runner.log
    (line,) = runner.lines("invoke function=toy-dev-handle_a")
    assert "outcome=failed" in line
    assert "ModuleNotFoundError: No module named 'requests'" in runner.log


def test_make_worker_honours_the_mode_variable(emulator: EmulatorHandle) -> None:
    # The project's own stage has no queues on this emulator: the worker names its mode,
    # then stops because the queues are missing (exit 2), which is all this needs.
    env = isolated_environment(EMULATOR_PORT=str(emulator.port))

    result = run_make(PROJECT_DIR, env, "worker", "EVENT_SOURCE_MODE=aws", check=False)

    assert result.returncode == 2, result.stdout + result.stderr
    first = (result.stdout + result.stderr).splitlines()[0]
    assert first.endswith(" event_source mode=aws pollers=5"), first


def test_services_pass_the_mode_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_SOURCE_MODE", "exact")
    assert Services().environment()["EVENT_SOURCE_MODE"] == "exact"  # the caller's, by default
    assert Services(event_source_mode="aws").environment()["EVENT_SOURCE_MODE"] == "aws"
