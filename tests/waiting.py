"""Waiting for a condition in tests: poll with a deadline, never a blind sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float, what: str | Callable[[], str]) -> Any:
    """Poll ``condition`` every 50 ms until it returns something truthy, and return that.

    Fails after ``timeout`` seconds naming ``what`` (a callable is evaluated only then,
    e.g. to show a log as it is at the end).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {described}")
        time.sleep(0.05)
