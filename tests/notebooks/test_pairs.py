"""The course's files: jupytext pairs in sync, no stored outputs, every design-notes step taught.

No root needed: these read files only.
"""

from __future__ import annotations

import json

import jupytext
import pytest

from .helpers import NOTEBOOKS

NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
STEPS = [
    "Init(PORT)",
    "CreateTunDev",
    "Ifconfig",
    "ServerConnection",
    "ClientConnection",
    "SetRouting(1)",
    "SetRouting(0)",
    "TunSelected",
    "SockSelected",
    "CleanUp",
    "masquerade",
    "2.5 s",
    "6 s",
    "TUNSETIFF",
    "IFF_NO_PI",
    "IFF_TAP",
    "conntrack",
    "udpencap:esp",
    "raw:ip:tcp:ftp",
    "select",
    "keepalive",
]


def test_seven_notebooks():
    assert [n[:2] for n in NAMES][:8] == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync_and_without_outputs(name):
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert [c["source"] for c in py.cells] == [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in raw["cells"]
    ], f"{name}: run `jupytext --sync notebooks/{name}.py`"
    assert all(not c.get("outputs") for c in raw["cells"]), f"{name}.ipynb has outputs"
    assert raw["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", NAMES)
def test_exercises_summary_cleanup(name):
    text = (NOTEBOOKS / f"{name}.py").read_text()
    assert "## Exercises" in text and "## What you learned" in text
    assert text.count("course.check_answer(") >= 3
    checks = text.count("course.check_answer(")
    assert text.count("### BEGIN SOLUTION") >= checks  # each answer in a solution block
    assert "lab.down()" in text


def test_every_step_of_the_design_notes_is_taught():
    text = "\n".join((NOTEBOOKS / f"{n}.py").read_text() for n in NAMES)
    missing = [step for step in STEPS if step not in text]
    assert not missing, f"not in any notebook: {missing}"


def test_instructor_edition_has_hidden_tests():
    """nbgrader's hidden tests: the lab measured what the solution says (stripped for students)."""
    with_hidden = [
        n for n in NAMES if "### BEGIN HIDDEN TESTS" in (NOTEBOOKS / f"{n}.py").read_text()
    ]
    assert len(with_hidden) >= 5, with_hidden
