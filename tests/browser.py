"""A real headless Chromium for the end-to-end tests: Debian's `chromium`, driven by Playwright,
with a fresh profile per test. No browser is downloaded; `scripts/test` installs the package.

The browser identifies itself as an ordinary desktop Chrome: the service rightly counts
`HeadlessChrome` as a bot, and these tests are about what a person's browser does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright

from tests.conftest import BROWSER

CHROMIUM = os.environ.get("ANALYTICS_TEST_CHROMIUM", "/usr/bin/chromium")
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
# every request a script on the page starts, as "METHOD URL", in window.__requests: counted where
# it is made, so that "exactly one request" needs no waiting
RECORD_REQUESTS = """
window.__requests = [];
const fetch0 = window.fetch;
window.fetch = function (url, init) {
  window.__requests.push(((init && init.method) || "GET") + " " + String(url));
  return fetch0.apply(this, arguments);
};
const beacon0 = Navigator.prototype.sendBeacon;
Navigator.prototype.sendBeacon = function (url) {
  window.__requests.push("BEACON " + String(url));
  return beacon0.apply(this, arguments);
};
"""
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@dataclass
class Browser:
    context: BrowserContext
    errors: list[str] = field(default_factory=list)

    async def page(self, http_cache: bool = True) -> Page:
        """A new tab. Reads may be cached for 2 s by design; a test that moves faster than a
        person and wants the newest numbers at every step turns the browser's cache off."""
        page = await self.context.new_page()
        if not http_cache:
            cdp = await self.context.new_cdp_session(page)
            await cdp.send("Network.enable")
            await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.errors.append(f"page error: {err}"))
        return page

    @staticmethod
    async def requests(page: Page) -> list[str]:
        """What scripts on the page asked for, service address left out."""
        found: list[str] = await page.evaluate("window.__requests")
        return [re.sub(r"https?://[^/]+", "", r) for r in found]

    async def requests_until(self, page: Page, n: int) -> list[str]:
        """`requests`, once there are at least `n` (a request may start a task after the event
        that causes it); waits at most 10 s."""
        for _ in range(400):
            found = await self.requests(page)
            if len(found) >= n:
                return found
            await asyncio.sleep(0.025)
        return await self.requests(page)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")


@asynccontextmanager
async def chromium(
    profile: Path, preferences: dict[str, Any] | None = None
) -> AsyncIterator[Browser]:
    """Chromium on a fresh profile in `profile`; `preferences` seed its Preferences file."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/test does)")
    if preferences:
        (profile / "Default").mkdir(parents=True)
        (profile / "Default" / "Preferences").write_text(json.dumps(preferences))
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            user_agent=BROWSER,
            viewport={"width": 1100, "height": 820},
        )
        await context.add_init_script(RECORD_REQUESTS)
        try:
            yield Browser(context)
        finally:
            await context.close()


async def screenshot(page: Page, name: str, selector: str | None = None) -> Path:
    """The whole page, or the element `selector` picks, as test-artifacts/`name`."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    if selector:
        await page.locator(selector).screenshot(path=str(path))
    else:
        await page.screenshot(path=str(path), full_page=True)
    return path
