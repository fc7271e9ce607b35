"""A headless Chromium driven by selenium: the web UI test's browser and bench/orchestration's.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and the
`selenium` package (the `test` extra); imported only when a browser is started.
"""

from __future__ import annotations

import shutil
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1600,1000")


def browser_paths() -> tuple[str | None, str | None]:
    """The first browser of `BROWSERS` and the driver found on PATH (None where absent)."""
    return next(filter(None, map(shutil.which, BROWSERS)), None), shutil.which(DRIVER)


def headless_chrome(browser_path: str, driver_path: str):
    """A headless Chromium driven by selenium, with a private profile folder (the caller removes it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="synground-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = browser_path
    return webdriver.Chrome(options=options, service=Service(driver_path)), profile
