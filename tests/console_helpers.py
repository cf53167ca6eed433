"""Driving the web console for tests and ``scripts/console_screenshots.py``: a ``pystream
console`` process, Debian's chromium headless through Selenium, and screenshots."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from service_process import ServiceProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The line `pystream serve` prints for console.enable, as `pystream console` does.
CONSOLE_LINE = re.compile(r"pystream console listening on (https?://\S+)")


class ConsoleProcess(ServiceProcess):
    """``pystream console --port 0`` against ``bootstrap``; ``url`` once it listens."""

    listening = CONSOLE_LINE
    log_name = "console.log"
    what = "pystream console"

    def __init__(self, directory: Path, bootstrap: str, *extra: str) -> None:
        super().__init__(directory)
        self.bootstrap = bootstrap
        self.extra = list(extra)

    def arguments(self) -> list[str]:
        return ["console", "--bootstrap-server", self.bootstrap, "--port", "0", *self.extra]


def chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """Headless Debian chromium (scripts/test installs it; missing, this fails loudly)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def artifacts_dir(default: Path) -> Path:
    """``$PYSTREAM_TEST_ARTIFACTS/console`` if set, else ``default``."""
    root = os.environ.get("PYSTREAM_TEST_ARTIFACTS")
    directory = Path(root) / "console" if root else default
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def full_page_screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """The whole page, beyond the window's height, as PNG (Chrome DevTools' capture)."""
    layout = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": layout["width"], "height": layout["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
