"""The README fits on a screen and sends the reader into the site."""

from __future__ import annotations

import re

from tests.docs.pages import DOCS_DIR, README

MAX_LINES = 200


def test_the_readme_fits_on_a_screen() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines (at most {MAX_LINES})"


def test_the_readme_links_to_every_page_of_the_site() -> None:
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)", README.read_text()))
    pages = {p.name for p in DOCS_DIR.glob("*.md")} - {"index.md"}
    assert pages <= linked, f"pages the README does not link to: {sorted(pages - linked)}"


def test_the_readme_has_the_two_commands_and_a_first_request() -> None:
    text = README.read_text()
    for command in ("make run", "make test", "curl -s http://127.0.0.1:8000/fast"):
        assert command in text, command
