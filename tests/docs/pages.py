"""The documentation's Markdown, read as tests need it: the pages (README.md and the
site's pages in docs/), and the fenced examples in them with the marker that says how each
is run.

An example is a fenced block of shell (``sh``, ``bash``, ``shell``, ``console``) or Python
(``python``, ``py``, ``pycon``). The line right before it is an HTML comment, one of:

- ``<!-- example: run by tests/docs/test_examples.py -->``: run, in page order, against one
  local stack shared by all such examples;
- ``<!-- example: run by tests/<path>.py -->``: run by that test, which reads the page;
- ``<!-- example: not run (<the reason it cannot run here>) -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from infra.stack import PROJECT_DIR

DOCS_DIR = PROJECT_DIR / "docs"
README = PROJECT_DIR / "README.md"
SHELL = frozenset({"sh", "bash", "shell", "console"})
PYTHON = frozenset({"python", "py", "pycon"})
RUN_HERE = "tests/docs/test_examples.py"

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
_RUN_BY = re.compile(r"^<!-- example: run by (\S+) -->$")
_NOT_RUN = re.compile(r"^<!-- example: not run \((.+)\) -->$")


def pages() -> list[Path]:
    """README.md and every page of the site (the hooks' code is not a page)."""
    site = sorted(p for p in DOCS_DIR.rglob("*.md") if "hooks" not in p.parts)
    return [README, *site]


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # the HTML comment right before it, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(PROJECT_DIR)}:{self.line}"

    @property
    def run_by(self) -> str | None:
        found = _RUN_BY.match(self.marker or "")
        return found.group(1) if found else None

    @property
    def not_run_because(self) -> str | None:
        found = _NOT_RUN.match(self.marker or "")
        return found.group(1).strip() if found else None


def examples(page: Path, text: str | None = None) -> list[Example]:
    """The shell and Python examples of ``page`` (or of ``text``, read as that page)."""
    lines = (page.read_text() if text is None else text).splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        if language in SHELL | PYTHON:
            before = lines[i - 1].strip() if i > 0 else ""
            marker = before if before.startswith("<!--") else None
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Example(page, i + 1, language, code, marker))
        i = end + 1
    return found


def problems(example: Example) -> list[str]:
    """What is wrong with how ``example`` says it is run; empty if nothing."""
    if example.not_run_because is not None:
        return [] if example.not_run_because else [f"{example.where}: a reason is empty"]
    test = example.run_by
    if test is None:
        return [
            f"{example.where}: a {example.language} example neither run by a test nor "
            "marked with why it is not (<!-- example: not run (reason) -->)"
        ]
    if not (PROJECT_DIR / test).is_file():
        return [f"{example.where}: {test} does not exist"]
    page = str(example.page.relative_to(PROJECT_DIR))
    if test != RUN_HERE and page not in (PROJECT_DIR / test).read_text():
        return [f"{example.where}: {test} never reads {page}"]
    return []
