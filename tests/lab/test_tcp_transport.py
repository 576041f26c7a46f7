"""``--transport tcp``: the same VPN over one TCP connection per client (the counter-example).

One lab with two clients (r1, r3), both on the TCP transport: ping, HTTP and FTP through the
tunnel, one TCP connection per client on port 4500 and no UDP socket, liveness unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.instruments import ftp
from vpnlab.lab.topology import make_topology

from .helpers import SERVER_ENDPOINT, SERVER_IP, WEB_IP, build_lab, tunnel_address

pytestmark = pytest.mark.lab

TCP = ["--transport", "tcp"]


@pytest.fixture(scope="module")
def tcp_lab():
    for handle in build_lab(vpn=False, topology=make_topology(clients=2)):
        lab.start_vpn(handle.prefix, "esp-aes-gcm", server_args=TCP, client_args=TCP)
        yield handle


def test_tcp_transport_carries_ping_and_http_for_every_client(tcp_lab):
    for node in ("r1", "r3"):
        ping = tcp_lab.run(node, "ping", "-c", "3", "-i", "0.2", "-W", "2", WEB_IP, timeout=10)
        assert ping.returncode == 0, ping.stdout
        who = tcp_lab.run(node, "curl", "-s", "-m", "5", f"http://{WEB_IP}/", timeout=10)
        assert who.stdout.strip() == f"you are {SERVER_IP}"  # through the tunnel and NAT
    server = lab.status(tcp_lab.prefix)["tunnel"]["server"]
    assert len(server["clients"]) == 2
    assert {c["tunnel_address"] for c in server["clients"]} == {
        tunnel_address(0),
        tunnel_address(1),
    }


def test_tcp_transport_is_tcp_on_the_wire(tcp_lab):
    tcp = tcp_lab.run("r2", "ss", "-Htn", "state", "established", "sport", "= :4500").stdout
    assert len(tcp.strip().splitlines()) == 2  # one connection per client
    assert tcp_lab.run("r2", "ss", "-Hun", "sport", "= :4500").stdout.strip() == ""  # no UDP
    listening = tcp_lab.run("r2", "ss", "-Htln", "sport", "= :4500").stdout
    assert SERVER_ENDPOINT in listening
    log = Path(lab.status(tcp_lab.prefix)["daemons"]["server"]["log"]).read_text()
    assert f"tcp {SERVER_ENDPOINT}" in log


def test_tcp_transport_carries_ftp_and_a_download(tcp_lab):
    with ftp.lab_server(tcp_lab.prefix):
        for mode in ("passive", "active"):
            result = ftp.lab_transfer(tcp_lab.prefix, mode=mode, size_bytes=200_000)
            assert result["ok"], result
    got = tcp_lab.run(
        "r1", "sh", "-c", f"curl -s -m 20 http://{WEB_IP}/bytes/2000000 | wc -c", timeout=30
    )
    assert got.stdout.strip() == "2000000"
    client = lab.status(tcp_lab.prefix)["tunnel"]["clients"]["r1"]
    assert client["state"] == "connected"
    assert not any(k.startswith("tcp:") for k in client["counters"]["drops"])


@pytest.fixture
def tcp6_lab():
    for handle in build_lab(vpn=False, topology=make_topology(clients=1)):
        lab.start_vpn(handle.prefix, "esp-aes-gcm", server_args=TCP, client_args=TCP, outer=6)
        yield handle


def test_tcp_transport_over_an_ipv6_outer_path(tcp6_lab):
    """``--transport tcp`` to a server reached over IPv6: the same frames in a TCP/IPv6
    connection, and both families inside it."""
    topology = make_topology(clients=1)
    tcp = tcp6_lab.run("r2", "ss", "-Htn", "state", "established", "sport", "= :4500").stdout
    assert f"[{topology.server_ip6}]:4500" in tcp, tcp  # one TCP/IPv6 connection
    ping = tcp6_lab.run("r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP, timeout=10)
    assert ping.returncode == 0, ping.stdout
    ping6 = tcp6_lab.run("r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", topology.web_ip6)
    assert ping6.returncode == 0, ping6.stdout
