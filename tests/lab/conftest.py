"""Lab fixtures: a fresh prefix per lab, torn down in ``finally``, then proven gone.

The helpers behind them (prefixes, snapshots, ``build_lab``) are in ``helpers.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from vpnlab import lab

from .helpers import (
    LabHandle,
    assert_gone,
    build_lab,
    fresh_prefix,
    lab_pids,
    root_snapshot,
)
from .users import CLASS_INSTALL_ENV


@pytest.fixture
def make_prefix():
    """A callable returning a new unused prefix (for tests that need two labs)."""
    return fresh_prefix


@pytest.fixture
def check_gone():
    """``check_gone(prefix, ns_ids, pids)``: assert nothing of that lab is left."""
    return assert_gone


@pytest.fixture
def recorded_pids():
    """``recorded_pids(prefix)``: the daemon PIDs in the lab's record."""
    return lab_pids


@pytest.fixture
def vpn_lab(request) -> Iterator[LabHandle]:
    """A lab with the VPN up; the cipher comes from indirect parametrization (default plain)."""
    yield from build_lab(vpn=True, cipher=getattr(request, "param", "plain"))


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[LabHandle]:
    """One lab without VPN, shared by read-only tests of a module."""
    yield from build_lab(vpn=False)


@pytest.fixture
def fresh_lab() -> Iterator[LabHandle]:
    """A lab of one's own (without VPN), for tests that break things."""
    yield from build_lab(vpn=False)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh prefix with no lab yet; whatever the test builds is removed afterwards."""
    p = fresh_prefix()
    before = root_snapshot()
    try:
        yield p
    finally:
        lab.down(p)
    assert_gone(p, {}, [])
    assert root_snapshot() == before, "the root namespace changed"


# --- the class install of the session (users.py: class_install) ------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """The controller names a folder for the session's class install; the workers inherit it."""
    if not hasattr(config, "workerinput") and CLASS_INSTALL_ENV not in os.environ:
        os.environ[CLASS_INSTALL_ENV] = tempfile.mkdtemp(prefix="vpnlab-class-", dir="/tmp")
        config._vpnlab_class_install = os.environ[CLASS_INSTALL_ENV]


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller removes the class install once every worker is done."""
    folder = getattr(config, "_vpnlab_class_install", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(CLASS_INSTALL_ENV, None)
