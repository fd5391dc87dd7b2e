"""heavyLoad: count from 0 to n in a plain Python loop (the classic blocking example)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chalicelib.config import Settings
from chalicelib.kinds import Context, Kind, param

# Iterations between reports: about 40 ms of counting, so a report's clock check costs
# nothing measurable, and progress or a cancellation is never later than that.
CHUNK = 1 << 22


@dataclass(frozen=True)
class Input:
    n: int = param(
        minimum=0,
        maximum=lambda settings: settings.max_n,
        default=lambda settings: settings.default_n,
        description="How far to count.",
    )


def heavy_load(input: Input, ctx: Context) -> int:
    """Count from 0 to n; return the count (== n). The state is the count reached.

    The loop runs in chunks so it can report (and checkpoint) between them; inside a
    chunk it is the bare ``for i in range(...)`` loop of the classic blocking example.
    """
    n = input.n
    count: int = ctx.state or 0
    while count < n:
        stop = min(count + CHUNK, n)
        for i in range(count, stop):  # noqa: B007 - counting is the work
            pass
        count = i + 1
        ctx.report(count / n, count)
    return count


def estimate_seconds(input: Input, settings: Settings) -> float:
    return math.ceil(input.n / settings.loop_rate_per_second)


KIND = Kind(
    name="heavyLoad",
    description="Count from 0 to n in a Python loop: pure CPU, about 1e8 a second.",
    input=Input,
    run=heavy_load,
    result=int,
    estimate_seconds=estimate_seconds,
)
