"""Run a course notebook headless (nbclient), as root, in a lab of its own.

Each notebook gets a fresh prefix (``VPNLAB_PREFIX``), a results folder
(``VPNLAB_COURSE_RESULTS``) where it records its key outputs and a progress file
(``VPNLAB_PROGRESS``) for its checks' attempts. The notebooks in ``notebooks/`` are the
instructor edition: their answers are in the solution blocks, so every check runs.
``answers=`` runs a notebook with other answers in their place (the student's ``...`` lines
replaced, the solution blocks dropped), and the cells that fail are kept, not raised.
Whatever happens, the lab of that prefix is removed afterwards (``vpnlab lab down --prefix P``)
and checked gone. An instructor-edition run that reaches its end leaves its executed notebook
in ``build/executed/`` (``VPNLAB_NOTEBOOK_OUT`` to change it): the course website's chapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab.helpers import assert_gone, fresh_prefix, root_snapshot
from vpnlab.course.progress import load

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = 240
EXECUTED = ROOT / "build" / "executed"


@dataclass
class Run:
    """One executed notebook: its cells with outputs, its recorded results, how long it took."""

    notebook: object
    results: dict
    seconds: float
    attempts: list  # progress.Attempt, one per check, prediction and explanation

    def text(self) -> str:
        """All stream and text outputs of all cells, joined."""
        out = []
        for cell in self.notebook.cells:
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    out.append(o.get("text", ""))
                elif "data" in o and "text/plain" in o["data"]:
                    out.append(o["data"]["text/plain"])
        return "\n".join(out)

    def images(self) -> int:
        return sum(
            "image/png" in o.get("data", {})
            for c in self.notebook.cells
            for o in c.get("outputs", [])
        )


def read_notebook(name: str):
    import jupytext

    return jupytext.read(NOTEBOOKS / f"{name}.py")


def _region(name: str) -> re.Pattern:
    """nbgrader's ``### BEGIN name`` ... ``### END name`` region, indented or not."""
    return re.compile(rf"^[ \t]*### BEGIN {name}\n.*?^[ \t]*### END {name}\n?", re.M | re.S)


SOLUTION, HIDDEN = _region("SOLUTION"), _region("HIDDEN TESTS")


def answer_with(nb, answers: dict[str, str]) -> None:
    """The student edition's cells (solution blocks and hidden tests dropped), with ``answers``
    (``{variable: expression}``) in place of the student's ``variable = ...`` lines."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = HIDDEN.sub("", SOLUTION.sub("", cell.source))
        for var, expr in answers.items():
            pattern = re.compile(rf"^{var} = \.\.\.$", re.M)
            cell.source = pattern.sub(lambda _m, v=var, e=expr: f"{v} = {e}", cell.source)


def keep_executed(nb, name: str) -> None:
    """The executed notebook into ``$VPNLAB_NOTEBOOK_OUT`` (default ``build/executed/``), with
    the SHA-256 of the ``.py`` it was made from: the course website's chapter
    (``docs/_ext/vpnlab_chapters.py`` uses it only while that source is unchanged)."""
    import nbformat

    out = Path(os.environ.get("VPNLAB_NOTEBOOK_OUT") or EXECUTED)
    out.mkdir(parents=True, exist_ok=True)
    source = hashlib.sha256((NOTEBOOKS / f"{name}.py").read_bytes()).hexdigest()
    nb.metadata["vpnlab"] = {"source_sha256": source}
    partial = out / f".{name}.ipynb.part"  # whole or not at all: a reader never sees half
    nbformat.write(nb, partial)
    partial.replace(out / f"{name}.ipynb")


def execute(name: str, tmp_path: Path, answers: dict[str, str] | None = None) -> Run:
    from nbclient import NotebookClient

    nb = read_notebook(name)
    if answers is not None:
        answer_with(nb, answers)
    prefix = fresh_prefix()
    results = tmp_path / "results"
    before = root_snapshot()
    env = {
        "VPNLAB_PREFIX": prefix,
        "VPNLAB_COURSE_RESULTS": str(results),
        "VPNLAB_PROGRESS": str(tmp_path / "progress.jsonl"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.monotonic()
    try:
        client = NotebookClient(
            nb,
            timeout=TIMEOUT_S,
            kernel_name="python3",
            allow_errors=answers is not None,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        client.execute()
        if answers is None:  # the instructor edition ran to its end: a chapter of the website
            keep_executed(nb, name)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run(
            [sys.executable, "-m", "vpnlab", "lab", "down", "--prefix", prefix],
            capture_output=True,
            timeout=60,
            check=False,
        )
    seconds = time.monotonic() - start
    assert_gone(prefix, {}, [])
    assert root_snapshot() == before, "the root namespace changed"
    file = results / f"{name}.json"
    data = json.loads(file.read_text()) if file.exists() else {}
    return Run(nb, data, seconds, load(tmp_path / "progress.jsonl"))
