"""The documentation site as a reader meets it: built with ``mkdocs build --strict``, every
page reachable from the navigation, no internal link or anchor dead, and the API reference
it carries is the document prod's ``GET /openapi.json`` serves."""

from __future__ import annotations

import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from chalice.test import Client

from chalicelib import config
from infra.stack import PROJECT_DIR
from tests.docs.conftest import build_site


class _Page(HTMLParser):
    """The ids, links (and where they sit) and image sources of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.nav_links: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        for key in ("id", "name"):
            if found.get(key):
                self.ids.add(found[key])
        target = found.get("href") if tag in ("a", "link") else found.get("src")
        if target is None or (tag == "link" and "stylesheet" not in found.get("rel", "")):
            return
        self.links.append(target)
        if tag == "a" and "md-nav__link" in found.get("class", "").split():
            self.nav_links.append(target)


def _read(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _internal(link: str) -> bool:
    parts = urlsplit(link)
    return not (parts.scheme or parts.netloc or link.startswith(("mailto:", "data:")))


def _resolve(site: Path, page: Path, link: str) -> tuple[Path, str]:
    """The file ``link`` on ``page`` names, and its fragment."""
    parts = urlsplit(link)
    base = PurePosixPath(page.relative_to(site).as_posix()).parent
    target = site / base / unquote(parts.path) if parts.path else page
    target = Path(target).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def _pages(site: Path) -> set[Path]:
    return {p.resolve() for p in site.rglob("index.html")}


def test_every_page_is_reachable_from_the_navigation(site_dir: Path) -> None:
    start = (site_dir / "index.html").resolve()
    reached, todo = {start}, [start]
    while todo:
        page = todo.pop()
        for link in _read(page).nav_links:
            if not _internal(link):
                continue
            target, _ = _resolve(site_dir, page, link)
            if target.suffix == ".html" and target not in reached and target.exists():
                reached.add(target)
                todo.append(target)
    unreached = sorted(str(p.relative_to(site_dir)) for p in _pages(site_dir) - reached)
    assert not unreached, f"pages the navigation does not reach: {unreached}"
    assert len(reached) >= 15  # every page of docs/ and the generated ones


def test_no_internal_link_or_anchor_is_dead(site_dir: Path) -> None:
    parsed: dict[Path, _Page] = {}

    def page(path: Path) -> _Page:
        if path not in parsed:
            parsed[path] = _read(path)
        return parsed[path]

    dead = []
    for source in sorted(_pages(site_dir)):
        for link in page(source).links:
            if not _internal(link):
                continue
            target, fragment = _resolve(site_dir, source, link)
            where = f"{source.relative_to(site_dir)}: {link}"
            if not target.exists():
                dead.append(f"{where} (no {target.name})")
            elif fragment and target.suffix == ".html" and fragment not in page(target).ids:
                dead.append(f"{where} (no anchor #{fragment})")
    assert not dead, "\n".join(dead)


def test_a_broken_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    """`make docs` is `mkdocs build --strict`: a link to an anchor that does not exist is
    an error, not a warning (checked on a copy of what the site is built from)."""
    copy = tmp_path / "project"
    for name in ("docs", "bench/results"):
        shutil.copytree(PROJECT_DIR / name, copy / name)
    for name in ("mkdocs.yml", "CHANGELOG.md", "BENCHMARKS.md", ".chalice/config.json"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / name, copy / name)
    assert build_site(tmp_path / "site", copy).returncode == 0
    with (copy / "docs" / "security.md").open("a") as page:
        page.write("\nSee [nowhere](design.md#no-such-section).\n")
    result = build_site(tmp_path / "site", copy)
    assert result.returncode != 0
    assert "no-such-section" in result.stdout + result.stderr


def _prod_environment() -> dict[str, str]:
    chalice_config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    return dict(chalice_config["stages"]["prod"]["environment_variables"])


def test_the_sites_openapi_document_is_what_prod_serves(
    site_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = json.loads((site_dir / "openapi.json").read_text())
    # app.py as prod's Lambda imports it: prod's environment, read at import and once after.
    for name, value in _prod_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    config.get_settings.cache_clear()
    try:
        import app

        with Client(app.app, stage_name="prod", project_dir=str(PROJECT_DIR)) as client:
            served: Any = client.http.get("/openapi.json").json_body
    finally:
        config.get_settings.cache_clear()
    assert served["components"].get("securitySchemes"), "prod requires a key: documented"
    assert carried == served


def test_the_api_page_renders_every_operation_and_schema(site_dir: Path) -> None:
    document = json.loads((site_dir / "openapi.json").read_text())
    reference = _read(site_dir / "api" / "index.html")
    text = (site_dir / "api" / "index.html").read_text()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"<code>{method.upper()} {path}</code>" in text, (method, path)
    for name in document["components"]["schemas"]:
        assert name.lower() in reference.ids, name
