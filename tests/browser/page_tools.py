"""Playwright helpers for the Streamlit app: wait on its script state, catch its errors, draw, take screenshots."""

from __future__ import annotations

import math
import re
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Error, Locator, Page, expect

CHROMIUM = "/usr/bin/chromium"  # Debian's package; never a browser downloaded by `playwright install`
LAUNCH_FLAGS = [  # what works here: root (so no sandbox), no GPU, a closed network
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}  # wide enough for the Run form's four columns and the Map's legend
SETTLE_MS = 60_000  # a rerun on a busy 2-core machine (a run's driver and Ray beside it) can take many seconds
MAX_SCREENSHOT_HEIGHT = 12_000  # px; Chromium refuses huge captures, and no page of the app is that long

# Known noise, not the app's fault: opened at a deep link such as /map, Streamlit's client first tries that path
# as the server's base path (GET /map/_stcore/health and /map/_stcore/host-config, both 404), then falls back to
# the root and connects. The browser logs each 404 as a console error.
_DEEP_LINK_PROBE = re.compile(r"^https?://[^/]+/[^/]+/_stcore/(health|host-config)$")

_errors: dict[Page, list[str]] = {}  # per watched page: console errors and uncaught exceptions not yet reported


def watch(page: Page) -> Page:
    """Record the page's console errors and uncaught exceptions, so `settle` can fail on them."""
    found = _errors.setdefault(page, [])

    def on_console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource") and _DEEP_LINK_PROBE.match(url):
            return
        found.append(f"console error: {message.text} (at {url or 'unknown'})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: found.append(f"uncaught exception: {error}"))
    return page


def take_errors(page: Page) -> list[str]:
    """The page's errors since the last call (and forget them)."""
    found = _errors.get(page, [])
    taken = list(found)
    found.clear()
    return taken


def assert_healthy(page: Page) -> None:
    """No Streamlit exception box on screen and no browser error since the last check."""
    boxes = page.get_by_test_id("stException")
    if boxes.count():
        raise AssertionError("Streamlit shows an exception: " + " | ".join(boxes.all_inner_texts()))
    errors = take_errors(page)
    if errors:
        raise AssertionError("the browser reported errors:\n" + "\n".join(errors))


def settle(page: Page, timeout_ms: int = SETTLE_MS) -> None:
    """Wait until the app is connected and its script is not running, then check it is healthy."""
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout_ms)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_ms)
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=timeout_ms)
    assert_healthy(page)


def sidebar_link(page: Page, title: str) -> Locator:
    """The navigation entry of a page, by its visible title."""
    return page.get_by_role("navigation", name="App pages").get_by_role("link", name=title, exact=True)


def page_title(page: Page, title: str) -> Locator:
    return page.get_by_role("heading", level=1, name=title, exact=True)


def open_from_sidebar(page: Page, title: str) -> None:
    """Click a page in the sidebar and wait until it has drawn its title."""
    sidebar_link(page, title).click()
    expect(page_title(page, title)).to_be_visible(timeout=SETTLE_MS)
    settle(page)


def draw_lasso(page: Page, area: Locator, corners: int = 48, fill: float = 0.9) -> None:
    """Drag a closed elliptical lasso with the real mouse over `area`, covering `fill` of its width and height."""
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    if box is None:
        raise AssertionError("the plot area is not on screen")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] * fill / 2, box["height"] * fill / 2
    page.mouse.move(cx + rx, cy)
    page.mouse.down()
    for corner in range(1, corners + 1):  # back to the start point: the loop is closed
        angle = 2 * math.pi * corner / corners
        page.mouse.move(cx + rx * math.cos(angle), cy + ry * math.sin(angle), steps=3)
    page.mouse.up()


def full_page_screenshot(page: Page, path: Path) -> Path | None:
    """Screenshot the whole app, not just the viewport; returns None when the page cannot be captured (closed)."""
    # Streamlit scrolls inside its main element, not the document: grow the viewport to the content, then restore.
    size = page.viewport_size or VIEWPORT
    try:
        height = page.evaluate(
            """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stAppViewContainer"]', 'body']
                   .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))"""
        )
        tall = max(size["height"], min(height, MAX_SCREENSHOT_HEIGHT))
        page.set_viewport_size({"width": size["width"], "height": tall})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=path, full_page=True)
        finally:
            page.set_viewport_size(size)
    except Error:
        return None
    return path
