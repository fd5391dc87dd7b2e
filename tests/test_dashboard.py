"""GET / serves the dashboard: one self-contained page, locked down by its CSP.

The page's behaviour is tested in a real browser in tests/e2e/test_dashboard.py; these
checks are about what is served and about rules the page's code must keep.
"""

from __future__ import annotations

import base64
import hashlib
import re

from chalice.test import Client

from chalicelib import dashboard


def _script(html: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1
    return str(scripts[0])


def test_the_page_is_served_as_html(client: Client) -> None:
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.body.decode() == dashboard.PAGE_FILE.read_text()
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_csp_allows_exactly_the_inline_script_and_style(client: Client) -> None:
    response = client.http.get("/")
    html = response.body.decode()
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    for tag in ("script", "style"):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert policy[f"{tag}-src"] == f"'sha256-{digest}'"
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    # No other script or style can be in the page: inline handlers and style attributes
    # would be refused by the policy, so they must not be written.
    assert not re.search(r"\son[a-z]+=", html) and " style=" not in html


def test_the_page_needs_nothing_from_elsewhere() -> None:
    html = dashboard.PAGE_FILE.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html


def test_the_script_writes_api_data_as_text_only() -> None:
    script = _script(dashboard.PAGE_FILE.read_text())
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_api_urls_are_relative_to_the_page_never_to_the_root() -> None:
    # Under API Gateway the page is at /<stage>/ (or /<stage>): "/jobs" would miss the
    # stage prefix. Every call goes through apiUrl(relative) against the page's location.
    script = _script(dashboard.PAGE_FILE.read_text())
    assert not re.search(r"""["'`]/(heavy|jobs|fast|kinds|openapi|schedules)""", script)
    assert "window.location.origin" not in script
    calls = re.findall(r"""call\("(?:GET|POST|DELETE)", ([^,)]+)""", script)
    assert calls == [
        '"jobs/" + encodeURIComponent(id',
        '"jobs?" + params',
        '"kinds"',
        '"jobs"',
        '"heavy"',
        '"jobs/" + encodeURIComponent(id',
        '"jobs/" + encodeURIComponent(r.tr.dataset.jobId',
        '"schedules"',
        "schedulePath(schedule",  # "schedules/" + the name, relative too
        "path",  # "schedules/" + the name + "/pause" or "/resume"
        '"schedules"',
        '"openapi.json"',
    ]
    assert script.count('"schedules/" + encodeURIComponent(') == 2


def test_the_page_is_read_once() -> None:
    assert dashboard.page() is dashboard.page()
