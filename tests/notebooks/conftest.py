"""Notebook fixtures; running one (a lab of its own, solved, checked gone) is in helpers.py."""

from __future__ import annotations

import pytest

from .helpers import execute


@pytest.fixture
def run_notebook(tmp_path):
    """``run_notebook(name)``: execute ``notebooks/<name>.py`` solved, in its own lab."""
    return lambda name, solved=True: execute(name, tmp_path, solved)
