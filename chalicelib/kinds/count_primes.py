"""countPrimes: how many primes are below a bound, by a segmented sieve of Eratosthenes.

The sieve keeps only odd numbers, one byte each, and crosses out multiples by bytearray
slice assignment (a C loop): pure CPU, like heavyLoad, and checkable against published
values of pi(x). It checkpoints after every segment (where the next segment starts, and
the count so far), so a resumed run continues exactly where the last checkpoint was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chalicelib.config import Settings
from chalicelib.kinds import Context, Kind, param

# Numbers per segment (even): a 2 MiB bytearray of odd numbers, about a tenth of a second
# of sieving. Each segment ends with a report, which is what renews the run's lease: far
# more often than the lease needs (JOBS_STALE_AFTER_SECONDS) even on a loaded machine.
# Larger segments sieve ~10 % faster near 10^10 (fewer passes over the base primes).
SEGMENT = 1 << 22
# Numbers sieved per second near the top of the range (one core, CPython 3.11), for
# Retry-After; measured by bench's sieve line.
SIEVE_RATE_PER_SECOND = 40_000_000


@dataclass(frozen=True)
class Input:
    # Capped by the stage's JOBS_MAX_N (default 10^10, a few minutes of sieving), as
    # heavyLoad's n is: a stage that caps the size of its jobs caps both.
    below: int = param(
        minimum=2,
        maximum=lambda settings: settings.max_n,
        description="Count the primes smaller than this.",
    )


@dataclass(frozen=True)
class Result:
    count: int


def count_primes(input: Input, ctx: Context) -> Result:
    """The number of primes < ``input.below``. The state is ``{"low", "count"}``: the
    start of the next segment (even) and the primes counted below it."""
    limit = input.below - 1  # count the primes <= limit
    if limit < 2:
        return Result(count=0)
    base = odd_primes_upto(math.isqrt(limit))
    state: dict[str, Any] | None = ctx.state
    low, count = (state["low"], state["count"]) if state else (0, 1)  # 1: the prime 2
    while low <= limit:
        high = min(low + SEGMENT, limit + 1)
        count += count_segment(low, high, base)
        low = high
        ctx.report(high / (limit + 1), {"low": low, "count": count})
    return Result(count=count)


def count_segment(low: int, high: int, base: list[int]) -> int:
    """The primes among the odd numbers in [low, high), ``low`` even, given the odd
    primes up to sqrt(high) (those above it are ignored)."""
    size = (high - low) // 2  # index i is the odd number low + 2i + 1
    segment = bytearray(b"\x01") * size
    if low == 0:
        segment[0] = 0  # 1 is not a prime
    zeros = memoryview(bytes(size // 3 + 1))  # the most multiples of any odd prime >= 3
    for p in base:
        square = p * p
        if square >= high:
            break
        start = max(square, (low + p - 1) // p * p)
        if start % 2 == 0:
            start += p  # odd multiples only: the even ones are not in the segment
        first = (start - low - 1) // 2
        if first < size:
            # Consecutive odd multiples of p are 2p apart: p apart in the index.
            segment[first::p] = zeros[: (size - 1 - first) // p + 1]
    return segment.count(1)


def odd_primes_upto(limit: int) -> list[int]:
    """The odd primes <= limit (a plain sieve: limit is the square root of the bound)."""
    if limit < 3:
        return []
    sieve = bytearray(b"\x01") * (limit + 1)
    for p in range(3, math.isqrt(limit) + 1, 2):
        if sieve[p]:
            sieve[p * p :: 2 * p] = bytes(len(range(p * p, limit + 1, 2 * p)))
    return [p for p in range(3, limit + 1, 2) if sieve[p]]


def estimate_seconds(input: Input, settings: Settings) -> float:
    return math.ceil(input.below / SIEVE_RATE_PER_SECOND)


KIND = Kind(
    name="countPrimes",
    description="Count the primes below a bound with a segmented sieve: pure CPU.",
    input=Input,
    run=count_primes,
    result=Result,
    estimate_seconds=estimate_seconds,
)
