"""Every shell and Python example in README.md and docs/ is run by a test, or says why it
cannot be run here; those marked ``run by tests/docs/test_examples.py`` run here, in page
order, against one local stack (``shared_stack``) standing in for ``make run``'s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import PROJECT_DIR
from tests.docs.pages import PYTHON, README, RUN_HERE, Example, examples, pages, problems
from tests.e2e.conftest import Stack

ALL = [example for page in pages() for example in examples(page)]
RUN = [example for example in ALL if example.run_by == RUN_HERE]
# Where the examples say `make run` serves the API.
DOCUMENTED_API = re.compile(r"(http://)?(127\.0\.0\.1|localhost):8000")
# An HTTP error answer fails the example (curl -s alone exits 0 on a 4xx or 5xx).
SHELL_PRELUDE = 'curl() { command curl --fail-with-body "$@"; }\n'


def test_every_example_is_run_or_says_why_not() -> None:
    assert ALL, "no example found: the page list or the parser is broken"
    found = [problem for example in ALL for problem in problems(example)]
    assert not found, "\n".join(found)


def test_an_example_with_neither_marker_fails_the_check() -> None:
    page = README
    unmarked = examples(page, "Text.\n\n```sh\nmake deploy\n```\n")
    empty_reason = examples(page, "<!-- example: not run () -->\n```python\nx = 1\n```\n")
    missing_test = examples(page, "<!-- example: run by tests/nothing.py -->\n```sh\nls\n```\n")
    unread = examples(page, "<!-- example: run by tests/waiting.py -->\n```console\n$ ls\n```\n")
    for case in (unmarked, empty_reason, missing_test, unread):
        assert len(case) == 1 and problems(case[0]), case
    fine = examples(page, "<!-- example: not run (deploys to AWS) -->\n```bash\nmake\n```\n")
    assert problems(fine[0]) == []


def commands(example: Example) -> str:
    """The example as a script: a console session's commands (after ``$ ``), or the code."""
    if example.language != "console":
        return example.code
    lines = example.code.splitlines()
    return "\n".join(line[2:] for line in lines if line.startswith("$ ")) + "\n"


def against(stack: Stack, code: str) -> str:
    return DOCUMENTED_API.sub(stack.url, code)


@pytest.mark.parametrize("example", RUN, ids=[e.where for e in RUN])
def test_example_runs_against_the_local_stack(example: Example, shared_stack: Stack) -> None:
    environment = {
        **os.environ,
        # The `jobs` command (.venv/bin) and the stack, as `make run` would have them.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "JOBS_URL": shared_stack.url,
    }
    code = against(shared_stack, commands(example))
    if example.language in PYTHON:
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", SHELL_PRELUDE + code]
    ran = subprocess.run(
        argv, cwd=PROJECT_DIR, env=environment, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, (
        f"{example.where} failed ({ran.returncode}):\n{code}\nstdout:\n{ran.stdout}\n"
        f"stderr:\n{ran.stderr}\nthe stack's log ends:\n{shared_stack.log[-3000:]}"
    )


def test_the_examples_reach_the_stack_they_are_run_against() -> None:
    """Each example run here calls the API where `make run` serves it, so that rewriting
    that address is what points it at the test's stack."""
    assert RUN
    for example in RUN:
        assert DOCUMENTED_API.search(example.code) or "jobs " in example.code, example.where
