"""Helpers for tests that run the project's real `make` targets as subprocesses.

They run in a copy of the project (what git tracks, plus new files not ignored), so
`make deploy` / `make package` can write config.json, policy files, .chalice/deployed/ and
out/ without touching the working tree. `make` uses the virtualenv running the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from chalice.config import Config

from infra import operations, stack

REGION = "us-east-1"
VENV = Path(sys.prefix)
# The scanner's own virtualenv, where `make venv` puts it (the Makefile's CHECKOV_VENV).
CHECKOV = VENV / "checkov"


def copy_project(destination: Path) -> Path:
    """Copy the project's files (tracked, or untracked and not ignored) to ``destination``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=stack.PROJECT_DIR,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = stack.PROJECT_DIR / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def name_stage_key(project: Path, stage: str, kms_key_arn: str) -> None:
    """Give ``stage`` in the copy's .chalice/config.json the KMS key ``kms_key_arn``, where
    a stage names it (its operations settings, infra/operations.py)."""
    path = project / ".chalice" / "config.json"
    data = json.loads(path.read_text())
    stage_config = data["stages"][stage]
    stage_config.setdefault(operations.CONFIG_KEY, {})["kms_key_arn"] = kms_key_arn
    path.write_text(json.dumps(data, indent=2) + "\n")


def isolated_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without AWS, make or app settings, plus ``overrides``.

    AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE point nowhere, so a developer's
    profiles can neither redirect nor authorise anything a test runs.
    """
    dropped = ("AWS_", "JOBS_", "API_", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(overrides)
    return env


def run_make(
    project: Path, env: Mapping[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``make -s ARGS`` in ``project`` with this virtualenv; fail the test if it fails.

    ``-o`` keeps make from reinstalling the virtualenvs (their stamp files may be missing or
    older than the copied requirements files).
    """
    command = [
        "make",
        "-s",
        "--no-print-directory",
        "-C",
        str(project),
        f"VENV={VENV}",
        "-o",
        f"{VENV}/.installed",
        "-o",
        f"{CHECKOV}/.installed",
        *args,
    ]
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


def stage_config(stage: str, project_dir: Path = stack.PROJECT_DIR) -> Config:
    """The stage's Chalice config, its app imported afresh with the stage's variables.

    Chalice imports app.py once per process and reads event sources (the queue names) at
    import: without a fresh import, a second stage would see the first one's queues. The
    process's environment, import path and ``app`` module are restored afterwards.
    """
    saved_app, saved_env, saved_path = sys.modules.pop("app", None), dict(os.environ), sys.path[:]
    try:
        config = stack.load_chalice_config(stage, project_dir)
        config.chalice_app  # noqa: B018 (Chalice imports the app on first access: now)
        return config
    finally:
        sys.modules.pop("app", None)
        if saved_app is not None:
            sys.modules["app"] = saved_app
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


# A SEARCH expression's condition on FunctionName: =(terms joined by OR), or =term.
_FUNCTION_TERMS = re.compile(r'FunctionName=(?:\((?P<terms>[^)]*)\)|(?P<term>"[^"]*"|\S+))')


def searched_functions(expression: str) -> list[str]:
    """The FunctionName values a CloudWatch SEARCH expression names, each asserted to be
    quoted: an exact match (unquoted, CloudWatch would match it partially)."""
    (match,) = _FUNCTION_TERMS.finditer(expression)
    terms = match["terms"].split(" OR ") if match["terms"] else [match["term"]]
    for term in terms:
        assert term.startswith('"') and term.endswith('"') and term.count('"') == 2, term
    return [term.strip('"') for term in terms]
