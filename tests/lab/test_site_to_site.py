"""Site to site: a LAN behind each gateway, joined by the tunnel, no NAT (issue 12)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vpnlab import lab
from vpnlab.instruments import ftp
from vpnlab.lab import state

from .helpers import H1_IP, H2_IP, LAN1, LAN2, SITE_TO_SITE, run

pytestmark = pytest.mark.lab


def whoami_seen_by(prefix: str, client: str, server: str, address: str) -> str:
    """Start who-am-I on ``server`` (at ``address``) and ask it from ``client``."""
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", state.namespace(prefix, server), sys.executable]
        + ["-m", "vpnlab", "whoami", "--listen", address, "--port", "8080"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in daemon.stderr.readline()
        url = f"http://{address}:8080/"
        return run(prefix, client, "curl", "-s", "--max-time", "3", url).stdout.strip()
    finally:
        daemon.terminate()
        daemon.wait(timeout=5)


def test_h1_and_h2_reach_each_other_both_ways(prefix):
    lab.up(prefix=prefix, topology=SITE_TO_SITE, nat=False)
    r1_routes = run(prefix, "r1", "ip", "route").stdout
    assert f"{LAN2} dev tun0" in r1_routes
    assert "0.0.0.0/1" not in r1_routes  # only the far LAN goes through the tunnel
    assert f"{LAN1} dev tun0" in run(prefix, "r2", "ip", "route").stdout
    assert run(prefix, "r1", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    for source, destination in (("h1", H2_IP), ("h2", H1_IP)):
        ping = run(prefix, source, "ping", "-c", "2", "-i", "0.2", "-W", "2", destination)
        assert ping.returncode == 0, (source, destination, ping.stdout)
    # HTTP both ways; each side sees the other's own LAN address: no NAT anywhere
    assert whoami_seen_by(prefix, "h1", "h2", H2_IP) == f"you are {H1_IP}"
    assert whoami_seen_by(prefix, "h2", "h1", H1_IP) == f"you are {H2_IP}"
    # FTP from h1 to a server on h2, passive and active, checksums compared
    with ftp.lab_server(prefix, node="h2", listen=H2_IP):
        for mode in ("passive", "active"):
            result = ftp.lab_transfer(
                prefix, node="h1", server=H2_IP, mode=mode, size_bytes=200_000
            )
            assert result["ok"], result
    drops = lab.status(prefix)["tunnel"]["server"]["counters"]["drops"]
    assert "spoofed source" not in drops
    lab.stop_vpn(prefix)  # CleanUp: the LAN routes and r1's forwarding go with the client
    assert LAN2 not in run(prefix, "r1", "ip", "route").stdout
    assert run(prefix, "r1", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert run(prefix, "h1", "ping", "-c", "1", "-W", "1", H2_IP).returncode != 0
