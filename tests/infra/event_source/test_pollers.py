"""Integration tests for infra.event_source.pollers: ``EVENT_SOURCE_MODE=aws`` against a
real moto server and the toy project, checked against what AWS documents (see
infra/event_source/modes.py for the sources): pollers that receive regardless of
reserved concurrency, throttled batches retried with a growing backoff until their
visibility timeout, then dropped with their receive count raised; FIFO message groups
one batch at a time, in order, never throttled.

Each test that shows a throttling effect also runs, or states, its control: the same
scenario in ``exact`` mode, where nothing is ever received that cannot run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.infra.event_source.harness import Queue, Runner, Toy, messages_in, overlaps, send
from tests.waiting import wait_for

AWS = {"EVENT_SOURCE_MODE": "aws"}
EXACT = {"EVENT_SOURCE_MODE": "exact"}


def invocation_lines(runner: Runner) -> list[str]:
    return runner.lines("invoke function=toy-dev-handle_a")


def line_time(line: str) -> float:
    """The timestamp logging put in front of a runner line, in seconds."""
    stamp = line.split(" event_source ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def lines_about(runner: Runner, prefix: str, message_id: str) -> list[str]:
    return [
        line
        for line in runner.log.splitlines()
        if f" event_source {prefix} " in line and f"ids={message_id} " in line
    ]


@pytest.mark.parametrize("mode", ["aws", "exact"])
def test_throttled_messages_come_back_with_their_receive_count_raised(
    mode: str,
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    # Reserved concurrency 1, three messages of 1.2 s each, a visibility timeout of 2 s.
    toy = make_toy(queue_a=make_queue(visibility=2), lambda_timeout=2)
    for n in range(3):
        send(sqs, toy.queue_a, f"m{n}", sleep=1.2)

    runner = start_runner(toy, environment={"EVENT_SOURCE_MODE": mode})
    wait_for(lambda: len(invocation_lines(runner)) == 3, 30, lambda: runner.log)

    assert sorted(tag for tag, _ in toy.deliveries("handle_a")) == ["m0", "m1", "m2"]
    assert all("outcome=succeeded" in line for line in invocation_lines(runner))
    counts = [count for _, count in toy.deliveries("handle_a")]
    if mode == "aws":
        # Five pollers took all three at once; two were throttled and dropped at the
        # visibility timeout, so they ran on a later receive although nothing failed.
        assert max(counts) >= 2
        assert runner.lines("throttle function=toy-dev-handle_a")
        assert runner.lines("release function=toy-dev-handle_a")
    else:  # the control: nothing is received that cannot run at once
        assert counts == [1, 1, 1]
        assert not runner.lines("throttle") and not runner.lines("release")
    assert messages_in(sqs, toy.queue_a) == 0


def test_a_message_that_never_ran_reaches_the_dead_letter_queue(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    # A standard queue with a low maxReceiveCount behind reserved concurrency 1: the
    # failure mode the Knowledge Center warns of ("lambda-sqs-scaling").
    # One runs (1.2 s, plus its cold start) while the others are throttled at once and
    # again 1 s later; no retry is left before 3 s, so they are dropped and their next
    # receive (count 2 > maxReceiveCount 1) moves them to the DLQ.
    queue = make_queue(visibility=3, max_receive_count=1)
    toy = make_toy(queue_a=queue, lambda_timeout=3)
    tags = [f"m{n}" for n in range(4)]
    for tag in tags:
        send(sqs, queue, tag, sleep=1.2)

    runner = start_runner(toy, environment=AWS)

    def dead_lettered() -> list[str]:
        response = sqs.receive_message(
            QueueUrl=queue.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60
        )
        return [json.loads(m["Body"])["tag"] for m in response.get("Messages", [])]

    dead: list[str] = []

    def all_accounted_for() -> bool:
        dead.extend(dead_lettered())
        ran = toy.deliveries("handle_a")
        return messages_in(sqs, queue) == 0 and len(dead) + len(ran) >= len(tags)

    wait_for(all_accounted_for, 30, lambda: runner.log)
    ran = [tag for tag, _ in toy.deliveries("handle_a")]
    assert dead and not set(dead) & set(ran)  # dead-lettered without ever running
    assert sorted(dead + ran) == tags
    assert all("outcome=succeeded" in line for line in invocation_lines(runner))  # no failure


@pytest.mark.parametrize(("groups", "reserved"), [(1, 1), (2, 2)])
def test_fifo_groups_are_never_throttled_and_keep_their_order(
    groups: int,
    reserved: int,
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    queue = make_queue(visibility=5, fifo=True)
    toy = make_toy(queue_a=queue, reserved_concurrency=reserved)
    sent = [f"g{g}-{n}" for n in range(4) for g in range(groups)]
    for tag in sent:
        send(sqs, queue, tag, group=tag.split("-")[0], sleep=0.3)

    runner = start_runner(toy, environment=AWS)
    wait_for(lambda: len(invocation_lines(runner)) == len(sent), 30, lambda: runner.log)

    deliveries = toy.deliveries("handle_a")
    assert [count for _, count in deliveries] == [1] * len(sent)  # each received once
    assert not runner.lines("throttle") and not runner.lines("release")
    for g in range(groups):  # each group in the order it was sent, one batch at a time
        group = [tag for tag, _ in deliveries if tag.startswith(f"g{g}-")]
        assert group == [tag for tag in sent if tag.startswith(f"g{g}-")]
        assert overlaps(spans_of(toy, f"g{g}-")) == 1
    if groups == 2:  # while the two groups did run side by side
        assert overlaps(spans_of(toy, "g")) == 2
    assert "FIFO (one batch in flight per message group), 5 pollers" in runner.log


def spans_of(toy: Toy, prefix: str) -> list[tuple[float, float]]:
    """(start, end) of each invocation of handle_a whose record's tag starts with prefix."""
    spans, open_by_pid = [], {}
    for record in toy.read_records():
        if record["function"] != "handle_a":
            continue
        if record["phase"] == "start":
            (delivered,) = record["event"]["Records"]
            open_by_pid[record["pid"]] = (json.loads(delivered["body"])["tag"], record["time"])
        else:
            tag, started = open_by_pid.pop(record["pid"])
            if tag.startswith(prefix):
                spans.append((started, record["time"]))
    return spans


