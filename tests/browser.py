"""Open a local HTML file in headless Debian Chromium (selenium + chromedriver) and report what a reader would see.

No network: Chromium starts with a fresh profile and its background services off, and Selenium
Manager is not asked for a driver (`SE_OFFLINE`, explicit driver and browser paths).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def chromium_paths() -> tuple[str | None, str | None]:
    """(browser, driver) executables, or None where absent."""
    browser = next(
        (p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.access(p, os.X_OK)), None
    )
    driver = next(
        (p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and os.access(p, os.X_OK)),
        None,
    )
    return browser, driver


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--hide-scrollbars",
)


@dataclass
class PageCheck:
    console: list[dict] = field(default_factory=list)
    """Browser log entries (level, message)."""
    sections: list[tuple[str, str]] = field(default_factory=list)
    """(id, heading text) of each top-level <section>, in page order."""
    images: list[dict] = field(default_factory=list)
    """alt, complete, naturalWidth of every <img>."""
    requests: list[str] = field(default_factory=list)
    """URLs the page fetched beyond itself (resource timing)."""
    page_height: int = 0
    overflow_x: int = 0
    """How many CSS pixels the page is wider than the window (a horizontal scroll bar when > 0)."""
    covered: int = 0
    """CSS pixels from the top of the page that the stitched screenshot's captures cover."""
    screenshot: bytes = b""

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.console if e.get("level") == "SEVERE"]


def start_chromium():
    """(headless Chromium driver, its throwaway profile folder); quit the driver and remove the folder after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    profile = tempfile.mkdtemp(prefix="rmtension-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts), profile


def open_page(html_file: Path) -> PageCheck:
    """Load `html_file`, collect console messages, sections, images and requests, and take a full-page screenshot."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver, profile = start_chromium()
    try:
        driver.set_page_load_timeout(60)
        driver.get(Path(html_file).resolve().as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(
                "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"
            )
        )
        out = PageCheck()
        out.sections = [
            tuple(x)
            for x in driver.execute_script(
                "return [...document.querySelectorAll('body > section')]"
                ".map(s => [s.id, (s.querySelector('h2') || {}).textContent || ''])"
            )
        ]
        out.images = driver.execute_script(
            "return [...document.images].map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth}))"
        )
        out.requests = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))"
        )
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        out.page_height = int(size["height"])
        out.overflow_x = int(
            driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
        )
        out.screenshot, out.covered = _scrolled_screenshot(driver, out.page_height)
        out.console = [
            {"level": e.get("level"), "message": e.get("message")} for e in driver.get_log("browser")
        ]
        return out
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


SHOT_SCALE = 0.5
"""The full-page screenshot is stitched from viewport captures at this scale."""


def _scrolled_screenshot(driver, page_height: int) -> tuple[bytes, int]:
    """(The whole page as one PNG at `SHOT_SCALE`, stitched from one capture per scrolled viewport; how
    many CSS pixels from the top the captures cover).

    One capture beyond the viewport renders the whole page as a single surface; a report 50,000 px
    tall crashed the tab that way in CI, so the page is scrolled a viewport at a time instead.
    """
    from PIL import Image

    view_h = int(driver.execute_script("return window.innerHeight"))
    view_w = int(driver.execute_script("return window.innerWidth"))
    ratio = float(driver.execute_script("return window.devicePixelRatio")) or 1.0
    sheet = Image.new("RGB", (round(view_w * SHOT_SCALE), round(page_height * SHOT_SCALE)), "white")
    y = covered = 0
    while y < page_height:
        top = int(
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1]; window.scrollTo(0, arguments[0]);"
                "requestAnimationFrame(() => requestAnimationFrame(() => done(window.scrollY)));",
                y,
            )
        )
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        tile = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        tile = tile.resize((round(tile.width / ratio * SHOT_SCALE), round(tile.height / ratio * SHOT_SCALE)))
        sheet.paste(tile, (0, round(top * SHOT_SCALE)))
        if top <= covered:  # contiguous with what is already captured
            covered = max(covered, top + round(tile.height / ratio))
        y = max(y, top) + view_h
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue(), covered


def blankness(png: bytes) -> dict:
    """Size, number of distinct colours and fraction of non-white pixels of a PNG."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    flat = img.reshape(-1, 3)
    colours = len(np.unique(flat[:: max(1, len(flat) // 400_000)], axis=0))
    non_white = float((flat.min(axis=1) < 245).mean())
    return {"width": img.shape[1], "height": img.shape[0], "colours": colours, "non_white": non_white}
