"""The course's notebooks as the website's chapters, one chapter a notebook.

The notebooks have no stored outputs and need root and a lab to run (minutes each), so the
site does not run them: the notebook tests (``tests/notebooks/helpers.py``) keep every
notebook they executed in ``build/executed/`` with the hash of its ``.py`` source, and this
extension copies each one into ``docs/chapters/`` (generated, not tracked) before Sphinx
reads the sources; myst-nb renders them as they are (``nb_execution_mode = "off"``).

A notebook with no executed copy, or one executed from an older source, becomes a chapter
without outputs and a note saying so; with ``vpnlab_chapters_strict`` (``scripts/docs.sh
--strict``, ``VPNLAB_DOCS_STRICT=1``) it is a warning naming them, which ``-W`` makes an error.

The site is the students' edition: nbgrader's solution blocks and hidden tests are taken out
of the code and the outputs of those exercise cells cleared (the reader answers them), unless
``vpnlab_chapters_solutions`` (``VPNLAB_DOCS_SOLUTIONS=1``, an instructor's build).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from sphinx.application import Sphinx
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "executed"
CHAPTERS = "chapters"
SOURCE_HASH = "source_sha256"
"""The key, in an executed notebook's ``metadata.vpnlab``, of its ``.py`` source's SHA-256."""

log = logging.getLogger(__name__)


def _region(name: str) -> re.Pattern[str]:
    """nbgrader's ``### BEGIN name`` ... ``### END name`` region, indented or not."""
    return re.compile(rf"^[ \t]*### BEGIN {name}\n.*?^[ \t]*### END {name}\n?", re.M | re.S)


SOLUTION, HIDDEN = _region("SOLUTION"), _region("HIDDEN TESTS")


def source_hash(py: Path) -> str:
    return hashlib.sha256(py.read_bytes()).hexdigest()


def executed_copy(py: Path, executed: Path) -> nbformat.NotebookNode | None:
    """The executed notebook of ``py`` if there is one made from this very source."""
    path = executed / f"{py.stem}.ipynb"
    if not path.exists():
        return None
    nb = nbformat.read(path, as_version=4)
    if nb.metadata.get("vpnlab", {}).get(SOURCE_HASH) != source_hash(py):
        return None
    return nb


def students_edition(nb: nbformat.NotebookNode) -> None:
    """Solution blocks and hidden tests out of the code; the answered cells' outputs cleared."""
    for cell in nb.cells:
        if cell.cell_type != "code" or "### BEGIN" not in cell.source:
            continue
        answered = SOLUTION.search(cell.source) is not None
        cell.source = HIDDEN.sub("", SOLUTION.sub("", cell.source)).rstrip("\n")
        if answered:
            cell.outputs = []
            cell.execution_count = None


def not_executed_note(nb: nbformat.NotebookNode) -> None:
    note = (
        "```{note}\nThis chapter was built without running its notebook, so its outputs "
        "and figures are missing: run the notebook tests as root "
        "(`sudo scripts/test.sh tests/notebooks`), then `scripts/docs.sh` again.\n```"
    )
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(note))


def write_if_changed(path: Path, nb: nbformat.NotebookNode) -> None:
    text = nbformat.writes(nb)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def scratch_with_doctrees(app: Sphinx) -> None:
    """myst-nb's scratch folder (the outputs' images before Sphinx copies them into the site)
    inside the doctrees folder, not beside the site: myst-nb puts it in the site's parent, so
    ``scripts/docs.sh ~/public_html/vpnlab`` left a ``jupyter_execute/`` in ``~/public_html``."""
    scratch = Path(app.doctreedir) / "jupyter_execute"
    app.env.mystnb_config = app.env.mystnb_config.copy(output_folder=str(scratch))


def make_chapters(app: Sphinx) -> None:
    """``docs/chapters/NN_name.ipynb`` for every ``notebooks/NN_name.py``."""
    config = app.config
    executed = Path(config.vpnlab_chapters_executed)
    out = Path(app.srcdir) / CHAPTERS
    out.mkdir(exist_ok=True)
    sources = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    wanted = {f"{py.stem}.ipynb" for py in sources}
    for old in out.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    missing = []
    for py in sources:
        nb = executed_copy(py, executed)
        if nb is None:
            missing.append(py.stem)
            nb = jupytext.read(py)
            not_executed_note(nb)
        if not config.vpnlab_chapters_solutions:
            students_edition(nb)
        nb.metadata.pop("jupytext", None)
        write_if_changed(out / f"{py.stem}.ipynb", nb)
    if missing and config.vpnlab_chapters_strict:  # a warning: -W makes it the build's error
        log.warning(
            f"{len(missing)} chapter(s) have no executed notebook in {executed} made from "
            f"their current source: {', '.join(missing)} (run the notebook tests as root: "
            "sudo scripts/test.sh tests/notebooks)",
            type="vpnlab",
            subtype="not_executed",
        )
    elif missing:  # said on stderr: scripts/docs.sh runs Sphinx quiet (-q), which hides info
        print(
            f"[vpnlab] {len(missing)} chapter(s) built without outputs (their notebooks not "
            f"executed from their current source): {', '.join(missing)}",
            file=sys.stderr,
        )


def setup(app: Sphinx) -> dict[str, object]:
    env = os.environ.get
    app.add_config_value("vpnlab_chapters_executed", env("VPNLAB_EXECUTED", str(EXECUTED)), "")
    app.add_config_value("vpnlab_chapters_strict", env("VPNLAB_DOCS_STRICT") == "1", "", bool)
    app.add_config_value("vpnlab_chapters_solutions", env("VPNLAB_DOCS_SOLUTIONS") == "1", "", bool)
    app.connect("builder-inited", make_chapters)
    app.connect("builder-inited", scratch_with_doctrees, priority=900)  # after myst-nb's
    return {"parallel_read_safe": True, "parallel_write_safe": True}
