"""Job kinds: name -> function. Adding a kind is one function and one registry line.

A kind is called as ``fn(n, ctx)`` and returns an int result. It must call
``ctx.report(done)`` now and then (cheap: the worker decides when to write), so progress
can be shown. ``done`` runs from 0 to ``n``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Iterations between progress reports: about 40 ms of counting, so the report's clock
# check costs nothing measurable and progress is never stale by more than that.
CHUNK = 1 << 22


@dataclass(frozen=True)
class JobContext:
    """What a running job may use: where to report how far it got."""

    report: Callable[[int], None]


JobFunction = Callable[[int, JobContext], int]


def heavy_load(n: int, ctx: JobContext) -> int:
    """Count from 0 to n in a plain Python loop; return the count (== n).

    The loop runs in chunks so it can report between them; inside a chunk it is the bare
    ``for i in range(...)`` loop of the classic blocking example.
    """
    count = 0
    while count < n:
        stop = min(count + CHUNK, n)
        for i in range(count, stop):  # noqa: B007 - counting is the work
            pass
        count = i + 1
        ctx.report(count)
    return count


KINDS: dict[str, JobFunction] = {
    "heavyLoad": heavy_load,
}
