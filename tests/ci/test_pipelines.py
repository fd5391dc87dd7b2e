"""No pipeline in the CI scripts or the Makefile has a reader that can stop reading early.

Under ``set -o pipefail`` (the CI scripts set it) a pipeline fails if any stage fails,
and a writer whose reader has exited dies of SIGPIPE (exit status 141). So
``make --version | head -1`` failed `.ci/run` at random: whether make was still writing
when head exited was a race. The fix is a reader that reads everything
(``sed -n 1p``); this test keeps the pattern from coming back, anywhere in .ci/ or in the
Makefile (whose recipes could turn pipefail on at any time).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
CI_SCRIPTS = sorted(p for p in (PROJECT / ".ci").iterdir() if p.is_file())
MAKEFILE = PROJECT / "Makefile"

# Tokens that end a pipeline (a `|` joins its stages; `||` is not a pipe).
SEPARATORS = {";", ";;", "&", "&&", "||", "(", ")", "\n"}
PIPES = {"|", "|&"}
# Words that may come before a stage's command without being it.
PREFIXES = {"!", "{", "}", "then", "do", "else", "elif", "if", "while", "until", "time"}
WRAPPERS = {"command", "env", "exec", "nice", "nohup", "sudo"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A sed command `q`/`Q` (quit), optionally with an exit code: `1q`, `/x/q`, `q5;`.
SED_QUIT = re.compile(r"(?:^|[\s;{}/$\d])[qQ]\s*\d*\s*(?:$|[;}])")
# grep options that stop at the first match (short ones may be clustered: -qE, -m1).
GREP_EARLY_LONG = ("--quiet", "--silent", "--max-count", "--files-with-matches",
                   "--files-without-match")  # fmt: skip
GREP_EARLY_SHORT = set("qmlL")
GREP_SHORT_WITH_ARGUMENT = set("efABCdD")


def early_exit_reason(stage: list[str]) -> str | None:
    """Why this pipeline stage may exit before reading all its input, or None."""
    words = list(stage)
    while words and (
        words[0] in PREFIXES
        or words[0] in WRAPPERS
        or ASSIGNMENT.match(words[0])
        or words[0].startswith("$")  # e.g. $SUDO
    ):
        words.pop(0)
    if not words:
        return None
    command, arguments = Path(words[0]).name, words[1:]
    if command in {"head", "read"}:
        return f"{command} stops reading after what it needs"
    if command == "grep":
        for argument in arguments:
            if argument == "--":
                break
            if argument.startswith(GREP_EARLY_LONG):
                return f"grep {argument} stops at the first match"
            if argument.startswith("-") and not argument.startswith("--"):
                for flag in argument[1:]:
                    if flag in GREP_EARLY_SHORT:
                        return f"grep -{flag} stops at the first match"
                    if flag in GREP_SHORT_WITH_ARGUMENT:
                        break
    if command == "sed" and any(SED_QUIT.search(a) for a in arguments if not a.startswith("-")):
        return "sed quits (q) before the end of its input"
    if command in {"awk", "gawk", "mawk"} and any(re.search(r"\bexit\b", a) for a in arguments):
        return f"{command} exits before the end of its input"
    return None


def pipelines(line: str) -> list[list[list[str]]]:
    """The pipelines of one logical shell line: each a list of stages, each a word list."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[list[list[str]]] = []
    stages: list[list[str]] = [[]]
    for token in [*lexer, "\n"]:
        if token in PIPES:
            stages.append([])
        elif token in SEPARATORS:
            if len(stages) > 1:
                found.append(stages)
            stages = [[]]
        else:
            stages[-1].append(token)
    return found


def shell_lines(path: Path) -> list[str]:
    """Logical lines of a shell script or Makefile: continuations joined, comments left
    to the lexer. In a Makefile, make's own `$(VAR)`/`${VAR}` become a plain word and
    `$$` the shell's `$`, so what is checked is what the shell runs."""
    text = path.read_text().replace("\\\n", " ")
    if path.name == "Makefile":
        text = re.sub(r"\$[({][A-Za-z_][A-Za-z0-9_]*[)}]", "MAKEVAR", text)
        text = text.replace("$$", "$")
        text = "\n".join(line.lstrip("\t").lstrip("@-+") for line in text.splitlines())
    return [line for line in text.splitlines() if line.strip()]


def early_exit_pipelines(path: Path) -> list[str]:
    problems = []
    for number, line in enumerate(shell_lines(path), start=1):
        try:
            found = pipelines(line)
        except ValueError as err:  # e.g. an unbalanced quote: cannot be checked, so say so
            problems.append(f"{path.name}: line {number}: cannot parse {line!r}: {err}")
            continue
        for stages in found:
            for stage in stages[1:]:
                reason = early_exit_reason(stage)
                if reason:
                    problems.append(f"{path.name}: {line.strip()!r}: {reason}")
    return problems


@pytest.mark.parametrize("path", [*CI_SCRIPTS, MAKEFILE], ids=lambda p: p.name)
def test_no_pipeline_reader_exits_before_its_writer(path: Path) -> None:
    assert early_exit_pipelines(path) == []


def test_ci_scripts_run_under_pipefail() -> None:
    # The premise of the check above, for the scripts it matters most to.
    for script in CI_SCRIPTS:
        assert "set -euo pipefail" in script.read_text(), script.name


@pytest.mark.parametrize(
    "line",
    [
        "make --version | head -1",  # the line that failed .ci/run
        "x=$(make --version | head -n 1)",
        "yes | grep -q y",
        "yes | grep -Em1 y",
        "yes | grep --max-count=1 y",
        "yes | sed 1q",
        "yes | sed -e '/y/q'",
        "yes | awk '{ print; exit }'",
        "yes | while read -r line; do :; done",
        "yes | sudo head -1",
    ],
)
def test_the_check_finds_early_readers(line: str, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text(f"set -euo pipefail\n{line}\n")
    assert early_exit_pipelines(script)


@pytest.mark.parametrize(
    "line",
    [
        "make --version | sed -n 1p",
        "grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{print $1}'",
        "false || head -1 file",  # `||` is not a pipe
        "seq 3 | grep -v 2 | sort",
        "sed 's/q/x/' file | wc -l",
    ],
)
def test_the_check_leaves_full_readers_alone(line: str, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text(f"set -euo pipefail\n{line}\n")
    assert early_exit_pipelines(script) == []


def test_an_early_reader_fails_a_pipefail_pipeline_and_a_full_reader_does_not() -> None:
    # The hazard itself: `yes` never stops writing, so once head exits it must get
    # SIGPIPE (128 + 13 = 141); sed -n 1p reads to the end and the pipeline succeeds.
    early = subprocess.run(
        ["bash", "-c", "set -o pipefail; yes | head -1 >/dev/null"], timeout=30, check=False
    )
    full = subprocess.run(
        ["bash", "-c", "set -o pipefail; seq 100000 | sed -n 1p >/dev/null"],
        timeout=30,
        check=False,
    )
    assert (early.returncode, full.returncode) == (141, 0)
