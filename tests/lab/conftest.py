"""Lab fixtures: a fresh prefix per lab, torn down in ``finally``, then proven gone.

Every lab built here uses ``vlt{pid}x{n}-`` so parallel runs and other engineers' labs never meet,
and after ``down`` the fixture checks that no namespace, state folder or process of that prefix
remains and that the root namespace looks exactly as before.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.lab import state

_counter = itertools.count(1)


def fresh_prefix() -> str:
    return f"vlt{os.getpid()}x{next(_counter)}-"


def root_snapshot() -> dict[str, str]:
    """What the root namespace looks like: links, routes, rules, nftables, forwarding."""
    commands = {
        "links": ["ip", "-o", "link"],
        "routes": ["ip", "route", "show", "table", "all"],
        "rules": ["ip", "rule"],
        "nft": ["nft", "list", "ruleset"],
        "sysctls": ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.disable_ipv6"],
    }
    snap = {}
    for key, argv in commands.items():
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        if key == "links":  # drop counters that move on their own (none in -o output today)
            out = "\n".join(sorted(out.splitlines()))
        snap[key] = out
    return snap


def assert_gone(prefix: str, ns_ids: dict, pids: list[int]) -> None:
    """Nothing of ``prefix`` left: namespaces, state folder, processes in its namespaces."""
    assert state.prefix_namespaces(prefix) == []
    assert not state.state_dir(prefix).exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/netns/{prefix}" not in mounts, "a namespace mount of the lab is left"
    for pid in pids:
        assert not state.alive(pid), f"pid {pid} of {prefix} survived down"
    if ns_ids:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                assert state.pid_ns_id(int(entry)) not in ns_ids, f"pid {entry} still in the lab"


def lab_pids(prefix: str) -> list[int]:
    record = state.load(prefix) or {}
    return [d["pid"] for d in record.get("daemons", {}).values() if d.get("pid")]


class LabHandle:
    """A built lab: its prefix, and the status ``up`` returned."""

    def __init__(self, prefix: str, info: dict) -> None:
        self.prefix = prefix
        self.info = info

    def ns(self, node: str) -> str:
        return state.namespace(self.prefix, node)

    def run(self, node: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return lab.exec_in(self.prefix, node, list(argv), **kwargs)


def build_lab(**up_kwargs) -> Iterator[LabHandle]:
    """up() under a fresh prefix; down() in finally; then check that nothing is left."""
    prefix = fresh_prefix()
    before = root_snapshot()
    ns_ids: dict = {}
    pids: list[int] = []
    try:
        info = lab.up(prefix=prefix, **up_kwargs)
        ns_ids = state.ns_ids(state.prefix_namespaces(prefix))
        pids = lab_pids(prefix)
        yield LabHandle(prefix, info)
    finally:
        ns_ids = ns_ids or state.ns_ids(state.prefix_namespaces(prefix))
        pids = sorted(set(pids) | set(lab_pids(prefix)))
        lab.down(prefix)
    assert_gone(prefix, ns_ids, pids)
    assert root_snapshot() == before, "the root namespace changed"


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
