"""Course variants: routing without NAT (the failure and its fix), client to client."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vpnlab import lab
from vpnlab.instruments import capture
from vpnlab.lab.topology import make_topology

from .helpers import (
    CLIENT_TUNNEL_IP,
    SERVER_IP,
    SERVER_TUNNEL_IP,
    TUNNEL_NETWORK,
    WEB_IP,
    WEB_URL,
    run,
)

pytestmark = pytest.mark.lab


def whoami(prefix: str) -> str:
    return run(prefix, "r1", "curl", "-s", "--max-time", "2", f"{WEB_URL}/").stdout.strip()


def test_without_nat_replies_die_at_the_isp_until_it_learns_the_way_back(prefix, tmp_path):
    """--nat off: web answers r1's tunnel address itself; the isp has no route back, so the
    answers die."""
    lab.up(prefix=prefix, nat=False)
    assert "masquerade" not in run(prefix, "r2", "nft", "list", "ruleset").stdout
    towards_web = tmp_path / "isp-eth2.pcapng"
    towards_r2 = tmp_path / "isp-eth1.pcapng"
    with (
        capture.start_capture(prefix, "isp", "eth2", towards_web, count=50, duration_s=20),
        capture.start_capture(prefix, "isp", "eth1", towards_r2, count=50, duration_s=20),
    ):
        ping = run(prefix, "r1", "ping", "-c", "3", "-i", "0.2", "-W", "1", WEB_IP)
        time.sleep(0.3)
    assert ping.returncode != 0, ping.stdout  # no answer: that is the lesson
    names = ["ip.src", "ip.dst", "icmp.type"]
    web_side = capture.fields(towards_web, names, display_filter="icmp")
    r2_side = capture.fields(towards_r2, names, display_filter="icmp")
    # The requests leave the isp towards web with the tunnel address as their source...
    assert [CLIENT_TUNNEL_IP, WEB_IP, "8"] in web_side
    # ... web's replies to the tunnel address come back into the isp ...
    assert [WEB_IP, CLIENT_TUNNEL_IP, "8"] not in web_side
    assert [WEB_IP, CLIENT_TUNNEL_IP, "0"] in web_side
    # ... and never leave it towards r2: the isp has no route to the tunnel's network.
    assert not [row for row in r2_side if row[1] == CLIENT_TUNNEL_IP], r2_side
    assert TUNNEL_NETWORK not in run(prefix, "isp", "ip", "route").stdout

    route = lab.route_back(prefix)
    assert route.splitlines() == [
        f"{TUNNEL_NETWORK} via {SERVER_IP}",
        "fd10:8::/64 via 2001:db8:2::2",
    ]
    assert run(prefix, "r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP).returncode == 0
    assert whoami(prefix) == f"you are {CLIENT_TUNNEL_IP}"  # no NAT: web sees the tunnel address
    assert lab.verify(prefix)["ok"]

    cli = [sys.executable, "-m", "vpnlab", "lab", "route-back", "--prefix", prefix, "--remove"]
    removed = f"removed route {TUNNEL_NETWORK} via {SERVER_IP}"
    assert removed in subprocess.check_output(cli, text=True)
    lab.start_vpn(prefix, nat=True)  # the comparison: with NAT, web sees the server
    assert whoami(prefix) == f"you are {SERVER_IP}"


def test_client_to_client_through_the_server_allowed_or_isolated(prefix):
    lab.up(prefix=prefix, topology=make_topology(2))
    clients = lab.status(prefix)["tunnel"]["clients"]
    r3_address = clients["r3"]["tunnel_address"].split("/")[0]
    ping = ["ping", "-c", "2", "-i", "0.2", "-W", "1", r3_address]
    assert run(prefix, "r1", *ping).returncode == 0  # r1 -> r2's tun0 -> kernel -> tun0 -> r3
    lab.start_vpn(prefix, server_args=["--isolate-clients"])
    assert run(prefix, "r1", *ping).returncode != 0
    assert run(prefix, "r1", "ping", "-c", "1", "-W", "2", SERVER_TUNNEL_IP).returncode == 0
    time.sleep(1.2)  # the status file is rewritten every second
    drops = lab.status(prefix)["tunnel"]["server"]["counters"]["drops"]
    assert drops["client to client denied"] >= 2
