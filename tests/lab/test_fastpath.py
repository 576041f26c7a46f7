"""The fast data path in real namespaces: ordinary ESP on the wire, and it talks to the simple one.

The capture is taken on the isp router while iperf3 runs for 2 s. r1 and r2 get
``gso_max_segs 1`` on eth0, so their UDP GSO sends are cut into datagrams before they leave, as
a physical NIC would (veths would otherwise carry the 64 KB batch in one piece). scapy's
SecurityAssociation, an independent ESP implementation, must decrypt every datagram, and every
inner packet's IP and TCP/ICMP checksum must be valid.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.utils import rdpcap

from vpnlab import lab
from vpnlab.wire.esp import load_static_keys

from .helpers import WEB_IP

pytestmark = pytest.mark.lab

FAST = ["--datapath", "fast"]
SIMPLE = ["--datapath", "simple"]


def iperf(handle, seconds: int = 2, reverse: bool = False) -> subprocess.CompletedProcess:
    server = subprocess.Popen(
        ["ip", "netns", "exec", handle.ns("web"), "timeout", "15", "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    argv = ["timeout", "15", "iperf3", "-c", WEB_IP, "-t", str(seconds), "-J"]
    done = handle.run("r1", *argv, *(["-R"] if reverse else []), timeout=20)
    server.wait(timeout=10)
    return done


def mbps(done: subprocess.CompletedProcess) -> float:
    import json

    return json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def valid_checksums(inner: IP) -> bool:
    again = inner.copy()
    del again.chksum
    layer = TCP if TCP in inner else ICMP if ICMP in inner else None
    if layer is not None:
        del again[layer].chksum
    again = IP(bytes(again))
    if again.chksum != inner.chksum:
        return False
    return layer is None or again[layer].chksum == inner[layer].chksum


def test_every_fast_path_datagram_is_ordinary_esp(fresh_lab, tmp_path):
    lab.start_vpn(
        fresh_lab.prefix, "esp-aes-gcm", static_keys=True, server_args=FAST, client_args=FAST
    )
    keys = load_static_keys(
        (Path(lab.status(fresh_lab.prefix)["state_dir"]) / "static-keys.json").read_text()
    )
    for node in ("r1", "r2"):
        fresh_lab.run(node, "ip", "link", "set", "dev", "eth0", "gso_max_segs", "1", check=True)
    capture = tmp_path / "fast.pcap"
    tcpdump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            fresh_lab.ns("isp"),
            "timeout",
            "12",
            "tcpdump",
            "-i",
            "eth0",
            "-U",
            "-s",
            "2000",
            "-c",
            "1500",
            "-w",
            str(capture),
            "udp",
            "port",
            "4500",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    done = iperf(fresh_lab, 2)
    assert mbps(done) > 10, done.stdout[-500:]
    tcpdump.wait(timeout=15)
    sas = {
        keys.client_to_server.spi: SecurityAssociation(
            ESP,
            spi=keys.client_to_server.spi,
            crypt_algo="AES-GCM",
            crypt_key=keys.client_to_server.key,
            nat_t_header=UDP(sport=4500, dport=4500),
        ),
        keys.server_to_client.spi: SecurityAssociation(
            ESP,
            spi=keys.server_to_client.spi,
            crypt_algo="AES-GCM",
            crypt_key=keys.server_to_client.key,
            nat_t_header=UDP(sport=4500, dport=4500),
        ),
    }
    counted = {"esp": 0, "tcp": 0, "keepalive": 0}
    for frame in rdpcap(str(capture)):
        outer = frame[IP]
        assert outer.len <= 1500, f"datagram larger than the path MTU: {outer.len}"
        payload = bytes(outer[UDP].payload)
        if payload == b"\xff":
            counted["keepalive"] += 1
            continue
        esp = ESP(payload)
        inner = sas[esp.spi].decrypt(IP(bytes(outer)))  # raises if the ICV is wrong
        counted["esp"] += 1
        if not bytes(inner):
            continue  # a keepalive (next header 59)
        inner = IP(bytes(inner))
        assert valid_checksums(inner), inner.summary()
        counted["tcp"] += TCP in inner
    assert counted["esp"] >= 500 and counted["tcp"] >= 500, counted


@pytest.mark.parametrize(
    "server_args,client_args",
    [(FAST, SIMPLE), (SIMPLE, FAST)],
    ids=["fast-server-simple-client", "simple-server-fast-client"],
)
def test_simple_and_fast_peers_talk_both_ways(fresh_lab, server_args, client_args):
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm", server_args=server_args, client_args=client_args)
    ping = fresh_lab.run("r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP)
    assert ping.returncode == 0, ping.stdout
    assert mbps(iperf(fresh_lab, 2)) > 10  # r1 -> web
    assert mbps(iperf(fresh_lab, 2, reverse=True)) > 10  # web -> r1
    info = lab.status(fresh_lab.prefix)
    fast = "server" if server_args == FAST else "client-r1"
    assert "datapath fast" in Path(info["daemons"][fast]["log"]).read_text()
    counters = info["tunnel"]["server"]["counters"]
    assert counters["drops"].get("bad icv", 0) == 0
