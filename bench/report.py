"""Writes a run's results: BENCHMARKS.md (table, chart, notes), the chart as PNG, the raw
samples as JSON and a summary of them.

The raw samples (``bench/results/benchmarks.json``, tens of thousands of lines that change
with every run) are git-ignored, so they stay out of reviewed diffs and of the history;
the committed summary (``benchmarks-summary.json``: per-series counts and percentiles,
every comparison, the raw file's SHA-256) and BENCHMARKS.md say what they held. A raw
file is enough to write everything again::

    python -m bench.report [--raw bench/results/benchmarks.json] [--out DIR]

re-renders BENCHMARKS.md, the chart and the summary from it, without measuring anything
(``make bench`` measures afresh).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from bench import growth
from bench.findings import FINDINGS
from bench.machine import Machine
from bench.stats import Comparison, Figure, Series, Target, percentile
from bench.texts import METHOD, ON_AWS, raw_samples

CHART_NAME = "benchmarks.png"
JSON_NAME = "benchmarks.json"  # the raw samples: git-ignored (see .gitignore)
SUMMARY_NAME = "benchmarks-summary.json"  # committed
# What the summary gives for each series (besides its unit).
SUMMARY_PERCENTILES = (50, 90, 99)
SUMMARY_STATISTICS = ("count", "min", *(f"p{q}" for q in SUMMARY_PERCENTILES), "max", "mean")
# Figures with a chart of their own, beside the main one: number -> (file, drawer).
FIGURE_CHARTS: dict[str, tuple[str, Callable[[Figure, Path], None]]] = {
    growth.NUMBER: (growth.CHART_NAME, growth.draw_chart),
}


@dataclass(frozen=True)
class Run:
    machine: Machine
    figures: list[Figure]
    smoke: bool
    seconds: float  # how long the whole run took
    load_at_end: float  # the 1-minute load average as the run ended
    sizes: dict[str, Any]


def write(run: Run, markdown_path: Path, results_dir: Path) -> None:
    """Write BENCHMARKS.md at ``markdown_path``; the chart, raw samples and summary in
    ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    chart_path = results_dir / CHART_NAME
    json_path = results_dir / JSON_NAME
    summary_path = results_dir / SUMMARY_NAME
    draw_chart(run.figures, chart_path)
    for figure in run.figures:
        if figure.number in FIGURE_CHARTS and not figure.error:
            name, draw = FIGURE_CHARTS[figure.number]
            draw(figure, results_dir / name)
    raw = json.dumps(to_json(run), indent=1, allow_nan=True) + "\n"
    json_path.write_text(raw)
    digest = hashlib.sha256(raw.encode()).hexdigest()
    summary_text = json.dumps(summary(run, digest), indent=1, allow_nan=True, ensure_ascii=False)
    summary_path.write_text(summary_text + "\n", encoding="utf-8")
    base = markdown_path.parent
    markdown_path.write_text(
        render(
            run,
            _relative(chart_path, base),
            raw_samples(
                _relative(json_path, base),
                _relative(summary_path, base),
                digest,
                ", ".join(SUMMARY_STATISTICS),
            ),
        )
    )


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def to_json(run: Run) -> dict[str, Any]:
    """The raw file: everything measured, every sample."""
    return {
        "machine": run.machine.to_json(),
        "smoke": run.smoke,
        "seconds": round(run.seconds, 1),
        "load_at_end": run.load_at_end,
        "sizes": run.sizes,
        "figures": [f.to_json() for f in run.figures],
    }


def summary(run: Run, raw_sha256: str) -> dict[str, Any]:
    """The committed summary: the raw file without its samples, each series reduced to its
    count, extremes, mean and percentiles, and the raw file's SHA-256."""
    data = to_json(run)
    data["raw"] = {"file": JSON_NAME, "sha256": raw_sha256}
    for figure, raw_figure in zip(run.figures, data["figures"], strict=True):
        raw_figure["series"] = {s.name: _series_summary(s) for s in figure.series}
    return data


def _series_summary(series: Series) -> dict[str, Any]:
    values = series.samples
    stats: dict[str, Any] = {"unit": series.unit, "count": series.count}
    if values:
        stats["min"] = _rounded(min(values))
        stats |= {f"p{q}": _rounded(percentile(values, q)) for q in SUMMARY_PERCENTILES}
        stats["max"] = _rounded(max(values))
        stats["mean"] = _rounded(sum(values) / len(values))
    return stats


def _rounded(value: float) -> float:
    return round(value, 3)


