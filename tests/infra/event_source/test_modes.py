"""Unit tests for infra.event_source.modes: choosing the mode, and the throttle backoff."""

from __future__ import annotations

import itertools

import pytest

from infra.event_source.modes import (
    DEFAULT_MODE,
    DEFAULT_POLLERS,
    MODE_VARIABLE,
    Mode,
    ThrottleBackoff,
    mode_from_environment,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Mode.EXACT),
        ("", Mode.EXACT),
        ("exact", Mode.EXACT),
        ("aws", Mode.AWS),
        ("AWS", Mode.AWS),
    ],
)
def test_the_variable_selects_the_mode(value: str | None, expected: Mode) -> None:
    environ = {} if value is None else {MODE_VARIABLE: value}
    assert mode_from_environment(environ) is expected


def test_exact_stays_the_default_and_aws_starts_five_pollers() -> None:
    assert DEFAULT_MODE is Mode.EXACT
    assert DEFAULT_POLLERS == 5  # services-sqs-scaling: five concurrent batches at first


def test_an_unknown_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"EVENT_SOURCE_MODE='fast': expected one of exact, aws"):
        mode_from_environment({MODE_VARIABLE: "fast"})


def test_the_backoff_doubles_from_one_second_to_five_minutes() -> None:
    delays = list(itertools.islice(ThrottleBackoff().delays(), 12))
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_retries_stop_before_the_visibility_timeout() -> None:
    backoff = ThrottleBackoff()
    assert backoff.retry_offsets(8) == [1, 3, 7]  # the next, at 15 s, is past 8 s
    assert backoff.retry_offsets(7) == [1, 3]  # a retry due at the timeout is not made
    assert backoff.retry_offsets(1) == []
    # The project's queue (6 x 900 s): 1, 3, 7, ... then every 5 minutes up to 90 min.
    offsets = backoff.retry_offsets(5400)
    assert offsets[:3] == [1, 3, 7] and offsets[-1] < 5400 <= offsets[-1] + 300
    assert all(b - a <= 300 for a, b in itertools.pairwise(offsets))


def test_a_custom_curve() -> None:
    backoff = ThrottleBackoff(first=0.5, factor=3, maximum=2)
    assert list(itertools.islice(backoff.delays(), 4)) == [0.5, 1.5, 2, 2]
    assert backoff.retry_offsets(4) == [0.5, 2.0]  # 4.0 would be at the timeout
