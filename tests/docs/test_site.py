"""The course website: ``scripts/docs.sh`` builds it with every warning an error, and headless
Chromium (Debian's ``chromium`` and ``chromium-driver``, or Ubuntu's snap, installed on demand
by ``tests/chromium.py``) finds every page loading, every link to a local page and
anchor resolving, and every figure of the notebook chapters drawn.

The chapters have their outputs only where the notebook tests executed them (``build/executed/``);
``scripts/test.sh`` runs this file after the whole suite with ``VPNLAB_DOCS_STRICT=1``, so there
every chapter must have them. Run alone, a chapter without outputs is built with a note, and its
figure check is skipped with that reason.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

from tests.chromium import headless_chromium

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
NOT_EXECUTED = "built without running its notebook"
BUILD_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> subprocess.CompletedProcess[str]:
    """``scripts/docs.sh OUT`` run once for the module (sphinx-build -W --keep-going)."""
    out = tmp_path_factory.mktemp("docs") / "site"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/docs.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, f"scripts/docs.sh failed:\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def site(build) -> Path:
    """The site as ``scripts/docs.sh OUT`` built it: where it says it is."""
    return Path(build.stdout.strip()).parent


def test_the_build_puts_the_site_in_out_and_nothing_beside_it(build, site):
    assert site.name == "site" and (site / "index.html").is_file()
    assert [p.name for p in site.parent.iterdir()] == ["site"]  # no doctrees, no jupyter_execute
    without_outputs = [
        name
        for name in CHAPTERS
        if NOT_EXECUTED in (ROOT / "docs" / "chapters" / f"{name}.ipynb").read_text()
    ]
    if without_outputs:  # run alone, not after the notebook tests: said on stderr, by name
        assert f"{len(without_outputs)} chapter(s) built without outputs" in build.stderr
        assert ", ".join(without_outputs) in build.stderr
    else:
        assert "built without outputs" not in build.stderr


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on the loopback (as a reader's browser gets it), for the module."""
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Not a line per request on the test's stderr."""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"), browser_log=True)
    try:
        yield driver
    finally:
        driver.quit()


def pages(site: Path) -> list[str]:
    """Every HTML page of the site, as a path relative to it (the theme's assets left out)."""
    return sorted(
        str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts
    )


def load(driver, url: str) -> dict:
    """Open ``url`` and read what the checks need: title, links, ids, failed loads."""
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url} did not finish loading"
        time.sleep(0.1)
    page = driver.execute_script(
        """return {
            title: document.title,
            h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
            links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
            ids: Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.name),
        }"""
    )
    page["errors"] = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return page


def test_every_page_loads_and_every_internal_link_resolves(site, server, browser):
    seen: dict[str, dict] = {}
    for name in pages(site):
        seen[name] = load(browser, server + name)
    assert len(seen) >= len(CHAPTERS) + 10  # the chapters, the reference pages, the index
    broken, failed_loads = [], []
    for name, page in seen.items():
        assert page["title"], f"{name}: no title"
        assert page["h1"] or name in ("genindex.html", "search.html"), f"{name}: no heading"
        failed_loads += [f"{name}: {e}" for e in page["errors"]]
        for href in page["links"]:
            if not href.startswith(server):
                continue  # another site (none is reachable from here): not followed
            target, anchor = urldefrag(href)
            path = unquote(urlsplit(target).path).removeprefix("/")
            if path == "" or path.endswith("/"):
                path += "index.html"
            if not (site / path).is_file():
                broken.append(f"{name} -> {href} (no such page)")
                continue
            if anchor and path.endswith(".html"):
                ids = seen.get(path) or load(browser, server + path)
                if anchor not in ids["ids"]:
                    broken.append(f"{name} -> {href} (no such anchor)")
    assert broken == [], "\n".join(broken)
    assert failed_loads == [], "\n".join(failed_loads)  # a missing image, script or style


def figures_in(chapter: Path) -> int:
    """The figures a chapter's notebook holds (image outputs), as the site was built from it."""
    nb = json.loads(chapter.read_text())
    return sum(
        any(k.startswith("image/") for k in o.get("data", {}))
        for c in nb["cells"]
        for o in c.get("outputs", [])
    )


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_chapter_shows_its_figures(name, site, server, browser):
    page = load(browser, f"{server}chapters/{name}.html")
    assert page["h1"] and page["h1"][0].startswith(name[:2].lstrip("0") or "0")  # "3. Routing"
    if NOT_EXECUTED in browser.page_source:
        assert os.environ.get("VPNLAB_DOCS_STRICT") != "1"  # the strict build refuses those
        pytest.skip(f"{name} has no executed notebook (run tests/notebooks first)")
    code_outputs = browser.execute_script("return document.querySelectorAll('.cell_output').length")
    assert code_outputs > 0, f"{name}: executed, yet no cell output on the page"
    wanted = figures_in(ROOT / "docs" / "chapters" / f"{name}.ipynb")
    if "plt.show()" in (ROOT / "notebooks" / f"{name}.py").read_text():
        assert wanted >= 1, f"{name} draws figures, and its executed notebook holds none"
    drawn = browser.execute_script(
        """return Array.from(document.querySelectorAll('.cell_output img'))
            .filter(i => i.complete && i.naturalWidth > 100).length"""
    )
    assert drawn == wanted, f"{name}: {drawn} of its {wanted} figures drawn"
    shots = os.environ.get("VPNLAB_SCREENSHOT_DIR")
    if shots and wanted:  # the first figure in view, to look at
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.execute_script(
            "document.querySelector('.cell_output img').scrollIntoView({block: 'center'})"
        )
        browser.save_screenshot(str(Path(shots) / f"site-{name}.png"))
