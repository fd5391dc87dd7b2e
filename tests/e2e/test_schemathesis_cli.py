"""Schemathesis' own CLI, all checks, against a live local stack: conformance checked from
outside the project's own strategies (tests/e2e/test_api_fuzz.py drives Hypothesis
itself), the way a user or an auditor would run it.

In the suite, bounded and repeatable: a fixed seed, a fixed number of examples per
operation, no example database. ``make fuzz`` runs the same check with random seeds
(tests/e2e/fuzz_random_seeds.py, which only `make fuzz` collects), to find what
the fixed seed never tries; a failure names its seed, and ``make fuzz SEED=n`` repeats it.
The stack runs a worker and caps n low, so every job a generated request creates
finishes in moments and a generated ``?wait=N`` or ``Prefer: wait=N`` ends when its job
does; the request timeout still outlasts the longest wait the API allows, so a slow
machine makes the run slower, never a failure.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import requests

from chalicelib.service import MAX_WAIT_SECONDS
from tests.e2e.conftest import QUOTAS_OFF, Stack

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")  # the pinned CLI, in .venv
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 1
EXAMPLES = 30  # per operation and phase: about 350 requests, ~10 s on a quiet 2-core machine
# Jobs of at most this many iterations take milliseconds.
SMALL_N = {"JOBS_MAX_N": "100000", "JOBS_DEFAULT_N": "1000"}
# A cap so that a hung run fails CI instead of stalling it, far above a normal run.
HARD_TIMEOUT_SECONDS = 600


def test_schemathesis_cli_finds_no_failure(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(environment={**SMALL_N, **QUOTAS_OFF})
    run_schemathesis(stack, tmp_path, SEED)


def run_schemathesis(stack: Stack, scratch: Path, seed: int) -> None:
    """Run the CLI with ``seed``; fail naming the seed unless it found nothing and tested
    every operation of the document, and its stateful phase."""
    scratch.mkdir(parents=True, exist_ok=True)
    junit = scratch / "junit.xml"
    command = [
        str(SCHEMATHESIS), "--no-color", "--config-file", str(CONFIG),
        "run", f"{stack.url}/openapi.json",
        "--checks", "all",
        "--seed", str(seed), "--max-examples", str(EXAMPLES),
        "--generation-database", "none",
        "--request-timeout", str(MAX_WAIT_SECONDS + 10),
        # `--checks all` holds every answer to 10 s; a generated wait may rightly last as
        # long as the API allows when the lane is busy with the run's other jobs (a batch
        # makes up to 100), so the limit is the longest wait, and a hang still fails.
        "--max-response-time", str(MAX_WAIT_SECONDS + 5),
        "--report", "junit", "--report-junit-path", str(junit),
    ]  # fmt: skip

    # In a scratch directory: nothing the run writes lands in the project.
    result = subprocess.run(
        command, cwd=scratch, capture_output=True, text=True, timeout=HARD_TIMEOUT_SECONDS
    )

    found = f"seed {seed} (make fuzz SEED={seed}):\n{(result.stdout + result.stderr)[-8000:]}"
    assert result.returncode == 0, found
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), found
    tested = {case.get("name") for case in suite.iter("testcase")}
    document = requests.get(f"{stack.url}/openapi.json", timeout=10).json()
    operations = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    assert tested >= operations | {"Stateful tests"}, found
