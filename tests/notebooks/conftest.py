"""Notebook fixtures; running one (its own lab, its solutions, checked gone): helpers.py."""

from __future__ import annotations

import pytest

from .helpers import execute


@pytest.fixture
def run_notebook(tmp_path):
    """``run_notebook(name)``: execute ``notebooks/<name>.py`` (the instructor edition, with
    its solutions) in its own lab; ``run_notebook(name, answers={...})``: with those answers."""
    return lambda name, answers=None: execute(name, tmp_path, answers)