def test_a_throttled_batch_backs_off_then_is_dropped_at_its_visibility_timeout(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    # Retries at 1, 3 and 7 s; the next (15 s) would be past the visibility timeout. The
    # blocker runs past the 7 s retry and ends well before the waiter's message comes back
    # at 12 s (a run ending 0.1 s before it left no room for a busy machine's settling).
    visibility = 12
    toy = make_toy(
        queue_a=make_queue(visibility=visibility),
        queue_b=make_queue(visibility=visibility),
        lambda_timeout=visibility,
    )
    send(sqs, toy.queue_a, "blocker", sleep=visibility - 2.5)
    runner = start_runner(toy, environment=AWS)
    wait_for(lambda: toy.starts("handle_a"), 15, lambda: runner.log)
    waiter = send(sqs, toy.queue_a, "waiter")

    wait_for(lambda: "waiter" in toy.tags_seen("handle_a"), 30, lambda: runner.log)

    throttles = lines_about(runner, "throttle", waiter)
    notes = [line.rsplit("(", 1)[1].rstrip(")") for line in throttles]
    assert notes == ["retry in 1 s", "retry in 2 s", "retry in 4 s",
                     "no retry before the visibility timeout"]  # fmt: skip
    assert all("receive_counts=1 " in line for line in throttles)
    (release,) = lines_about(runner, "release", waiter)
    assert f"visibility timeout ({visibility} s) reached" in release
    # Lower bounds only (a loaded machine is only ever late): the waits grew as
    # announced, and the batch was held until its visibility timeout.
    times = [line_time(line) for line in [*throttles, release]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    slack = 0.05  # the log's millisecond timestamps against the runner's monotonic waits
    assert all(gap >= nominal - slack for gap, nominal in zip(gaps, [1, 2, 4], strict=False))
    assert times[-1] - times[0] >= visibility - 0.5
    # Dropped, it came back with its receive count raised, and ran.
    assert toy.deliveries("handle_a")[-1] == ("waiter", 2)
    assert all("outcome=succeeded" in line for line in invocation_lines(runner))
