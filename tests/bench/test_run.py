"""`make bench` keeps what it measured when a figure fails: the failed figure is reported
with its error beside the others, every file is written, and the run exits 1.

The figures are stand-ins (monkeypatched measuring functions): what is tested is the run
around them, not the measurements.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import bulk, burst, coldstart, growth, lanes, later, report
from bench import run as bench_run
from bench.sizes import SMOKE
from bench.stack import BenchStack
from bench.stats import Comparison, Figure, Series, Target


def measured(number: str) -> Callable[..., Figure]:
    def figure(*args: object) -> Figure:
        return Figure(
            number,
            f"stand-in {number}",
            comparisons=[
                Comparison(
                    number, f"thing {number}", 2.0, 1.0, "ms", "a", "b", "3 / 3", Target(high=3)
                )
            ],
            series=[Series(f"series {number}", "ms", [1.0, 2.0, 3.0])],
            notes=[f"note {number}"],
        )

    return figure


def raising(message: str) -> Callable[..., Figure]:
    def figure(*args: object) -> Figure:
        raise RuntimeError(message)

    return figure


@pytest.fixture(autouse=True)
def no_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The findings read the real figures' series, which the stand-ins do not have.
    monkeypatch.setattr(report, "FINDINGS", {})


def test_a_failed_figure_is_reported_and_what_was_measured_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coldstart, "figure_6", measured("6"))
    monkeypatch.setattr(burst, "figure_8", raising("the burst's stack did not start"))
    monkeypatch.setattr(growth, "figure_9", raising("the head job stayed queued"))

    status = bench_run.main(["--only", "6,8,9", "--out", str(tmp_path)])

    assert status == 1
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    # Figure 6, measured before the failures, is all there.
    assert "### 6. stand-in 6" in markdown and "| 6 | thing 6 |" in markdown
    assert "- note 6" in markdown
    # Each failure, and the figure after the first one was still measured (it failed too,
    # with its own error).
    assert "| 8 | RuntimeError: the burst's stack did not start |" in markdown
    assert "| 9 | RuntimeError: the head job stayed queued |" in markdown
    assert markdown.count("**Failed.**") == 2
    assert "- Figure 9: **failed**, nothing measured." in markdown
    raw = json.loads((tmp_path / report.JSON_NAME).read_text())
    errors = {f["number"]: f.get("error") for f in raw["figures"]}
    assert errors == {
        "6": None,
        "8": "RuntimeError: the burst's stack did not start",
        "9": "RuntimeError: the head job stayed queued",
    }
    assert (tmp_path / report.CHART_NAME).exists() and (tmp_path / report.SUMMARY_NAME).exists()

    # The raw file still writes everything again, byte for byte.
    again = tmp_path / "again"
    assert report.main(["--raw", str(tmp_path / report.JSON_NAME), "--out", str(again)]) == 0
    for name in ("BENCHMARKS.md", report.JSON_NAME, report.SUMMARY_NAME):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_shared_stack_that_fails_fails_its_figures_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stack_down(*args: object) -> None:
        raise RuntimeError("the shared stack did not start")

    monkeypatch.setattr(BenchStack, "running", stack_down)
    alone = (
        (coldstart, "figure_6"),
        (burst, "figure_8"),
        (growth, "figure_9"),
        (lanes, "figure_10"),
        (later, "figure_11"),
        (bulk, "figure_12"),
    )
    for module, name in alone:
        monkeypatch.setattr(module, name, measured(name.removeprefix("figure_")))

    figures = bench_run.measure(tmp_path, SMOKE)

    assert [f.number for f in figures] == list(bench_run.ORDER)
    failed = {f.number for f in figures if f.error}
    assert failed == set(bench_run.ON_SHARED_STACK)
    assert {f.error for f in figures if f.error} == {"RuntimeError: the shared stack did not start"}
    assert all(f.comparisons for f in figures if not f.error)
