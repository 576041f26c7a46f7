"""TAP mode (issue 12) in real namespaces: ARP across the tunnel, the inner Ethernet frame in a
decrypted capture, routing and NAT over tap0, and the classic ARP experiment on a TAP device.

One lab (esp-aes-gcm, ``mode="tap"``) serves the module; the plain test restarts its VPN.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from vpnlab import lab
from vpnlab.instruments import capture

from .helpers import (
    CLIENT_ENDPOINT,
    CLIENT_TUNNEL_IP,
    SERVER_IP,
    SERVER_TUNNEL_IP,
    WEB_URL,
    build_lab,
)

pytestmark = pytest.mark.lab

SERVER_TAP = SERVER_TUNNEL_IP
"""r2's tap0."""


@pytest.fixture(scope="module")
def tap_lab():
    yield from build_lab(vpn=True, cipher="esp-aes-gcm", mode="tap")


def mac_of(handle, node: str, device: str = "tap0") -> str:
    return json.loads(handle.run(node, "ip", "-j", "link", "show", device).stdout)[0]["address"]


def ping(handle, node: str, target: str, count: int = 2):
    return handle.run(node, "ping", "-c", str(count), "-i", "0.2", "-W", "2", target)


def captured(handle, tmp_path, name: str, *argv: str) -> str:
    """Capture on r2 eth0 while r1 forgets its neighbours and runs ``argv``; return the file."""
    path = tmp_path / f"{name}.pcapng"
    with capture.start_capture(handle.prefix, "r2", "eth0", path, count=200, duration_s=20):
        handle.run("r1", "ip", "neigh", "flush", "dev", "tap0")
        assert handle.run("r1", *argv).returncode == 0
    return str(path)


def test_tap_devices_and_routes(tap_lab):
    """CreateTunDev with IFF_TAP on both ends; SetRouting(1) via the server's tap0 address."""
    for node in ("r1", "r2"):
        link = tap_lab.run(node, "ip", "-d", "link", "show", "tap0").stdout
        assert "tun type tap pi off" in link and "link/ether" in link
    table = tap_lab.run("r1", "ip", "route").stdout
    assert f"0.0.0.0/1 via {SERVER_TAP} dev tap0" in table
    assert f"128.0.0.0/1 via {SERVER_TAP} dev tap0" in table


def test_tap_arp_crosses_the_tunnel(tap_lab):
    """r1 resolves the server's tunnel address to r2's tap0 MAC through the tunnel, pings it."""
    tap_lab.run("r1", "ip", "neigh", "flush", "dev", "tap0")
    result = ping(tap_lab, "r1", SERVER_TAP)
    assert result.returncode == 0, result.stdout + result.stderr
    neigh = tap_lab.run("r1", "ip", "neigh", "show", SERVER_TAP, "dev", "tap0").stdout
    assert f"lladdr {mac_of(tap_lab, 'r2')}" in neigh
    # and the server's kernel learned r1's MAC the same way
    back = tap_lab.run("r2", "ip", "neigh", "show", CLIENT_TUNNEL_IP, "dev", "tap0").stdout
    assert f"lladdr {mac_of(tap_lab, 'r1')}" in back


def test_tap_server_switch_learned_the_clients_mac(tap_lab):
    """The status file (rewritten every second) shows the switch's MAC table."""
    ping(tap_lab, "r1", SERVER_TAP, 1)
    client_mac = mac_of(tap_lab, "r1")
    for _ in range(40):  # the status file is rewritten every second
        server = lab.status(tap_lab.prefix)["tunnel"]["server"]
        table = {row["mac"]: row["port"] for row in server["mac_table"]}
        if client_mac in table:
            break
        time.sleep(0.1)
    assert table.get(client_mac) == CLIENT_ENDPOINT, table
    assert table[mac_of(tap_lab, "r2")] == "local"
    assert not server["counters"]["drops"].get("spoofed source mac")


def test_tap_capture_decrypts_to_the_inner_ethernet_frame(tap_lab, tmp_path):
    """ESP next header 143: tshark with the lab's esp_sa rows shows esp:eth:ethertype:arp."""
    path = captured(tap_lab, tmp_path, "tap", "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_TAP)
    stacks = set(capture.stacks(path, capture.lab_keys(tap_lab.prefix)))
    esp = "eth:ethertype:ip:udp:udpencap:esp"
    assert f"{esp}:eth:ethertype:arp" in stacks, stacks
    assert f"{esp}:eth:ethertype:ip:icmp:data" in stacks, stacks
    assert "eth:ethertype:ip:udp:udpencap:esp" in set(capture.stacks(path))  # without keys


def test_tap_routing_and_nat_to_the_web(tap_lab):
    """Everything else as in tun mode: web sees r2 (NAT), the route leaves through tap0."""
    assert tap_lab.run("r1", "curl", "-s", "--max-time", "3", f"{WEB_URL}/").stdout.strip() == (
        f"you are {SERVER_IP}"
    )
    assert lab.verify(tap_lab.prefix)["ok"]


def test_tap_classic_arp_experiment(tap_lab):
    """A TAP device opened by hand (IFF_TAP | IFF_NO_PI): read the kernel's ARP request,
    answer with a scapy-crafted reply, and find the answer in ``ip neigh``."""
    done = tap_lab.run(
        "web", sys.executable, "-m", "vpnlab", "arp-experiment", "--name", "tap9", timeout=30
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "who has 10.9.0.99" in result["request"]
    assert "is at 02:00:5e:00:53:99" in result["reply"]
    assert result["neigh"].startswith("10.9.0.99 lladdr 02:00:5e:00:53:99")
    assert "tap9" not in tap_lab.run("web", "ip", "link").stdout  # gone with its fd


def test_tap_plain_carries_the_raw_frame(tap_lab, tmp_path):
    """``--cipher plain --mode tap`` via start_vpn's daemon args: the raw frame is the payload;
    Wireshark calls it ESP (port 4500) until told ``-d udp.port==4500,eth``."""
    lab.start_vpn(
        tap_lab.prefix, cipher="plain", server_args=["--mode", "tap"], client_args=["--mode", "tap"]
    )
    path = captured(
        tap_lab, tmp_path, "plain", "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_TAP
    )
    assert "eth:ethertype:ip:udp:udpencap:esp" in set(capture.stacks(path))
    decoded = capture.run_tshark(
        path, ["-d", "udp.port==4500,eth", "-T", "fields", "-e", "frame.protocols"]
    )
    assert "eth:ethertype:ip:udp:eth:ethertype:arp" in decoded.split()
