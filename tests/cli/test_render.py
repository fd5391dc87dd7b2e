"""Durations, rates and the rate estimate behind `jobs watch`'s ETA."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs_cli import render
from jobs_cli.watch import RateEstimator


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-1, "0.0 s"), (0.44, "0.4 s"), (12.7, "12 s"), (65, "1 min 05 s"),
     (3725, "1 h 02 min"), (float("inf"), "-")],
)  # fmt: skip
def test_duration(seconds: float | None, text: str) -> None:
    assert render.duration(seconds) == text


@pytest.mark.parametrize(
    ("per_second", "text"),
    [(None, "-"), (12, "12 it/s"), (4_500, "4.5 k it/s"), (98_700_000, "98.7 M it/s"),
     (1.25e9, "1.2 G it/s")],
)  # fmt: skip
def test_rate(per_second: float | None, text: str) -> None:
    assert render.rate(per_second) == text


def test_timings_of_a_running_and_a_never_started_job() -> None:
    now = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    running = {"status": "running", "created_at": "2026-01-01T00:00:00.000Z",
               "started_at": "2026-01-01T00:00:04.000Z", "finished_at": None}  # fmt: skip
    assert render.timings(running, now) == (4.0, 6.0)
    cancelled = {"status": "cancelled", "created_at": "2026-01-01T00:00:00.000Z",
                 "started_at": None, "finished_at": "2026-01-01T00:00:02.500Z"}  # fmt: skip
    assert render.timings(cancelled, now) == (2.5, None)


def test_the_rate_comes_from_changes_seen_over_the_window() -> None:
    clock = [0.0]
    estimator = RateEstimator(lambda: clock[0], window=10)
    for t, done in [(0, 0), (1, 100), (1.5, 100), (2, 200)]:
        clock[0] = t
        estimator.observe(done)
    assert estimator.rate() == 100  # the unchanged reading at 1.5 s adds nothing
    clock[0] = 30
    estimator.observe(3000)  # samples older than the window go, but three always stay
    assert estimator.rate() == pytest.approx((3000 - 100) / (30 - 1))


def test_no_rate_before_three_changes() -> None:
    estimator = RateEstimator(lambda: 1.0)
    estimator.observe(5)
    estimator.observe(10)
    assert estimator.rate() is None
