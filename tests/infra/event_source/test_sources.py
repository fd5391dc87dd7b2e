"""Unit tests for infra.event_source.sources: gathering a batch as Lambda's poller does.

The sources' behaviour against real queues is tested through the runner (test_runner.py).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from infra.event_source import collect_batch


class FakeQueue:
    """receive() answers from a script; the clock advances by each call's wait."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, int]] = []
        self.now = 0.0

    def receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        self.calls.append((max_messages, wait_seconds))
        count = min(self.answers.pop(0) if self.answers else 0, max_messages)
        if not count:
            self.now += wait_seconds  # an empty long poll waits it out
        return [{"MessageId": str(uuid.uuid4())} for _ in range(count)]

    def clock(self) -> float:
        return self.now


def test_without_window_the_first_answer_is_the_batch() -> None:
    queue = FakeQueue([3, 5])
    batch = collect_batch(queue.receive, 10, 0, 20, queue.clock)
    assert len(batch) == 3
    assert queue.calls == [(10, 20)]


def test_window_collects_until_the_batch_is_full() -> None:
    queue = FakeQueue([4, 4, 4])
    batch = collect_batch(queue.receive, 10, 5, 20, queue.clock)
    assert len(batch) == 10
    assert queue.calls == [(10, 20), (6, 5), (2, 5)]  # never asks for more than is missing


def test_window_stops_collecting_when_it_elapses() -> None:
    queue = FakeQueue([2])
    batch = collect_batch(queue.receive, 10, 3, 20, queue.clock)
    assert len(batch) == 2
    assert queue.calls == [(10, 20), (8, 3)]


def test_window_stops_collecting_when_the_runner_stops() -> None:
    queue = FakeQueue([2, 2, 2])
    stop = threading.Event()

    def receive(count: int, wait_seconds: int) -> list[dict[str, Any]]:
        stop.set()  # the runner is told to stop while the first receive is open
        return queue.receive(count, wait_seconds)

    batch = collect_batch(receive, 10, 5, 20, queue.clock, stop=stop)
    # What the open receive returned is the batch (the runner then releases it).
    assert len(batch) == 2
    assert queue.calls == [(10, 20)]


def test_no_receive_asks_for_more_than_ten() -> None:
    queue = FakeQueue([10, 10, 10])
    batch = collect_batch(queue.receive, 25, 5, 20, queue.clock)
    assert len(batch) == 25
    assert [c[0] for c in queue.calls] == [10, 10, 5]


def test_an_empty_poll_is_an_empty_batch() -> None:
    queue = FakeQueue([0])
    assert collect_batch(queue.receive, 10, 5, 20, queue.clock) == []
