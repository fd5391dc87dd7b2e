"""Stopping the runner never strands a message it did not invoke.

On SIGTERM or SIGINT the runner lets its open long polls finish and makes whatever they
returned visible again, as it does with throttled batches it holds (``aws`` mode); after
SIGKILL the next runner takes back what the dead one's long poll took, through the FIFO
queue's ReceiveRequestAttemptId (``infra/event_source/receives.py``). A message handed to
an invocation is left alone in both cases, as Lambda leaves it. Observed from outside, on
a moto server: the queue's counts, the toy's record file, the runner's log and /proc.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.event_source.harness import Queue, Runner, Toy, queue_attribute, send
from tests.infra.event_source.toy import STAGE
from tests.processes import child_pids, is_running
from tests.waiting import wait_for

# Long enough that a message hidden by a receive for nobody cannot come back by itself
# while a test waits.
VISIBILITY = 120
# The runners' long polls: long enough that the message a test sends right after the poll
# opened arrives while it is still open (each test then checks that it took it), short
# enough that the other function's poll, which gets nothing, ends soon after the signal
# (the runner waits for it) and that the next runner's wait for a dead one's poll to end
# is seconds. SQS allows up to 20 s; nothing here depends on the length.
POLL_SECONDS = "6"


def journal(toy: Toy, function: str = "handle_a") -> Path:
    """Where the runner journals the receives in flight of ``function``."""
    return toy.directory / ".chalice" / "event-sources" / STAGE / f"{function}.receives"


def open_receives(toy: Toy) -> int:
    return len(list(journal(toy).glob("*.json")))


def visible(sqs: Any, queue: Queue) -> int:
    return int(queue_attribute(sqs, queue.url, "ApproximateNumberOfMessages"))


def hidden(sqs: Any, queue: Queue) -> int:
    return int(queue_attribute(sqs, queue.url, "ApproximateNumberOfMessagesNotVisible"))


@pytest.mark.parametrize(("mode", "pollers"), [("exact", 1), ("aws", 2)])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_what_an_open_long_poll_takes_after_a_signal_is_visible_again_at_exit(
    mode: str,
    pollers: int,
    signum: int,
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    queue = make_queue(visibility=VISIBILITY, fifo=True)
    toy = make_toy(queue_a=queue, queue_b=make_queue(visibility=VISIBILITY, fifo=True))
    runner = start_runner(
        toy,
        "--poll-seconds",
        POLL_SECONDS,
        "--pollers",
        str(pollers),
        environment={"EVENT_SOURCE_MODE": mode},
    )
    wait_for(lambda: open_receives(toy) == pollers, 20, "the long polls to open")

    runner.process.send_signal(signum)
    send(sqs, queue, "sent-after-the-signal")  # an open long poll takes it

    assert runner.process.wait(30) == 0
    assert visible(sqs, queue) == 1 and hidden(sqs, queue) == 0
    assert toy.starts("handle_a") == []
    (line,) = runner.lines("release function=toy-dev-handle_a records=1")
    assert "shutdown: never invoked, visible again" in line
    assert open_receives(toy) == 0


def test_throttled_batches_are_released_at_a_signal_and_the_invocation_is_left_alone(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    queue = make_queue(visibility=60)
    toy = make_toy(queue_a=queue, queue_b=make_queue(visibility=60), lambda_timeout=30)
    send(sqs, queue, "long", sleep=30)
    runner = start_runner(toy, "--pollers", "3", environment={"EVENT_SOURCE_MODE": "aws"})
    wait_for(lambda: toy.starts("handle_a"), 15, "the long invocation to start")
    send(sqs, queue, "t1")
    send(sqs, queue, "t2")
    wait_for(
        lambda: len(runner.lines("throttle function=toy-dev-handle_a")) >= 2,
        15,
        "both batches to be throttled",
    )

    runner.process.send_signal(signal.SIGTERM)

    assert runner.process.wait(15) == 0
    # The throttled batches never ran: visible again at once. The invocation's message is
    # still in flight, as Lambda leaves a message whose invocation was interrupted.
    assert visible(sqs, queue) == 2 and hidden(sqs, queue) == 1
    assert toy.tags_seen("handle_a") == ["long"]
    assert len(runner.lines("release function=toy-dev-handle_a records=1")) == 2


def test_after_sigkill_the_next_runner_takes_back_what_the_dead_ones_long_poll_took(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    queue = make_queue(visibility=VISIBILITY, fifo=True)
    toy = make_toy(queue_a=queue, queue_b=make_queue(visibility=VISIBILITY, fifo=True))
    dead = start_runner(toy, "--poll-seconds", POLL_SECONDS)
    wait_for(lambda: open_receives(toy) == 1, 20, "the long poll to open")
    # The entry is written just before the request leaves, and nothing outside shows when
    # the emulator has it: give it a moment (the poll then stays open for the rest of its
    # POLL_SECONDS).
    time.sleep(1)
    dead.process.kill()
    dead.process.wait()
    send(sqs, queue, "first")
    send(sqs, queue, "second")
    # The dead runner's long poll, still open in the emulator, took the first for nobody;
    # the second waits behind it in its message group.
    wait_for(lambda: hidden(sqs, queue) == 1, 10, "the orphaned long poll to take it")

    started = time.monotonic()
    runner = start_runner(toy, "--poll-seconds", POLL_SECONDS)
    wait_for(lambda: len(toy.starts("handle_a")) == 2, 60, "both messages to run")

    # Within the long poll and a margin, far below the visibility timeout.
    assert time.monotonic() - started < VISIBILITY / 2
    assert toy.tags_seen("handle_a") == ["first", "second"]
    (line,) = runner.lines("recover function=toy-dev-handle_a records=1")
    assert f"stopped runner pid {dead.process.pid}" in line


def test_an_instance_busy_when_its_runner_is_killed_exits_by_itself(
    make_toy: Callable[..., Toy],
    make_queue: Callable[..., Queue],
    start_runner: Callable[..., Runner],
    sqs: Any,
) -> None:
    queue = make_queue(visibility=60)
    toy = make_toy(queue_a=queue, queue_b=make_queue(visibility=60), lambda_timeout=30)
    send(sqs, queue, "long", sleep=30)
    runner = start_runner(toy)
    (busy,) = wait_for(lambda: toy.starts("handle_a"), 15, "the invocation to start")
    assert busy["pid"] in child_pids(runner.process.pid)

    runner.process.kill()
    runner.process.wait()

    # Its instance notices it was orphaned (bootstrap.py) and exits, long before its
    # handler's 30 s are over: no execution environment outlives its runner.
    wait_for(lambda: not is_running(busy["pid"]), 10, "the orphaned instance to exit")
    assert hidden(sqs, queue) == 1  # the invocation's message is left to its timeout
