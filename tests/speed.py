"""This machine's counting speed, measured once at the start of the run, so that tests
size "a few seconds of work" from what the machine does now (busy or idle), not from an
assumed speed (100 M iterations/s was once assumed where a loaded run measured about
43 M)."""

from __future__ import annotations

import functools
import time

# Long enough to time reliably, short enough to be unnoticed at collection.
_SAMPLE_SECONDS = 0.3


@functools.cache
def iterations_per_second() -> int:
    """heavyLoad's bare loop (``for i in range(k): pass``), iterations per second, rounded
    to a million (so results read well), at least one million."""
    k, elapsed = 1 << 16, 0.0
    while elapsed < _SAMPLE_SECONDS:
        k *= 2
        start = time.perf_counter()
        for _ in range(k):
            pass
        elapsed = time.perf_counter() - start
    return max(1, round(k / elapsed / 1e6)) * 1_000_000
