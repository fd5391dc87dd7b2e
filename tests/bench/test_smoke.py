"""The benchmark runs: `python -m bench --smoke` on its own stack, into a scratch dir.

Tiny sizes: this checks that every figure is measured and the files are written, not
the targets (which need `make bench`'s sizes and a quiet machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from infra.run import PROJECT_DIR

FIGURES = {"1", "2", "3", "4", "5", "6", "7", "8"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    # Figure 8 (cost against backlog depth) has a chart of its own.
    assert "growth.png" in markdown
    assert (tmp_path / "growth.png").read_bytes().startswith(PNG_SIGNATURE)

    raw = json.loads((tmp_path / "benchmarks.json").read_text())
    assert raw["smoke"] is True
    assert {f["number"] for f in raw["figures"]} == FIGURES
    for figure in raw["figures"]:
        assert figure["comparisons"], figure["number"]
        assert all(s["count"] > 0 for s in figure["series"].values()), figure["number"]
    assert raw["machine"]["cores"] > 0 and raw["machine"]["commit"]
    assert elapsed < 120, f"the smoke run took {elapsed:.0f} s"
