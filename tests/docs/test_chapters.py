"""The chapters of the course website (``docs/_ext/vpnlab_chapters.py``), without a build: an
executed notebook counts only for the source it was made from, and the site shows the
students' edition (no solution, no hidden test, no answered output)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chapters():
    spec = importlib.util.spec_from_file_location(
        "vpnlab_chapters", ROOT / "docs" / "_ext" / "vpnlab_chapters.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    answered = nbformat.v4.new_code_cell(
        "answer_3_1 = ...\n### BEGIN SOLUTION\nanswer_3_1 = '128.0.0.0/1'\n### END SOLUTION\n"
        "course.check_answer('3.1', answer_3_1)\n### BEGIN HIDDEN TESTS\nassert True\n"
        "### END HIDDEN TESTS\n"
    )
    answered.outputs = [nbformat.v4.new_output("stream", text="3.1: correct\n")]
    figure = nbformat.v4.new_code_cell("plt.show()")
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    nb.cells = [nbformat.v4.new_markdown_cell("# 3. Routing"), figure, answered]
    return nb


def test_students_edition_takes_out_the_answers_and_keeps_the_figures(chapters):
    nb = exercise_notebook()
    chapters.students_edition(nb)
    figure, answered = nb.cells[1], nb.cells[2]
    assert answered.source == "answer_3_1 = ...\ncourse.check_answer('3.1', answer_3_1)"
    assert answered.outputs == []  # "correct" under an unanswered cell would mislead
    assert "image/png" in figure.outputs[0]["data"]


def test_an_executed_notebook_counts_for_its_own_source_only(chapters, tmp_path):
    py = tmp_path / "03_routing.py"
    py.write_text("# %%\nprint('routes')\n")
    executed = tmp_path / "executed"
    executed.mkdir()
    assert chapters.executed_copy(py, executed) is None  # never executed
    nb = exercise_notebook()
    nb.metadata["vpnlab"] = {"source_sha256": hashlib.sha256(py.read_bytes()).hexdigest()}
    nbformat.write(nb, executed / "03_routing.ipynb")
    assert chapters.executed_copy(py, executed).cells[0].source == "# 3. Routing"
    py.write_text("# %%\nprint('routes, changed')\n")
    assert chapters.executed_copy(py, executed) is None  # executed from an older source