def from_json(data: dict[str, Any]) -> Run:
    """The run a raw file (``to_json``'s output) holds; ``to_json(from_json(d)) == d``.

    Raises ``KeyError``/``ValueError`` on a file of another shape.
    """
    figures = [
        Figure(
            number=f["number"],
            title=f["title"],
            comparisons=[_comparison(c) for c in f["comparisons"]],
            series=[Series(name, s["unit"], list(s["samples"])) for name, s in f["series"].items()],
            notes=list(f["notes"]),
            error=f.get("error", ""),
        )
        for f in data["figures"]
    ]
    return Run(
        machine=Machine(**data["machine"]),
        figures=figures,
        smoke=data["smoke"],
        seconds=data["seconds"],
        load_at_end=data["load_at_end"],
        sizes=data["sizes"],
    )


def _comparison(data: dict[str, Any]) -> Comparison:
    fields = {k: v for k, v in data.items() if k not in ("ratio", "met")}  # derived
    fields["target"] = _target_from(data["target"])
    fields["paired_ratios"] = tuple(data["paired_ratios"])
    return Comparison(**fields)


_NUMBER = r"([0-9.e+-]+|inf|nan)"


def _target_from(text: str | None) -> Target | None:
    """The ``Target`` whose ``describe()`` is ``text``."""
    if text is None:
        return None
    if match := re.fullmatch(rf"{_NUMBER}x to {_NUMBER}x", text):
        return Target(low=float(match[1]), high=float(match[2]))
    if match := re.fullmatch(rf"≤ {_NUMBER}x", text):
        return Target(high=float(match[1]))
    if match := re.fullmatch(rf"≥ {_NUMBER}x", text):
        return Target(low=float(match[1]))
    raise ValueError(f"not a target: {text!r}")


# --- Markdown -------------------------------------------------------------------------------


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def _met(comparison: Comparison) -> str:
    met = comparison.met
    if met is None:
        return "-"
    return "**met**" if met else "**missed**"


def _target(comparison: Comparison) -> str:
    parts = []
    if comparison.target is not None:
        parts.append(comparison.target.describe())
    if comparison.absolute_limit is not None:
        joint = "and " if parts else ""
        parts.append(f"{joint}≤ {comparison.absolute_limit:g} {comparison.unit}")
    return " ".join(parts) if parts else "-"


