"""What the numbers were measured on: CPU, cores, Python, OS and the git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    python: str
    os: str
    commit: str  # the git commit measured; "+dirty" when the tree had changes
    date: str  # UTC, when the run started
    # 1-minute load average when the run started: other work on the machine (another
    # session's test suite, say) is noise the interleaving spreads but cannot remove.
    load_at_start: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(project_dir: Path) -> Machine:
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        os=_os_name(),
        commit=_commit(project_dir),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_at_start=load_average(),
    )


def load_average() -> float:
    """The 1-minute load average (runnable processes, averaged), or NaN if unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    pretty = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    kernel = f"{platform.system()} {platform.release()}"
    return f"{pretty} ({kernel})" if pretty else kernel


def _commit(project_dir: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project_dir, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        # BENCHMARKS.md and the results are what a run writes: they do not make it dirty.
        changes = [
            line
            for line in git("status", "--porcelain").splitlines()
            if not line[3:].startswith(("BENCHMARKS.md", "bench/results/"))
        ]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if changes else commit
