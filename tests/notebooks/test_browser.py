"""The course as a student sees it: JupyterLab renders a notebook in headless Chromium.

JupyterLab is started the way ``scripts/netns-lab.sh notebook`` starts it (loopback, a token,
``--allow-root``), on a free port, serving a copy of ``notebooks/`` in which notebook 0 has
been executed (so its topology figure is there). Chromium (Debian's ``chromium`` and
``chromium-driver``, Ubuntu's snap: ``tests/chromium.py``) is installed on demand; without it
the test fails, it never silently passes. The screenshot is kept in
``$VPNLAB_SCREENSHOT_DIR`` (or pytest's tmp dir).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from tests.chromium import headless_chromium

from .helpers import NOTEBOOKS, execute

pytestmark = pytest.mark.lab

NOTEBOOK = "00_setup_topology"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_jupyter(root: Path, port: int, token: str, home: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
    }
    argv = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--allow-root",
        "--no-browser",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        f"--LabApp.default_url=/lab/tree/{NOTEBOOK}.ipynb",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
    ]
    log = open(home / "jupyter.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.terminate()
    raise AssertionError("JupyterLab did not start:\n" + (home / "jupyter.log").read_text()[-2000:])


def test_jupyterlab_renders_the_course_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # the course, with notebook 0 executed as a student would have it after "Run all"
    root = tmp_path / "course"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns("work", ".ipynb_checkpoints"))
    run = execute(NOTEBOOK, tmp_path, answers={})  # the student edition: nothing answered
    assert run.text().count("not answered yet") == 4  # "Run all" goes through them
    nbformat.write(run.notebook, root / f"{NOTEBOOK}.ipynb")
    os.utime(root / f"{NOTEBOOK}.py")  # jupytext's pairing: the .py must not look older

    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "jupyter"
    home.mkdir()
    driver = headless_chromium(tmp_path / "chromium-profile")  # first: no browser, no server left
    try:
        server = start_jupyter(root, port, token, home)  # stops its own process if it fails
    except BaseException:
        driver.quit()
        raise
    shots = Path(os.environ.get("VPNLAB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        # without the token: the login page, not the course
        driver.get(f"http://127.0.0.1:{port}/lab")
        WebDriverWait(driver, 30).until(lambda d: "token" in d.page_source.lower())
        assert "0. Setup and topology" not in driver.page_source
        driver.get(f"http://127.0.0.1:{port}/?token={token}")  # default_url: notebook 0
        WebDriverWait(driver, 90).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedMarkdown h1")
        )
        WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedImage img")
        )
        heading = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedMarkdown h1")
        assert heading.text.startswith("0. Setup and topology")
        # JupyterLab renders the cells bit by bit (slower when the machine is busy): wait
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) >= 15
        )
        cells = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
        assert len(cells) >= 15
        image = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedImage img")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", image)
        time.sleep(1.0)
        assert image.size["width"] > 300  # the topology figure is drawn, not a broken image
        shot = shots / "course-00-topology.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        # the kernel the course uses started (status bar: "Python 3 (ipykernel) | Idle")
        WebDriverWait(driver, 60).until(
            lambda d: "Idle" in d.find_element(By.CSS_SELECTOR, "body").text
        )
    except Exception:
        driver.save_screenshot(str(shots / "course-failure.png"))  # what the browser showed
        (shots / "course-failure.txt").write_text(driver.find_element(By.TAG_NAME, "body").text)
        raise
    finally:
        driver.quit()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
