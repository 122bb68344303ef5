"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Screenshots the browser tests take (git-ignored); look at them when a page test fails.
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


def _require_browser() -> None:
    """Skip locally without Chromium, but fail in CI, where a skip would hide missing coverage."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which("chromium"):
        return
    if os.environ.get("CI"):
        pytest.fail("chromium/chromedriver missing but CI is set: install Debian packages chromium chromium-driver", pytrace=False)
    pytest.skip("chromium and chromium-driver not installed (Debian packages chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1100"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver (by its PID) and the browser it started


def screenshot(driver: object, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def console_errors(driver: object) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]


_READ_PIXELS = """
const canvas = arguments[0], x = arguments[1], y = arguments[2], w = arguments[3], h = arguments[4];
const data = canvas.getContext('2d').getImageData(x, y, w, h).data;
let s = '';
for (let i = 0; i < data.length; i += 8192) s += String.fromCharCode.apply(null, data.subarray(i, i + 8192));
return btoa(s);
"""


def canvas_pixels(driver: object, canvas: object, x: int, y: int, w: int, h: int) -> np.ndarray:
    """RGBA pixels of a canvas region as read back from the browser, shape (h, w, 4)."""
    raw = base64.b64decode(driver.execute_script(_READ_PIXELS, canvas, x, y, w, h))  # type: ignore[attr-defined]
    return np.frombuffer(raw, np.uint8).reshape(h, w, 4)
