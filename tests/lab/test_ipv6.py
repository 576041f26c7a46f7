"""IPv6 inside and outside the tunnel, in the dual-stack lab (ISSUE #20).

Inside: r1 gets fd10:8::2 beside 10.8.0.2, ::/1 and 8000::/1 go through tun0, r2 forwards
IPv6 and masquerades it (NAT66) or, without NAT, the isp routes fd10:8::/64 to r2. Outside:
the server listens on 2001:db8:2::2 and the client dials it (UDP 4500 over IPv6), in the
simple and the fast data path. One lab per module; each test restarts the VPN as it needs it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.core.constants import CONNECT_TIMEOUT_S, tun_mtu
from vpnlab.instruments import capture, ftp
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, make_topology
from vpnlab.wire.crypto import algorithm

from .helpers import LabHandle, build_lab, wait_until

pytestmark = pytest.mark.lab

TOPO = DEFAULT_TOPOLOGY
SERVER6 = TOPO.server_ip6  # 2001:db8:2::2
WEB6 = TOPO.web_ip6  # 2001:db8:3::10
CLIENT6 = TOPO.node("r1").address6()  # 2001:db8:1::2
CLIENT_TUNNEL6 = "fd10:8::2"
SERVER_TUNNEL6 = "fd10:8::1"
WEB6_URL = f"http://[{WEB6}]/"
GCM = algorithm("esp-aes-gcm").overhead_bytes


@pytest.fixture(scope="module")
def dual() -> LabHandle:
    yield from build_lab(vpn=False, cipher="esp-aes-gcm")


def start(handle: LabHandle, outer: int, datapath: str = "simple", nat: bool = True) -> None:
    extra = ["--datapath", datapath]
    lab.start_vpn(
        handle.prefix, "esp-aes-gcm", outer=outer, server_args=extra, client_args=extra, nat=nat
    )


def whoami6(handle: LabHandle, node: str = "r1") -> str:
    done = handle.run(node, "curl", "-6", "-s", "--max-time", "3", WEB6_URL)
    return done.stdout.strip()


def ping(handle: LabHandle, node: str, address: str, *extra: str):
    return handle.run(node, "ping", "-c", "2", "-i", "0.2", "-W", "2", *extra, address)


@pytest.mark.parametrize("datapath", ["simple", "fast"])
@pytest.mark.parametrize("outer", [4, 6])
def test_ipv6_inside_over_either_outer_family_with_nat66(dual, outer, datapath):
    start(dual, outer, datapath)
    table = dual.run("r1", "ip", "-6", "route").stdout
    assert "::/1 dev tun0" in table and "8000::/1 dev tun0" in table
    assert (f"{SERVER6} via 2001:db8:1::1 dev eth0" in table) == (outer == 6)  # the /128
    addresses = dual.run("r1", "ip", "-6", "addr", "show", "tun0").stdout
    assert f"inet6 {CLIENT_TUNNEL6}/64" in addresses
    link = dual.run("r1", "ip", "link", "show", "tun0").stdout
    assert f"mtu {tun_mtu(GCM, outer_ipv6=outer == 6)}" in link  # 1435, or 20 less: 1415
    for address in (SERVER_TUNNEL6, WEB6, "203.0.113.10"):  # IPv4 inside keeps working
        done = ping(dual, "r1", address)
        assert done.returncode == 0, done.stdout + done.stderr
    assert whoami6(dual) == f"you are {SERVER6}"  # NAT66: web sees r2's IPv6 address
    nat = dual.run("r2", "nft", "list", "table", "ip6", "vpnlab").stdout
    assert "ip6 saddr fd10:8::/64 ip6 daddr != fd10:8::/64" in nat and "masquerade" in nat
    forwarding = dual.run("r2", "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout
    assert forwarding.strip() == "1"
    status = lab.status(dual.prefix)["tunnel"]
    server_peer = status["clients"]["r1"]["server"]
    assert server_peer == (f"{SERVER6}:4500" if outer == 6 else "198.51.100.2:4500")
    assert lab.verify(dual.prefix)["ok"]
    drops = status["server"]["counters"]["drops"]
    assert not [reason for reason in drops if reason.startswith("bug")], drops


def test_bulk_http_over_ipv6_both_ways_in_the_fast_path(dual):
    """64 KB super-packets (TSO6) cut into segments, UDP GSO/GRO on an IPv6 socket."""
    start(dual, 6, "fast")
    size = 5_000_000
    done = dual.run(
        "r1",
        "curl",
        "-6",
        "-s",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        f"http://[{WEB6}]/bytes/{size}",
    )
    assert done.stdout.strip() == str(size), done.stderr

    def server() -> dict:  # the status file is rewritten every second
        return lab.status(dual.prefix)["tunnel"]["server"]

    assert "udp_gso" in server()["offloads"] and "udp_gro" in server()["offloads"]
    assert wait_until(lambda: server()["counters"]["packets_from_tun"] > 1000, 3) is not None
    # the server read web's segments in super-packets (GSO_TCPV6), not cut before tun0
    whole = server()["fastpath"].get("super_packet_segments", 0)
    assert whole * 2 > server()["counters"]["packets_from_tun"], server()

    def client() -> dict:
        return lab.status(dual.prefix)["tunnel"]["clients"]["r1"]

    # the client joined IPv6 segments for tun0 (GSO_TCPV6): far fewer writes than packets
    joined = wait_until(
        lambda: (
            client()["fastpath"].get("tun_writes", 0) * 2 < client()["counters"]["packets_to_tun"]
        ),
        3,
    )
    assert joined is not None, client()
    drops = server()["counters"]["drops"]
    assert not [why for why in drops if why.startswith(("send", "bug", "socket"))], drops


def test_routed_alternative_without_nat66(dual):
    """No NAT: web sees r1's tunnel address fd10:8::2 once the isp routes fd10:8::/64 to r2."""
    start(dual, 4, nat=False)
    try:
        assert whoami6(dual) == ""  # the answer has no way back
        routes = lab.route_back(dual.prefix)
        assert routes.splitlines() == ["10.8.0.0/24 via 198.51.100.2", f"fd10:8::/64 via {SERVER6}"]
        assert whoami6(dual) == f"you are {CLIENT_TUNNEL6}"
        assert lab.verify(dual.prefix)["ok"]
        # ICMPv6 Packet Too Big, as IPv4's Frag needed: r2 answers web for its tun0's MTU
        mtu = tun_mtu(GCM)
        fits = ping(dual, "web", CLIENT_TUNNEL6, "-M", "do", "-s", str(mtu - 48))
        assert fits.returncode == 0, fits.stdout
        big = ping(dual, "web", CLIENT_TUNNEL6, "-M", "do", "-s", str(mtu - 47))
        answer = rf"From {re.escape(SERVER6)} .*Packet too big: mtu={mtu}"
        assert re.search(answer, big.stdout), big.stdout
    finally:
        lab.route_back(dual.prefix, add=False)


