"""Lab fixtures: a fresh prefix per lab, torn down in ``finally``, then proven gone.

The helpers behind them (prefixes, snapshots, ``build_lab``) are in ``helpers.py``.
"""

from __future__ import annotations

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
