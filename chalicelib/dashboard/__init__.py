"""The dashboard served at ``GET /``: one HTML file with its CSS and JavaScript inline.

No build step and nothing fetched from elsewhere, so it works offline. The page computes
every API URL from its own location, so it works under API Gateway's stage prefix
(``…/dev/`` and ``…/dev`` alike). Its Content-Security-Policy allows exactly the page's
own inline script and style (by hash) and requests to its own origin: even if API data
ever reached the DOM as markup, no script in it could run.

The file ships with the Lambda package because Chalice zips all of ``chalicelib/``; it is
read once per process.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import NamedTuple

PAGE_FILE = Path(__file__).with_name("index.html")

_INLINE = {
    "script": re.compile(r"<script>(.*?)</script>", re.DOTALL),
    "style": re.compile(r"<style>(.*?)</style>", re.DOTALL),
}


class Page(NamedTuple):
    html: str
    headers: dict[str, str]


@cache
def page() -> Page:
    """The page and its response headers; raises OSError if the file is missing."""
    html = PAGE_FILE.read_text(encoding="utf-8")
    return Page(html=html, headers=headers_for(html))


def headers_for(html: str) -> dict[str, str]:
    """text/html with a CSP that allows only the page's own inline blocks, by hash."""
    sources = {
        kind: " ".join(_hash(block) for block in pattern.findall(html)) or "'none'"
        for kind, pattern in _INLINE.items()
    }
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {sources['script']}",
            f"style-src {sources['style']}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidate, so a deploy is seen at the next load.
        "Cache-Control": "no-cache",
    }


def _hash(block: str) -> str:
    digest = hashlib.sha256(block.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"
