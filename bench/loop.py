"""The bare loop, in a plain process: what the worker's loop speed is held against.

    python -m bench.loop N       # prints the seconds `for i in range(N): pass` took

The loop runs inside a function, where ``i`` is a local, as in ``chalicelib.kinds``
(a module-level loop is about half as fast in CPython 3.11).
"""

from __future__ import annotations

import sys
import time


def count(n: int) -> int:
    """``for i in range(n): pass``, the classic example's loop; returns n."""
    for i in range(n):  # noqa: B007 - counting is the work
        pass
    return n


def timed(n: int) -> float:
    start = time.perf_counter()
    count(n)
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"{timed(int(sys.argv[1])):.6f}", flush=True)
