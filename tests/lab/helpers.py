"""What the lab tests share: the lab's addresses, building a lab and proving it gone, waiting.

The addresses come from :data:`vpnlab.lab.topology.DEFAULT_TOPOLOGY`, so that a change of the
topology moves the tests with it (only ``tests/unit/test_topology.py`` spells them out).

Every lab built here uses ``vlt{pid}x{n}-`` so parallel runs and other engineers' labs never meet,
and after ``down`` :func:`build_lab` checks that no namespace, state folder or process of that
prefix remains and that the root namespace looks exactly as before. The fixtures that use these
are in ``conftest.py``; the prefix counter is here, once.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import TypeVar

from vpnlab import lab
from vpnlab.core.constants import PORT
from vpnlab.lab import state
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, make_topology

T = TypeVar("T")

# --- the lab's addresses, from the topology ------------------------------------------------------

TOPOLOGY = DEFAULT_TOPOLOGY
CLIENT = TOPOLOGY.tunnel.clients[0]
"""The first VPN client node (r1)."""
SERVER = TOPOLOGY.tunnel.server
"""The VPN server node (r2)."""

CLIENT_IP = TOPOLOGY.node(CLIENT).address()
"""r1's own address on eth0 (what web sees without the VPN)."""
CLIENT_GATEWAY = TOPOLOGY.node(CLIENT).gateway
"""r1's default gateway: the isp."""
SERVER_IP = TOPOLOGY.server_ip
"""The VPN server's public address (what clients dial, what web sees through NAT)."""
WEB_IP = TOPOLOGY.web_ip
WEB_URL = f"http://{WEB_IP}"
"""The who-am-I service on web (no trailing slash)."""

TUNNEL_NETWORK = TOPOLOGY.tunnel.network
SERVER_TUNNEL_IP = str(IPv4Interface(TOPOLOGY.tunnel.server_address).ip)
"""The server's address in the tunnel (tun0 or tap0 of r2)."""


def tunnel_ip(n: int = 0) -> str:
    """The tunnel address the server gives its ``n``-th client (every host but its own)."""
    server = IPv4Interface(TOPOLOGY.tunnel.server_address)
    hosts = (str(h) for h in IPv4Network(TUNNEL_NETWORK).hosts() if h != server.ip)
    return next(itertools.islice(hosts, n, None))


def tunnel_address(n: int = 0) -> str:
    """:func:`tunnel_ip` with the tunnel's prefix length, as the status shows it."""
    return f"{tunnel_ip(n)}/{IPv4Network(TUNNEL_NETWORK).prefixlen}"


CLIENT_TUNNEL_IP = tunnel_ip(0)
"""The first client's address in the tunnel."""
CLIENT_ENDPOINT = f"{CLIENT_IP}:{PORT}"
SERVER_ENDPOINT = f"{SERVER_IP}:{PORT}"
"""The tunnel's UDP (or TCP) ends, as ``ss`` and the daemons' logs show them."""


def cidr(node: str, interface: str = "eth0", topology=TOPOLOGY) -> str:
    """The address with prefix length of ``node``'s ``interface``."""
    return topology.node(node).interface(interface).address


def client_ip(node: str, clients: int) -> str:
    """The address of client ``node`` in a lab of ``clients`` clients (``make_topology``)."""
    return make_topology(clients).node(node).address()


SITE_TO_SITE = make_topology(site_to_site=True)
"""The site-to-site lab: a LAN behind r1 (h1) and one behind r2 (h2)."""
H1_IP = SITE_TO_SITE.node("h1").address()
H2_IP = SITE_TO_SITE.node("h2").address()
LAN1, LAN2 = (network for _, network in SITE_TO_SITE.tunnel.lans[:2])
"""The networks behind r1 and r2 (IPv4; their IPv6 /64s follow in ``lans``)."""

# --- running things in a lab ---------------------------------------------------------------------


def run(prefix: str, node: str, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` in ``node`` of the lab ``prefix``: output captured as text, 30 s at most."""
    return lab.exec_in(prefix, node, list(argv), capture_output=True, text=True, timeout=30)


def wait_until(
    predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.05
) -> float | None:
    """Seconds until ``predicate()`` held, or None if it never did within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    return None


def stop_with_sigterm(proc: subprocess.Popen, ready: Callable[[], object], ready_s: float) -> str:
    """Once ``ready()`` holds (``ready_s`` at most), SIGTERM ``proc`` and wait for it (60 s at
    most); its stderr. ``proc`` is killed in any case, also when the test fails."""
    try:
        assert wait_until(ready, ready_s, 0.1) is not None, "never ready for the signal"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- building a lab and proving it gone ----------------------------------------------------------

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
    assert not (state.base_dir() / f".{prefix}lock").exists(), "the lab's lock file is left"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/netns/{prefix}" not in mounts, "a namespace mount of the lab is left"
    for pid in pids:
        assert not state.alive(pid), f"pid {pid} of {prefix} survived down"
    if ns_ids:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                assert state.pid_ns_id(int(entry)) not in ns_ids, f"pid {entry} still in the lab"


def lab_pids(prefix: str) -> list[int]:
    record = state.load(prefix)
    return [d.pid for d in record.daemons.values() if d.pid] if record else []


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


def built(make: Callable[[str], T]) -> Iterator[tuple[str, T]]:
    """``make(prefix)`` under a fresh prefix (it builds a lab); down() in finally; then check
    that nothing of it is left and that the root namespace is as before."""
    prefix = fresh_prefix()
    before = root_snapshot()
    ns_ids: dict = {}
    pids: list[int] = []
    try:
        made = make(prefix)
        ns_ids = state.ns_ids(state.prefix_namespaces(prefix))
        pids = lab_pids(prefix)
        yield prefix, made
    finally:
        ns_ids = ns_ids or state.ns_ids(state.prefix_namespaces(prefix))
        pids = sorted(set(pids) | set(lab_pids(prefix)))
        lab.down(prefix)
    assert_gone(prefix, ns_ids, pids)
    assert root_snapshot() == before, "the root namespace changed"


def build_lab(**up_kwargs) -> Iterator[LabHandle]:
    """up() under a fresh prefix, torn down and proven gone afterwards (:func:`built`)."""
    for prefix, info in built(lambda p: lab.up(prefix=p, **up_kwargs)):
        yield LabHandle(prefix, info)
