"""Debian's chromium driven by Playwright, for the web page's tests and its screenshot (testkit/screenshot.py).

Playwright's own browser download (`playwright install`) is never used: it needs the internet. `just browser`
installs Debian's `chromium`, and Playwright launches that executable. `browser_missing()` says why the browser tests
cannot run here, or None when they can.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """HEARTH_CHROMIUM, or Debian's chromium where it is installed."""
    given = os.environ.get("HEARTH_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    return next((p for p in CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("chromium")


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (just setup-dev installs it)"
    if chromium_path() is None:
        return "no chromium at /usr/bin/chromium (just browser installs Debian's; or set HEARTH_CHROMIUM)"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium (Debian's) under Playwright, closed at the end."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError(browser_missing() or "no chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
