"""A real headless Chromium for the browser tests, driven by Playwright.

The browser is Debian's ``chromium`` package (scripts/browser.sh installs it), not a Playwright
download. Playwright's ``launch`` gives every browser a fresh temporary ``--user-data-dir``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = Path(os.environ.get("STREAMAPP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
# Every Playwright wait in the browser tests: long enough for a loaded 2-core CI machine.
TIMEOUT_MS = 20_000


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: run scripts/browser.sh (apt-get install chromium), "
            "or point STREAMAPP_CHROMIUM at a Chromium binary"
        )
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, chromium_sandbox=False, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh context; fails the test if the page threw an uncaught error."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