def test_liveness_over_an_ipv6_outer_path(dual):
    """kill -9 the server: the client says "peer lost" within ~6 s and removes its v6 routes."""
    start(dual, 6)
    daemons = lab.status(dual.prefix)["daemons"]
    os.kill(daemons["server"]["pid"], signal.SIGKILL)
    gone = wait_until(lambda: not lab.status(dual.prefix)["daemons"]["client-r1"]["alive"], 12)
    assert gone is not None and gone < 9.5
    table = dual.run("r1", "ip", "-6", "route").stdout
    assert "tun0" not in table and SERVER6 not in table
    assert "default via 2001:db8:1::1 dev eth0" in table
    log = Path(lab.status(dual.prefix)["daemons"]["client-r1"]["log"]).read_text()
    assert "cleaned up (peer lost)" in log
    lab.stop_vpn(dual.prefix)


def test_connect_timeout_over_ipv6(dual):
    """ClientConnection over IPv6: no server at 2001:db8:2::2 -> exit 3 after the 2.5 s."""
    lab.stop_vpn(dual.prefix)
    argv = [sys.executable, "-m", "vpnlab", "client", "--server", SERVER6, "--cipher", "plain"]
    start_s = time.monotonic()
    done = dual.run("r1", *argv, timeout=15)
    took_s = time.monotonic() - start_s
    assert done.returncode == 3 and "server unreachable" in done.stdout + done.stderr
    assert CONNECT_TIMEOUT_S - 0.1 < took_s < CONNECT_TIMEOUT_S + 2.5
    assert "tun0" not in dual.run("r1", "ip", "-6", "route").stdout


