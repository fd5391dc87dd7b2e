"""The benchmark runs: `python -m bench --smoke` on its own stack, into a scratch dir.

Tiny sizes: this checks that every figure is measured and the files are written, not
the targets (which need `make bench`'s sizes and a quiet machine). What gets written:
BENCHMARKS.md, the chart, the raw samples (git-ignored) and their summary (committed),
and the raw file alone is enough to write the rest again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.stats import percentile
from infra.run import PROJECT_DIR
from tests.speed import iterations_per_second

FIGURES = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The smoke run's time budget, set on this 2-core machine counting about 43 M iterations/s:
# thirteen figures, seven of them on stacks of their own (6, 8, 9, 10, 11, 12 and the shared
# one), each up and down in 10 to 20 s.
SMOKE_BUDGET_SECONDS = 180
BUDGET_SPEED = 43_000_000


def test_smoke_run_writes_markdown_json_and_chart(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Smoke run" in markdown
    for number in sorted(FIGURES):
        assert f"### {number}. " in markdown
    assert "![" in markdown and "benchmarks.png" in markdown
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(PNG_SIGNATURE)
    # Figure 9 (cost against backlog depth) has a chart of its own.
    assert "growth.png" in markdown
    assert (tmp_path / "growth.png").read_bytes().startswith(PNG_SIGNATURE)

    raw = json.loads((tmp_path / "benchmarks.json").read_text())
    assert raw["smoke"] is True
    assert {f["number"] for f in raw["figures"]} == FIGURES
    for figure in raw["figures"]:
        assert figure["comparisons"], figure["number"]
        assert all(s["count"] > 0 for s in figure["series"].values()), figure["number"]
    assert raw["machine"]["cores"] > 0 and raw["machine"]["commit"]
    # A CI budget, not a performance target: 2 minutes at the counting speed the budget
    # was set at, scaled by how fast this machine counts now (busy or idle).
    budget = SMOKE_BUDGET_SECONDS * max(1.0, BUDGET_SPEED / iterations_per_second())
    assert elapsed < budget, f"the smoke run took {elapsed:.0f} s (budget {budget:.0f} s)"

    # The summary: the raw file's figures without their samples, each series reduced to
    # its statistics, and the raw file's checksum.
    raw_text = (tmp_path / report.JSON_NAME).read_text()
    summary = json.loads((tmp_path / report.SUMMARY_NAME).read_text())
    assert summary["raw"] == {
        "file": report.JSON_NAME,
        "sha256": hashlib.sha256(raw_text.encode()).hexdigest(),
    }
    assert {k: v for k, v in summary.items() if k not in ("raw", "figures")} == {
        k: v for k, v in raw.items() if k != "figures"
    }
    for raw_figure, summary_figure in zip(raw["figures"], summary["figures"], strict=True):
        assert summary_figure["comparisons"] == raw_figure["comparisons"]
        assert summary_figure["notes"] == raw_figure["notes"]
        for name, series in raw_figure["series"].items():
            stats, samples = summary_figure["series"][name], series["samples"]
            assert set(stats) == {"unit", *report.SUMMARY_STATISTICS}
            assert stats["count"] == len(samples)
            assert (stats["min"], stats["max"]) == (round(min(samples), 3), round(max(samples), 3))
            assert stats["p99"] == round(percentile(samples, 99), 3)

    # BENCHMARKS.md says where the raw samples are, that they are not committed, and how
    # to get them; it links the summary.
    assert f"`{report.JSON_NAME}` (SHA-256 `{summary['raw']['sha256'][:16]}" in markdown
    assert "git-ignored" in markdown and "`make bench` writes a fresh set" in markdown
    assert f"]({report.SUMMARY_NAME})" in markdown

    # The raw file is enough to write everything again, byte for byte.
    again = tmp_path / "again"
    rendered = subprocess.run(
        [sys.executable, "-m", "bench.report", "--raw", str(tmp_path / report.JSON_NAME),
         "--out", str(again)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    for name in ("BENCHMARKS.md", report.JSON_NAME, report.SUMMARY_NAME, report.CHART_NAME):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_the_raw_samples_stay_out_of_git_and_the_rest_is_committed() -> None:
    results = Path("bench") / "results"
    expected = {report.JSON_NAME: True, report.SUMMARY_NAME: False, report.CHART_NAME: False}
    for name, ignored in expected.items():
        check = subprocess.run(
            ["git", "check-ignore", "-q", str(results / name)], cwd=PROJECT_DIR, check=False
        )
        assert check.returncode == (0 if ignored else 1), name
    tracked = subprocess.run(
        ["git", "ls-files", str(results)], cwd=PROJECT_DIR, capture_output=True, text=True
    ).stdout.split()
    assert report.JSON_NAME not in {Path(name).name for name in tracked}
