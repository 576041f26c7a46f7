"""The fast data path in real namespaces: ordinary ESP on the wire, and it talks to the simple one.

The captures are taken on r1's and r2's own eth0 while iperf3 runs 2 s each way, so both
daemons send UDP GSO batches. The lab turns off ``tx-udp-segmentation`` on its veths
(``lab/build.py``): the kernel cuts every batch into datagrams before the veth, as a NIC
would, so the capture must hold one ESP datagram per frame, none larger than the path MTU.
scapy's SecurityAssociation, an independent ESP implementation, must decrypt every datagram,
and every inner packet's IP and TCP/ICMP checksum must be valid.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.utils import rdpcap

from vpnlab import lab
from vpnlab.lab.build import receive_like_a_nic
from vpnlab.lab.state import topology_of
from vpnlab.wire.esp import load_static_keys

from .helpers import WEB_IP, wait_until

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


def dumpcap_eth0(handle, node: str, path: Path) -> subprocess.Popen:
    """tcpdump on ``node``'s eth0 (UDP 4500, 2000 bytes of each frame, at most 20 s)."""
    argv = ["timeout", "20", "tcpdump", "-i", "eth0", "-U", "-s", "2000", "-c", "4000"]
    return subprocess.Popen(
        ["ip", "netns", "exec", handle.ns(node), *argv, "-w", str(path), "udp", "port", "4500"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def esp_sas(keys) -> dict:
    """scapy's SAs for both directions of a static-key run, by SPI."""
    return {
        sa.spi: SecurityAssociation(
            ESP,
            spi=sa.spi,
            crypt_algo="AES-GCM",
            crypt_key=sa.key,
            nat_t_header=UDP(sport=4500, dport=4500),
        )
        for sa in (keys.client_to_server, keys.server_to_client)
    }


def feature(ns: str, ifname: str, name: str) -> bool:
    """Whether ``ifname`` in ``ns`` has ethtool feature ``name`` on (``ethtool -k``)."""
    from pyroute2 import netns
    from pyroute2.ethtool.ioctl import IoctlEthtool

    ethtool = IoctlEthtool()
    ethtool.sock.close()
    ethtool.sock = netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    try:
        ethtool.change_ifname(ifname)
        return bool(ethtool.get_features()[name])
    finally:
        ethtool.close()


def test_lab_veths_leave_udp_segmentation_to_the_kernel(fresh_lab):
    for node, ifname in (("r1", "eth0"), ("isp", "eth0"), ("isp", "eth1"), ("r2", "eth0")):
        assert not feature(fresh_lab.ns(node), ifname, "tx-udp-segmentation"), (node, ifname)


def test_the_bench_lab_receives_bursts_in_gro_batches_the_teaching_lab_does_not(fresh_lab):
    """The teaching lab hands each datagram to the server's socket on its own (a capture on
    r2's eth0 shows one ESP datagram per frame); ``receive_like_a_nic``, which the bench's lab
    runs, turns GRO on at the daemons' eth0 and TSO off on the isp ends facing them, and then
    the fast path's UDP_GRO socket receives a burst of the client's datagrams in one call."""
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm")  # the default data path

    def gro_batches() -> int:
        status = lab.status(fresh_lab.prefix)["tunnel"]["server"]
        return int(status["fastpath"].get("gro_batches", 0))

    assert mbps(iperf(fresh_lab, 2)) > 10
    assert gro_batches() == 0
    receive_like_a_nic(fresh_lab.prefix, topology_of(fresh_lab.prefix))
    for node, ifname, name, value in (
        ("r1", "eth0", "rx-gro", True),
        ("r2", "eth0", "rx-gro", True),
        ("isp", "eth0", "tx-tcp-segmentation", False),  # the end facing r1
        ("isp", "eth1", "tx-tcp-segmentation", False),  # the end facing r2
        ("isp", "eth2", "tx-tcp-segmentation", True),  # web's side: as it was
        ("web", "eth0", "rx-gro", False),
    ):
        assert feature(fresh_lab.ns(node), ifname, name) is value, (node, ifname, name)
    assert mbps(iperf(fresh_lab, 2)) > 10
    assert wait_until(lambda: gro_batches() > 100, 3) is not None, gro_batches()


def test_every_fast_path_datagram_is_ordinary_esp(fresh_lab, tmp_path):
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm", static_keys=True)  # the default data path
    info = lab.status(fresh_lab.prefix)
    assert "datapath fast" in Path(info["daemons"]["server"]["log"]).read_text()
    keys = load_static_keys((Path(info["state_dir"]) / "static-keys.json").read_text())
    captures = {node: tmp_path / f"{node}-eth0.pcap" for node in ("r1", "r2")}
    dumps = [dumpcap_eth0(fresh_lab, node, path) for node, path in captures.items()]
    time.sleep(1.0)
    assert mbps(iperf(fresh_lab, 2)) > 10  # r1 -> web: the client sends the batches
    assert mbps(iperf(fresh_lab, 2, reverse=True)) > 10  # web -> r1: the server does
    for dump in dumps:
        dump.terminate()
        dump.wait(timeout=15)
    sas = esp_sas(keys)
    for node, path in captures.items():
        counted = {"esp": 0, "tcp": 0, "keepalive": 0}
        for frame in rdpcap(str(path)):
            outer = frame[IP]
            assert outer.len <= 1500, f"{node} eth0: a frame larger than the path MTU: {outer.len}"
            payload = bytes(outer[UDP].payload)
            if payload == b"\xff":
                counted["keepalive"] += 1
                continue
            inner = sas[ESP(payload).spi].decrypt(IP(bytes(outer)))  # raises on a bad ICV
            counted["esp"] += 1
            if not bytes(inner):
                continue  # a keepalive (next header 59)
            inner = IP(bytes(inner))
            assert valid_checksums(inner), inner.summary()
            counted["tcp"] += TCP in inner
        assert counted["esp"] >= 1000 and counted["tcp"] >= 1000, (node, counted)


def test_a_download_reaches_the_server_in_super_packets(fresh_lab):
    """web -> r1: web's TCP hands its veth 64 KB super-packets, r2 forwards them to tun0, and
    the server reads them whole, to cut them into segments itself. With tun0's gso_max_size
    below the veth's (60,000 until 2026-12-07) the kernel cut them before tun0 instead, and
    the server completed each packet's checksum in Python: half the throughput."""
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm")  # the default data path

    def server() -> dict:  # the status file is rewritten about once a second
        return lab.status(fresh_lab.prefix)["tunnel"]["server"]

    before = server()
    assert mbps(iperf(fresh_lab, 2, reverse=True)) > 10
    moved = wait_until(
        lambda: (
            server()["counters"]["packets_from_tun"] - before["counters"]["packets_from_tun"]
            > 10_000
        ),
        3,
    )
    assert moved is not None, server()
    after = server()
    packets = after["counters"]["packets_from_tun"] - before["counters"]["packets_from_tun"]
    whole = after["fastpath"].get("super_packet_segments", 0) - before["fastpath"].get(
        "super_packet_segments", 0
    )
    assert whole >= 0.8 * packets, (whole, packets, after["fastpath"])


def test_a_udp_download_arrives_with_valid_checksums(fresh_lab):
    """web -> r1, a bounded UDP stream (iperf3 -u, 200 Mbit/s for 2 s): the server reads its
    datagrams a run at a time and completes their checksums together (``VnetTun.read``,
    ``segment.complete_checksums``). r1's kernel counts any it finds wrong (UdpInCsumErrors):
    none. (How many are lost depends on how busy the machine is: not asserted.)"""
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm")  # the default data path: fast
    server = subprocess.Popen(
        ["ip", "netns", "exec", fresh_lab.ns("web"), "timeout", "15", "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    argv = ["timeout", "15", "iperf3", "-c", WEB_IP, "-u", "-b", "200M", "-l", "1300", "-t", "2"]
    done = fresh_lab.run("r1", *argv, "-R", "-J", timeout=20)
    server.wait(timeout=10)
    import json

    result = json.loads(done.stdout)["end"]["sum"]
    assert result["packets"] - result["lost_packets"] > 1000, result  # loss: the machine's
    errors = fresh_lab.run("r1", "nstat", "-az", "UdpInCsumErrors").stdout.split()
    assert errors[errors.index("UdpInCsumErrors") + 1] == "0", errors
    fast = lab.status(fresh_lab.prefix)["tunnel"]["server"]["fastpath"]
    assert fast.get("gso_sends", 0) > 0, fast  # runs of datagrams went out as GSO batches


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
