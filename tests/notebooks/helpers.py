"""Run a course notebook headless (nbclient), as root, in a lab of its own.

Each notebook gets a fresh prefix (``VPNLAB_PREFIX``) and a results folder
(``VPNLAB_COURSE_RESULTS``) where it records its key outputs; the exercises' ``...`` are
replaced by the answers in ``solutions.py`` so that every check runs. Whatever happens, the
lab of that prefix is removed afterwards (``vpnlab lab down --prefix P``) and checked gone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab.helpers import assert_gone, fresh_prefix, root_snapshot

from .solutions import SOLUTIONS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = 240


@dataclass
class Run:
    """One executed notebook: its cells with outputs, its recorded results, how long it took."""

    notebook: object
    results: dict
    seconds: float

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


def solve(nb, name: str) -> int:
    """Replace ``answer_X = ...`` lines with the reference answers; returns how many."""
    answers = SOLUTIONS.get(name, {})
    done = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for var, expr in answers.items():
            pattern = re.compile(rf"^{var} = \.\.\.$", re.M)
            if pattern.search(cell.source):
                line = f"{var} = {expr}"
                cell.source = pattern.sub(lambda _m, line=line: line, cell.source)
                done += 1
    assert done == len(answers), f"{name}: {len(answers) - done} solutions found no exercise"
    return done


def execute(name: str, tmp_path: Path, solved: bool = True) -> Run:
    from nbclient import NotebookClient

    nb = read_notebook(name)
    if solved:
        solve(nb, name)
    prefix = fresh_prefix()
    results = tmp_path / "results"
    before = root_snapshot()
    env = {"VPNLAB_PREFIX": prefix, "VPNLAB_COURSE_RESULTS": str(results)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.monotonic()
    try:
        client = NotebookClient(
            nb,
            timeout=TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        client.execute()
    finally:
        keep = os.environ.get("VPNLAB_NOTEBOOK_OUT")  # keep the executed notebook to look at
        if keep:
            import nbformat

            Path(keep).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(keep) / f"{name}.ipynb")
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
    return Run(nb, data, seconds)
