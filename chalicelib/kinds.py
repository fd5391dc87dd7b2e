"""Job kinds: name -> function. Adding a kind is one function and one registry line.

A kind is called as ``fn(n, ctx)`` and returns an int result. It starts from
``ctx.start`` (0, or the checkpoint a previous run saved) and calls ``ctx.report(done)``
now and then with how far it got, ``done`` running up to ``n``. Reporting is cheap (the
worker decides when to write a checkpoint) and is where a run is stopped: report raises
to end the run when the job is cancelled, its lease is lost, or the invocation is about to
time out. Those exceptions derive from BaseException so that a kind's own
``except Exception`` cannot swallow them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Iterations between reports: about 40 ms of counting, so a report's clock check costs
# nothing measurable, and progress or a cancellation is never later than that.
CHUNK = 1 << 22


@dataclass(frozen=True)
class JobContext:
    """What a running job may use: where to resume, and where to report progress."""

    start: int
    report: Callable[[int], None]


JobFunction = Callable[[int, JobContext], int]


def heavy_load(n: int, ctx: JobContext) -> int:
    """Count from 0 to n in a plain Python loop; return the count (== n).

    The loop runs in chunks so it can report (and checkpoint) between them; inside a
    chunk it is the bare ``for i in range(...)`` loop of the classic blocking example.
    """
    count = ctx.start
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