def table(figures: Sequence[Figure]) -> list[str]:
    lines = [
        "| # | Measurement | Measured | Against | Ratio | Target | Samples | Result |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for figure in figures:
        if figure.error:
            lines.append(
                f"| {figure.number} | {_one_line(figure.error)} | - | - | - | - | - | **failed** |"
            )
        for c in figure.comparisons:
            measured = f"{_number(c.measured)} {c.unit} ({c.measured_name})"
            against = f"{_number(c.baseline)} {c.unit} ({c.baseline_name})"
            label = c.label + (f"; {c.note}" if c.note else "")
            lines.append(
                f"| {c.figure} | {label} | {measured} | {against} | {_ratio(c.ratio)} | "
                f"{_target(c)} | {c.samples} | {_met(c)} |"
            )
    return lines


def _one_line(error: str, width: int = 160) -> str:
    """An error's first line, shortened, safe inside a table cell."""
    line = error.splitlines()[0] if error else ""
    line = line if len(line) <= width else line[: width - 1] + "…"
    return line.replace("|", "\\|")


def render(run: Run, chart: str, raw: str) -> str:
    m = run.machine
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (the `bench/` package) on {m.date}, at commit `{m.commit}`, "
        f"in {run.seconds / 60:.1f} minutes. Do not edit by hand: run `make bench` again."
        + (" **Smoke run: sizes too small for any conclusion.**" if run.smoke else ""),
        "",
        f"- Machine: {m.cpu_model}, {m.cores} cores; {m.python}; {m.os}. 1-minute load "
        f"average {m.load_at_start:g} as the run started, {run.load_at_end:g} as it ended "
        "(the run itself keeps about one core busy).",
        "- Stack: the benchmark's own, on free ports, started by `infra.run.Services` as "
        "`make run` starts it (moto server, `chalice local --no-autoreload`, the local event "
        "source); default settings (progress interval 1 s, long polls of 20 s).",
        "- Every figure is the ratio of two measurements taken side by side in this run, "
        "interleaved so that the machine's noise falls on both sides alike.",
        f"- {raw} Method and sizes: `bench/` (`bench/sizes.py`).",
        "",
        "## Results",
        "",
        *table(run.figures),
        "",
        f"![Ratios against targets, and /fast latency distributions]({chart})",
        "",
        "## Targets",
        "",
    ]
    for figure in run.figures:
        if figure.error:
            lines.append(f"- Figure {figure.number}: **failed**, nothing measured.")
        for c in figure.comparisons:
            if c.met is None:
                continue
            verdict = "met" if c.met else "**missed**"
            value = _ratio(c.ratio) if c.target is not None else f"{_number(c.measured)} {c.unit}"
            lines.append(f"- {c.label}: {value} against {_target(c)}: {verdict}.")
    lines += ["", "## The figures", ""]
    for figure in run.figures:
        lines += [f"### {figure.number}. {figure.title}", ""]
        lines += [METHOD.get(figure.number, ""), ""]
        if figure.error:
            lines += ["**Failed.** The run measured nothing here; its error:", "", "```"]
            lines += [figure.error.rstrip(), "```", ""]
            continue
        # A note that is a table row (or a blank line around a table) is kept as it is.
        lines += [n if n.startswith("|") or not n else f"- {n}" for n in figure.notes]
        if figure.number in FIGURE_CHARTS:
            extra = (Path(chart).parent / FIGURE_CHARTS[figure.number][0]).as_posix()
            lines += ["", f"![Figure {figure.number}: {figure.title}]({extra})"]
        finding = FINDINGS.get(figure.number)
        if finding is not None:
            text = finding(figure)
            if text:
                lines += ["", text]
        lines += ["", f"**On AWS.** {ON_AWS.get(figure.number, '')}", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- the chart --------------------------------------------------------------------------------

COLOURS = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
CDF_SERIES = {
    "fast_idle": "idle",
    "fast_worker_busy": "heavy job in the worker",
    "fast_bare_loop_busy": "bare loop in a plain process",
    "inprocess_threaded_busy": "loop inside a threaded API process",
}


def draw_chart(figures: Sequence[Figure], path: Path) -> None:
    comparisons = [c for f in figures for c in f.comparisons if not math.isnan(c.ratio)]
    fig, (bars, cdf) = plt.subplots(
        1, 2, figsize=(15, max(5.0, 0.42 * len(comparisons) + 1.5)),
        gridspec_kw={"width_ratios": [3, 2]},
    )  # fmt: skip
    labels = [f"{c.figure}: {_short(c.label)}" for c in comparisons]
    positions = list(range(len(comparisons)))[::-1]
    bars.barh(
        positions,
        [c.ratio for c in comparisons],
        color=[COLOURS[c.met] for c in comparisons],
    )
    for y, c in zip(positions, comparisons, strict=True):
        if c.target is None:
            continue
        for bound in (c.target.low, c.target.high):
            if bound is not None:
                bars.plot([bound, bound], [y - 0.4, y + 0.4], color="black", linewidth=2)
        bars.text(c.ratio, y, f" {_ratio(c.ratio)}", va="center", fontsize=8)
    bars.set_yticks(positions, labels, fontsize=8)
    bars.set_xscale("log")
    bars.axvline(1.0, color="#bbbbbb", linewidth=1, zorder=0)
    bars.set_xlabel("ratio, measured / against (log scale); black ticks: targets")
    bars.set_title("Ratios (green: target met, red: missed, grey: no target)", fontsize=10)

    series = {s.name: s for f in figures for s in f.series}
    for name, label in CDF_SERIES.items():
        if name not in series or not series[name].samples:
            continue
        values = sorted(series[name].samples)
        cdf.step(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("GET /fast latency, ms (log scale)")
    cdf.set_ylabel("fraction of requests answered")
    cdf.set_title("Figure 1: /fast latency distribution", fontsize=10)
    cdf.grid(True, which="both", alpha=0.3)
    if cdf.get_legend_handles_labels()[0]:  # none when figure 1 failed
        cdf.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(label: str, width: int = 58) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


# --- re-rendering from a raw file ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report``: write BENCHMARKS.md, the chart and the summary again from
    a raw file; exit 2 if the file is missing or not a raw file."""
    from infra.run import PROJECT_DIR  # the project's layout, as bench.run writes it

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument(
        "--raw", type=Path, default=PROJECT_DIR / "bench" / "results" / JSON_NAME,
        help="a raw file written by make bench (default: bench/results/benchmarks.json)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="write everything into this directory (default: as make bench does)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        run = from_json(json.loads(args.raw.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"bench.report: cannot read {args.raw}: {error!r}", file=sys.stderr)
        return 2
    if args.out is None:
        markdown_path, results_dir = (
            PROJECT_DIR / "BENCHMARKS.md",
            PROJECT_DIR / "bench" / "results",
        )
    else:
        markdown_path, results_dir = args.out / "BENCHMARKS.md", args.out
    write(run, markdown_path, results_dir)
    print(f"wrote {markdown_path} and {results_dir} from {args.raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
