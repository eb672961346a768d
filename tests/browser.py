"""Opens a report page in headless Chromium as a reader would, and fails the test on what a reader would
see go wrong: a figure that does not decode, a console error, a request leaving the file (the page is
meant to be self-contained), a missing table. `make test` installs Debian's `chromium`; RAYSWEEP_CHROMIUM
names another Chromium or Chrome binary."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

BROWSER_ENV = "RAYSWEEP_CHROMIUM"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SeenPage:
    figures: dict[str, int]  # each figure's <h3> name -> its image's naturalWidth
    tables: list[list[str]]  # each <table>'s header cells
    text: str  # the page's visible text


def chromium_binary() -> str:
    """The browser the page tests drive; a missing one fails the test (the tests are part of `make test`)."""
    binary = os.environ.get(BROWSER_ENV) or shutil.which("chromium")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(f"no Chromium for the report-page test: `make test` installs Debian's (apt-get install chromium), "
                    f"or set {BROWSER_ENV} to a Chromium/Chrome binary (got {binary or 'none on PATH'})",
                    pytrace=False)
    return binary


def open_report_page(page_file: Path, screenshot: Path) -> SeenPage:
    """Loads `page_file` over file://, saves a full-page screenshot, and asserts: no console error, no page
    error, no request but the page itself and data: URIs, every <img> decoded (naturalWidth > 0)."""
    from playwright.sync_api import sync_playwright

    url = page_file.resolve().as_uri()
    requests, errors = [], []
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to start as root, which is how CI and containers run us.
        browser = p.chromium.launch(executable_path=chromium_binary(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            # Belt and braces: a request for anything outside the file is answered with nothing, not fetched.
            page.route("**/*", lambda route: route.continue_() if route.request.url == url
                       or route.request.url.startswith("data:") else route.abort())
            page.goto(url, wait_until="load")
            images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            names = page.eval_on_selector_all("h3", "hs => hs.map(h => h.textContent.trim())")
            tables = page.eval_on_selector_all(
                "table", "ts => ts.map(t => Array.from(t.querySelectorAll('th'), th => th.textContent.trim()))")
            text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    outside = [u for u in requests if u != url and not u.startswith("data:")]
    assert not outside, f"{page_file} requested {outside}: the page must be self-contained"
    assert not errors, f"{page_file}: {errors}"
    assert len(images) == len(names), f"{page_file}: {len(images)} images under {len(names)} figure headings"
    undecoded = [name for name, (complete, width) in zip(names, images) if not (complete and width > 0)]
    assert not undecoded, f"{page_file}: figures that did not decode: {undecoded}"
    shot = screenshot.read_bytes()
    assert shot.startswith(PNG_MAGIC) and len(shot) > 20_000, f"{screenshot}: {len(shot)} bytes"
    return SeenPage(figures=dict(zip(names, (width for _, width in images))), tables=tables, text=text)
