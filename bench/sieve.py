"""The bare sieve, in a plain process: what countPrimes' speed in the worker is held
against (figure 4's second line).

    python -m bench.sieve BELOW    # prints the seconds the sieve took, then the count

The same segmented sieve as ``chalicelib.kinds.count_primes`` (its segment function and
segment size), without the job around it: no Context, no reports, no checkpoints.
"""

from __future__ import annotations

import math
import sys
import time

from chalicelib.kinds.count_primes import SEGMENT, count_segment, odd_primes_upto


def count(below: int) -> int:
    """The primes < below."""
    limit = below - 1
    if limit < 2:
        return 0
    base = odd_primes_upto(math.isqrt(limit))
    total, low = 1, 0  # 1: the prime 2
    while low <= limit:
        high = min(low + SEGMENT, limit + 1)
        total += count_segment(low, high, base)
        low = high
    return total


if __name__ == "__main__":
    start = time.perf_counter()
    found = count(int(sys.argv[1]))
    print(f"{time.perf_counter() - start:.6f}\n{found}", flush=True)
