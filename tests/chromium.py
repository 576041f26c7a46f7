"""Headless Chromium, as the tests that look at pages the way a student does use it (the
course website, tests/docs/test_site.py; JupyterLab, tests/notebooks/test_browser.py).

Debian's ``chromium`` and ``chromium-driver`` are installed on demand with apt-get; Ubuntu has
Chromium as a snap only (its debs of that name install the snap), so there ``snap install
chromium``. Without a browser a test fails, it never skips. Selenium runs offline (it must not
download a driver).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = (
    (Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")),  # Debian: chromium-driver
    (Path("/snap/bin/chromium"), Path("/snap/bin/chromium.chromedriver")),  # Ubuntu's snap
)
"""Chromium and its driver, as each distribution installs them."""
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
"""Headless, as root in a container, and quiet: no network of its own, no updates."""


def installed_chromium() -> tuple[Path, Path] | None:
    """The first of :data:`BROWSERS` installed whole: (chromium, its driver)."""
    return next(((b, d) for b, d in BROWSERS if b.exists() and d.exists()), None)


def ensure_chromium() -> tuple[Path, Path]:
    """Chromium and its driver; installs them (apt-get, else snap) if missing."""
    found = installed_chromium()
    if found is None and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
        argv += ["chromium", "chromium-driver"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:  # the package lists may be stale: update once, retry
            subprocess.run(
                ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300, check=False
            )
            subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
        found = installed_chromium()
    if found is None and shutil.which("snap"):  # Ubuntu: no chromium deb to install
        subprocess.run(["snap", "install", "chromium"], capture_output=True, timeout=900)
        found = installed_chromium()
    if found is None:
        pytest.fail(
            "Chromium and its driver are needed and could not be installed: on Debian "
            "'apt-get install chromium chromium-driver', on Ubuntu 'snap install chromium'"
        )
    return found


def headless_chromium(profile: Path, browser_log: bool = False):
    """A selenium driver of headless Chromium with its profile in ``profile``; with
    ``browser_log``, the page's console messages are kept (``driver.get_log("browser")``)."""
    chromium, driver = ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if browser_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(driver)), options=options)
