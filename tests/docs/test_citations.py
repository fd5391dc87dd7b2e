"""Everything the repository cites can be followed by its reader: no reference to an
issue tracker's numbers, to private plan files or to a design document that is not in the
repository, and every relative link of the top-level Markdown files names a file that
exists. (The design of the job queue is docs/design.md, a page of the site.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from infra.stack import PROJECT_DIR

# Written in pieces, so that this file does not cite what it looks for.
UNFOLLOWABLE = {
    "an issue number": re.compile(r"\b[Ii]ssues?\s+#?\d"),
    "a design document outside the site": re.compile("DESIGN" + r"\.md"),
    "a plan file": re.compile(r"\bplan" + "/"),
}
TOP_LEVEL_PAGES = ("README.md", "CHANGELOG.md", "BENCHMARKS.md")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True
    ).stdout.decode()
    files = [PROJECT_DIR / name for name in listed.split("\0") if name]
    return [f for f in files if f.is_file() and b"\0" not in f.read_bytes()[:8192]]


def offenders(text: str) -> list[tuple[int, str]]:
    """(line, what) for each reference in ``text`` a reader cannot follow."""
    return [
        (number, what)
        for number, line in enumerate(text.splitlines(), 1)
        for what, pattern in UNFOLLOWABLE.items()
        if pattern.search(line)
    ]


def test_the_scan_finds_each_kind_of_reference() -> None:
    cited = "see issue" + " 11 item 3\n(" + "DESIGN" + ".md section 3)\n/work/plan" + "/X.md\nfine"
    assert [line for line, _ in offenders(cited)] == [1, 2, 3]
    assert offenders("Troubleshoot FIFO throttling issues; the usage plan's rate") == []


def test_no_tracked_file_cites_what_a_reader_cannot_follow() -> None:
    files = tracked_text_files()
    assert len(files) > 100
    found = [
        f"{path.relative_to(PROJECT_DIR)}:{line}: {what}"
        for path in files
        for line, what in offenders(path.read_text(errors="replace"))
    ]
    assert not found, "\n".join(found)


def test_the_top_level_pages_link_only_to_files_that_exist() -> None:
    missing = []
    for name in TOP_LEVEL_PAGES:
        for target in _LINK.findall((PROJECT_DIR / name).read_text()):
            path = target.split("#", 1)[0]
            if path and "://" not in target and not (PROJECT_DIR / path).exists():
                missing.append(f"{name}: {target}")
    assert not missing, missing
