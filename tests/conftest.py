"""Shared test setup: tests marked ``lab`` need root (real namespaces); skipped otherwise. The
session's folder for the class install (``tests/lab/users.py``: ``class_install``)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

CLASS_INSTALL_ENV = "VPNLAB_TEST_CLASS_INSTALL"
"""The session's folder for the class install, made and removed by the hooks below; set it
beforehand to keep an install across runs (it is then neither made nor removed)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(
        reason="lab tests need root (network namespaces): sudo .venv/bin/pytest -m lab"
    )
    for item in items:
        if item.get_closest_marker("lab") is not None:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    """The controller names a folder for the session's class install; the workers inherit it.

    Here, not in ``tests/lab/conftest.py``: under xdist the controller collects nothing, so it
    never loads a conftest below ``tests/`` and never ran these hooks there; each worker built
    an install of its own (680 MB, twice the time) under a fallback name and left it in /tmp.
    """
    if not hasattr(config, "workerinput") and CLASS_INSTALL_ENV not in os.environ:
        os.environ[CLASS_INSTALL_ENV] = tempfile.mkdtemp(prefix="vpnlab-class-", dir="/tmp")
        config._vpnlab_class_install = os.environ[CLASS_INSTALL_ENV]


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller removes the class install once every worker is done."""
    folder = getattr(config, "_vpnlab_class_install", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(CLASS_INSTALL_ENV, None)