def test_captures_ipv6_outside_and_inside_decrypt_with_the_exported_keys(dual, tmp_path):
    """eth0: only eth:ipv6:udp:udpencap:esp (and the kernel's link chatter); tun0:
    raw:ipv6:tcp; tshark opens the ESP with the IPv6 esp_sa rows the server exported."""
    start(dual, 6)
    files = {name: tmp_path / f"{name}.pcapng" for name in ("eth0", "tun0")}
    caps = [capture.start_capture(dual.prefix, "r1", n, p, count=200) for n, p in files.items()]
    try:
        assert ping(dual, "r1", WEB6).returncode == 0
        assert whoami6(dual) == f"you are {SERVER6}"
    finally:
        for cap in caps:
            cap.stop()
    keys = capture.lab_keys(dual.prefix)
    assert keys and all(row.startswith('"IPv6"') for row in keys), keys
    outer = [s for s in capture.stacks(files["eth0"]) if s not in capture.LINK_CHATTER]
    assert set(outer) == {capture.EXTERNAL_STACK6}, set(outer)
    inner = set(capture.stacks(files["eth0"], keys)) - capture.LINK_CHATTER
    assert capture.EXTERNAL_STACK6 + ":ipv6:icmpv6:data" in inner  # the ping
    assert capture.EXTERNAL_STACK6 + ":ipv6:tcp" in inner
    tun = set(capture.stacks(files["tun0"]))
    assert "raw:ipv6:tcp" in tun and "raw:ipv6:icmpv6:data" in tun
    mss = capture.fields(files["tun0"], ["tcp.options.mss_val"], None, "tcp.flags.syn == 1")
    clamp = tun_mtu(GCM, outer_ipv6=True) - 60  # IPv6 40 + TCP 20
    assert mss and all(int(row[0]) <= clamp for row in mss), mss


def test_a_lab_with_ipv6_off_is_ipv4_only(prefix):
    lab.up(prefix=prefix, topology=replace(DEFAULT_TOPOLOGY, ipv6=False), cipher="plain")
    result = lab.verify(prefix)
    assert result["ok"] and not [c for c in result["checks"] if ":" in c["name"]]
    assert (
        "inet6"
        not in lab.exec_in(
            prefix, "r1", ["ip", "-6", "addr", "show", "tun0"], capture_output=True, text=True
        ).stdout
    )
    client = lab.status(prefix)["tunnel"]["clients"]["r1"]
    assert not client.get("tunnel_address6")


def test_ftp_inside_over_ipv6_both_modes(dual):
    """FTP to r2's fd10:8::1 (EPSV and EPRT: ftplib's IPv6 forms of PASV and PORT), over an
    IPv6 outer path, checksums compared."""
    start(dual, 6)
    config = Path(lab.status(dual.prefix)["state_dir"]) / "identity" / "r1.conf"
    assert f'endpoint = "[{SERVER6}]:4500"' in config.read_text()  # the identity's endpoint
    with ftp.lab_server(dual.prefix, "r2", listen=SERVER_TUNNEL6):
        for mode in ftp.MODES:
            result = ftp.lab_transfer(
                dual.prefix, "r1", server=SERVER_TUNNEL6, mode=mode, size_bytes=100_000
            )
            assert result["ok"] and result["sha256_sent"] == result["sha256_received"], result


def test_site_to_site_over_ipv6(prefix):
    """h1 fd16:1::10 behind r1 and h2 fd16:2::10 behind r2, joined by the tunnel, no NAT66."""
    lab.up(prefix=prefix, topology=make_topology(site_to_site=True), nat=False)

    def sh(node: str, *argv: str):
        return lab.exec_in(prefix, node, list(argv), capture_output=True, text=True, timeout=30)

    assert "fd16:2::/64 dev tun0" in sh("r1", "ip", "-6", "route").stdout
    assert "::/1" not in sh("r1", "ip", "-6", "route").stdout  # only the far LAN
    assert "fd16:1::/64 dev tun0" in sh("r2", "ip", "-6", "route").stdout
    assert sh("r1", "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    for source, destination in (("h1", "fd16:2::10"), ("h2", "fd16:1::10")):
        done = sh(source, "ping", "-c", "2", "-i", "0.2", "-W", "2", destination)
        assert done.returncode == 0, (source, destination, done.stdout)
    with ftp.lab_server(prefix, node="h2", listen="fd16:2::10"):
        result = ftp.lab_transfer(prefix, node="h1", server="fd16:2::10", size_bytes=50_000)
        assert result["ok"], result
    drops = lab.status(prefix)["tunnel"]["server"]["counters"]["drops"]
    assert "spoofed source" not in drops, drops
    lab.start_vpn(prefix, outer=6)  # the same LANs joined over an IPv6 outer path
    for destination in ("fd16:2::10", "172.16.2.10"):
        done = sh("h1", "ping", "-c", "2", "-i", "0.2", "-W", "2", destination)
        assert done.returncode == 0, (destination, done.stdout)
