"""Samples, percentiles and the comparisons the report is made of.

Every figure of the report is a ``Comparison``: a measurement, the measurement it is held
against (taken side by side in the same run), their ratio, and the target, if any, that
the ratio must meet.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks; NaN if empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def p50(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def mean(samples: Sequence[float]) -> float:
    return statistics.fmean(samples) if samples else math.nan


@dataclass
class Series:
    """Raw samples of one measurement, in ``unit``."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def extend(self, values: Sequence[float]) -> None:
        self.samples.extend(values)

    @property
    def count(self) -> int:
        return len(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "count": self.count, "samples": self.samples}


@dataclass(frozen=True)
class Target:
    """What a ratio must be: at most ``high``, at least ``low``, or both."""

    low: float | None = None
    high: float | None = None

    def met(self, ratio: float) -> bool:
        if math.isnan(ratio):
            return False
        return (self.low is None or ratio >= self.low) and (self.high is None or ratio <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}x to {self.high:g}x"
        if self.high is not None:
            return f"≤ {self.high:g}x"
        return f"≥ {self.low:g}x"


@dataclass(frozen=True)
class Comparison:
    """One line of the report's table."""

    figure: str  # "1", "2", ... as the issue numbers them
    label: str  # what is measured, against what
    measured: float
    baseline: float
    unit: str
    measured_name: str  # short names of the two sides, for the table
    baseline_name: str
    samples: str  # how many samples each side has, e.g. "600 / 700"
    target: Target | None = None
    # An absolute bound on ``measured`` (queue-to-start: 100 ms), checked with the ratio.
    absolute_limit: float | None = None
    note: str = ""
    # Ratios of samples taken as pairs, one pair per round: when given, the figure's ratio
    # is their median, which a machine whose speed drifts between rounds cannot skew the
    # way it skews a ratio of two medians.
    paired_ratios: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        if self.paired_ratios:
            return p50(self.paired_ratios)
        # A ratio of spans means nothing once either is negative (a job already running
        # when the client read its 202) or zero.
        if not (self.baseline > 0 and self.measured >= 0):
            return math.nan
        return self.measured / self.baseline

    @property
    def met(self) -> bool | None:
        """True/False against the target (and the absolute limit); None if there is none."""
        if self.target is None and self.absolute_limit is None:
            return None
        ok = True
        if self.target is not None:
            ok = self.target.met(self.ratio)
        if self.absolute_limit is not None:
            ok = ok and self.measured <= self.absolute_limit
        return ok

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.describe() if self.target else None
        data["paired_ratios"] = list(self.paired_ratios)
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


NOT_MEASURED = "not measured: it failed"  # a failed figure's title


@dataclass
class Figure:
    """One numbered figure of the issue: its comparisons, raw samples and notes."""

    number: str
    title: str
    comparisons: list[Comparison] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    # Facts measured alongside (depths, breakdowns), as Markdown lines.
    notes: list[str] = field(default_factory=list)
    # Why the figure could not be measured ("" when it was): it then has nothing else.
    error: str = ""

    @classmethod
    def failed(cls, number: str, error: str) -> Figure:
        """A figure whose measurement raised ``error`` (its type and message)."""
        return cls(number, NOT_MEASURED, error=error)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "number": self.number,
            "title": self.title,
            "comparisons": [c.to_json() for c in self.comparisons],
            "series": {s.name: s.to_json() for s in self.series},
            "notes": self.notes,
        }
        if self.error:
            data["error"] = self.error
        return data


def ms(seconds: Sequence[float]) -> list[float]:
    """Seconds to milliseconds, rounded to the microsecond (the JSON stays small)."""
    return [round(s * 1000, 3) for s in seconds]
