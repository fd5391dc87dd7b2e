"""Headless Chromium from Debian's package, driven by Playwright, for the dashboard.

The browser tests and ``make screenshot`` use the system's ``/usr/bin/chromium``
(``apt-get install chromium``; ``.ci/run`` installs it). Playwright's own browser
download (``playwright install``) is never used: it fetches a build from outside the
package registries, which these machines cannot reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches the network on the browser's own account.
ARGS = (
    "--headless",
    "--no-sandbox",  # running as root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)


class ChromiumMissing(RuntimeError):
    """Chromium is not installed where the tests and the screenshot expect it."""


@contextmanager
def chromium(executable: Path = CHROMIUM) -> Iterator[Browser]:
    """A running headless Chromium; closed afterwards. ChromiumMissing if not installed."""
    if not executable.is_file():
        raise ChromiumMissing(
            f"{executable} is not installed: run `apt-get install -y chromium` "
            "(Debian's package; .ci/run installs it). Never `playwright install`."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=list(ARGS))
        try:
            yield browser
        finally:
            browser.close()
