"""Disabling and enabling a mapping while the runner runs (``.mappings``): the local
analogue of UpdateEventSourceMapping's Enabled. Disabled, nothing is received: messages
wait in the queue and none is lost; enabled again, each is delivered once, in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.event_source import mappings
from tests.infra.event_source.harness import Runner, Toy, messages_in, send
from tests.infra.event_source.toy import STAGE
from tests.waiting import wait_for


def test_no_file_means_enabled_and_the_file_says_otherwise(tmp_path: Path) -> None:
    assert mappings.is_enabled(tmp_path, STAGE, "handle_a")
    mappings.set_enabled(tmp_path, STAGE, "handle_a", False)
    assert not mappings.is_enabled(tmp_path, STAGE, "handle_a")
    assert mappings.is_enabled(tmp_path, STAGE, "handle_b")  # per function
    assert mappings.is_enabled(tmp_path, "other", "handle_a")  # per stage
    mappings.set_enabled(tmp_path, STAGE, "handle_a", True)
    assert mappings.is_enabled(tmp_path, STAGE, "handle_a")


def test_no_runner_means_no_wait(tmp_path: Path) -> None:
    mappings.set_enabled(tmp_path, STAGE, "handle_a", False)
    assert mappings.wait_for_state(tmp_path, STAGE, "handle_a", mappings.DISABLED, 5) is None


def test_disabled_is_reported_once_every_poller_stopped_receiving(tmp_path: Path) -> None:
    gate = mappings.MappingGate(tmp_path, STAGE, "handle_a", pollers=2, recheck_seconds=0.01)
    stop = threading.Event()
    assert gate.wait_until_enabled(stop)  # enabled: at once
    assert mappings.reported_state(tmp_path, STAGE, "handle_a") == mappings.ENABLED
    mappings.set_enabled(tmp_path, STAGE, "handle_a", False)
    returned: list[bool] = []
    first = threading.Thread(target=lambda: returned.append(gate.wait_until_enabled(stop)))
    first.start()
    # One poller waits; the other is still "in a receive": not Disabled yet.
    wait_for(lambda: gate._waiting == 1, 5, "the first poller to wait")
    assert mappings.reported_state(tmp_path, STAGE, "handle_a") == mappings.ENABLED
    second = threading.Thread(target=lambda: returned.append(gate.wait_until_enabled(stop)))
    second.start()
    assert mappings.wait_for_state(tmp_path, STAGE, "handle_a", mappings.DISABLED, 5) is True
    assert returned == []  # neither may receive while disabled

    mappings.set_enabled(tmp_path, STAGE, "handle_a", True)
    first.join(5)
    second.join(5)

    assert returned == [True, True]
    assert mappings.reported_state(tmp_path, STAGE, "handle_a") == mappings.ENABLED


def test_a_disabled_gate_lets_a_stop_or_a_burst_end(tmp_path: Path) -> None:
    gate = mappings.MappingGate(tmp_path, STAGE, "handle_a", recheck_seconds=0.01)
    mappings.set_enabled(tmp_path, STAGE, "handle_a", False)
    assert gate.wait_until_enabled(threading.Event(), burst=True) is False
    stopped = threading.Event()
    stopped.set()
    assert gate.wait_until_enabled(stopped) is False


@pytest.mark.parametrize("mode", ["exact", "aws"])
def test_a_disabled_mapping_receives_nothing_and_loses_nothing(
    make_toy: Callable[..., Toy],
    start_runner: Callable[..., Runner],
    sqs: Any,
    mode: str,
) -> None:
    toy = make_toy()
    runner = start_runner(toy, "--mode", mode)
    send(sqs, toy.queue_a, "a0")
    wait_for(lambda: toy.tags_seen("handle_a") == ["a0"], 30, lambda: runner.log)

    mappings.set_enabled(toy.directory, STAGE, "handle_a", False)
    # Reported once no receive of handle_a is in flight (the 1 s long polls return).
    took = mappings.wait_for_state(toy.directory, STAGE, "handle_a", mappings.DISABLED, 30)
    assert took is True, runner.log
    for tag in ("a1", "a2", "a3"):
        send(sqs, toy.queue_a, tag)
    send(sqs, toy.queue_b, "b0")  # the other mapping runs on
    wait_for(lambda: toy.tags_seen("handle_b") == ["b0"], 30, lambda: runner.log)
    # Several of handle_a's re-reads later: nothing received, nothing in flight.
    assert toy.tags_seen("handle_a") == ["a0"]
    assert messages_in(sqs, toy.queue_a) == 3
    assert runner.lines("handle_a: event source disabled")

    mappings.set_enabled(toy.directory, STAGE, "handle_a", True)

    wait_for(lambda: len(toy.tags_seen("handle_a")) == 4, 30, lambda: runner.log)
    delivered = toy.deliveries("handle_a")
    assert sorted(tag for tag, _ in delivered) == ["a0", "a1", "a2", "a3"]
    assert {count for _, count in delivered} == {1}  # none was received while disabled
    assert mappings.reported_state(toy.directory, STAGE, "handle_a") == mappings.ENABLED
    wait_for(lambda: messages_in(sqs, toy.queue_a) == 0, 30, "queue A to drain")
