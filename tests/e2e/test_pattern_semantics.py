"""A kind's input pattern means the same in the browser as on the server: Chromium runs
the dashboard's own check (``new RegExp(pattern, "u").test(value)``, in
chalicelib/dashboard/index.html) over the table the server's check is held to
(tests/ecma_patterns.py), and each answer is the server's (chalicelib.kinds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from chalicelib.dashboard import page as dashboard_page
from chalicelib.kinds import pattern_matches
from infra.browser import chromium
from tests.ecma_patterns import NOT_ECMA, PATTERN_CASES

DASHBOARD_CHECK = 'new RegExp(schema.pattern, "u")'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def test_the_dashboard_still_checks_patterns_this_way() -> None:
    assert DASHBOARD_CHECK in dashboard_page().html


def test_the_browser_and_the_server_agree_on_every_case(browser: Browser) -> None:
    tab = browser.new_page()
    cases = [[pattern, value] for pattern, value, _ in PATTERN_CASES]
    in_browser = tab.evaluate("cases => cases.map(([p, v]) => new RegExp(p, 'u').test(v))", cases)
    on_server = [pattern_matches(pattern, value) for pattern, value, _ in PATTERN_CASES]
    expected = [matches for _, _, matches in PATTERN_CASES]
    assert in_browser == on_server == expected


def test_the_browser_refuses_the_patterns_the_declaration_check_refuses(
    browser: Browser,
) -> None:
    tab = browser.new_page()
    compiles = tab.evaluate(
        "ps => ps.map(p => { try { new RegExp(p, 'u'); return true } catch { return false } })",
        NOT_ECMA,
    )
    assert compiles == [False] * len(NOT_ECMA)
