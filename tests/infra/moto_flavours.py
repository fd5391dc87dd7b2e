"""Running the same test on moto as released ("stock") and with infra.moto_speedups
("fast"), and a clock for moto that only moves when told to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sqs import models as sqs_models

from infra import moto_speedups

FLAVOURS = ("stock", "fast")
REGION = "us-east-1"

# Clients made inside the current moto_as block (making one costs tens of milliseconds).
_clients: dict[str, Any] = {}


@contextmanager
def moto_as(flavour: str) -> Iterator[None]:
    """In-process moto (``mock_aws``) as released or with the speed-ups; reverted after."""
    assert flavour in FLAVOURS
    if flavour == "fast":
        moto_speedups.apply()
    _clients.clear()
    try:
        with mock_aws():
            yield
    finally:
        _clients.clear()
        moto_speedups.revert()


def client(service: str) -> Any:
    """A boto3 client for ``service`` on the in-process moto of the current block."""
    if service not in _clients:
        _clients[service] = boto3.client(service, region_name=REGION)
    return _clients[service]


class FakeClock:
    """moto's SQS clock, frozen until ``advance``: visibility timeouts, delays, retention
    and the 5-minute deduplication window without waiting for them."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def unix_time(self, dt: datetime | None = None) -> float:
        return self.now

    def unix_time_millis(self, dt: datetime | None = None) -> float:
        return self.now * 1000.0


def freeze_sqs_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the clock moto's SQS models read (and so the speed-ups read too).

    With a frozen clock a long poll would never end: tests using it receive with
    ``WaitTimeSeconds=0``.
    """
    clock = FakeClock()
    monkeypatch.setattr(sqs_models, "unix_time", clock.unix_time)
    monkeypatch.setattr(sqs_models, "unix_time_millis", clock.unix_time_millis)
    return clock
