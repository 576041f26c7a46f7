"""IPv6-only clients in the lab (#29 item 4): past the server's IPv4 pool a client's Welcome
gives fd10:8::N and no IPv4 (docs/ipv6.md), and its echoes still cross the tunnel.

A tunnel network much smaller than the /24 gets there with few clients: a /30 (the server and
r1) for a second client daemon, a /29 for the load clients of ``vpnlab bench --clients``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from ipaddress import IPv4Interface

import pytest

from vpnlab import lab
from vpnlab.course.classload import class_load
from vpnlab.lab.state import state_dir
from vpnlab.lab.topology import Topology, make_topology

from .helpers import LabHandle, build_lab


def small_pool(clients: int, server_address: str) -> Topology:
    """The default lab with ``clients`` client nodes and a tunnel network of ``server_address``."""
    topo = make_topology(clients)
    network = str(IPv4Interface(server_address).network)
    tunnel = dataclasses.replace(topo.tunnel, network=network, server_address=server_address)
    return dataclasses.replace(topo, tunnel=tunnel)


@pytest.fixture
def one_ipv4_address() -> Iterator[LabHandle]:
    """Two client daemons (r1, r3), a server with 10.8.0.1/30: r1 gets 10.8.0.2, r3 nothing
    of IPv4."""
    yield from build_lab(topology=small_pool(2, "10.8.0.1/30"), cipher="esp-aes-gcm", psk=True)


def test_a_client_daemon_past_the_ipv4_pool_gets_ipv6_only_and_pings(one_ipv4_address):
    handle = one_ipv4_address
    status = json.loads((state_dir(handle.prefix) / "client-r3.json").read_text())
    assert status["state"] == "connected", status
    assert (status["tunnel_address"], status["tunnel_address6"]) == ("", "fd10:8::4/64"), status
    addresses = handle.run("r3", "ip", "-o", "addr", "show", "dev", status["tun"]).stdout
    assert "fd10:8::4/64" in addresses and "inet " not in addresses, addresses
    ping6 = handle.run("r3", "ping", "-6", "-n", "-c", "2", "-W", "2", "fd10:8::1")
    assert ping6.returncode == 0, ping6.stdout + ping6.stderr
    first = json.loads((state_dir(handle.prefix) / "client-r1.json").read_text())
    assert first["tunnel_address"] == "10.8.0.2/30", first
    server = lab.status(handle.prefix)
    assert server["daemons"]["server"]["pid"], server


def test_load_clients_past_a_small_pool_echo_over_ipv6(prefix):
    document = class_load(
        8, prefix, idle_s=1.0, progress=lambda _: None, topology=small_pool(1, "10.8.0.1/29")
    )
    for phase in ("sequential", "at_once"):
        result = document[phase]
        assert result["connected"] == 8 and result["answered"] == 8, document
        assert result["ipv6_only"] == 4 and result["bad_replies"] == 0, document


def test_a_class_pinging_at_once_gets_every_echo_reply(prefix):
    """160 load clients' echoes at once: the server's SockSelected writes 64 at a time to tun0
    and the kernel answers each into tun0's ring at once; a ring of one wake-up's worth (64)
    dropped replies (250 clients: 161 answered), two wake-ups' worth holds them
    (queues.SERVER_MIN_RING_ENTRIES)."""
    document = class_load(160, prefix, idle_s=0.5, progress=lambda _: None)
    result = document["at_once"]
    assert result["connected"] == 160 and result["answered"] == 160, result
    assert document["kernel_drops"] == {"socket": 0, "tun_ring": 0}, document["kernel_drops"]
