"""fast/datapath.py without root: the SelectLoop with FastDatapath's ends on a socket pair
(the kernel refuses tun0's offloads on a socket, and the fast path does without them).

As on the simple path, a bug costs one read or one datagram (``bug: <ExceptionType>``), never
the daemon: in TunSelected, in SockSelected (each datagram of a GRO batch on its own) and in
the writes to tun0.
"""

from __future__ import annotations

import socket
import time

import pytest

from vpnlab.fast import datapath
from vpnlab.fast.datapath import FastDatapath
from vpnlab.fast.segment import NO_OFFLOAD

from .helpers import BOOM, ipv4_packet, make_loop, wait_readable


@pytest.fixture
def fast(loop_parts):
    """A SelectLoop on FastDatapath's ends whose tun0 is a socket pair: the kernel refuses the
    vnet header there (``offload.enable_tun`` records it), so no TSO."""
    return make_loop(loop_parts, datapath=FastDatapath)


def test_FastDatapath_tun_selected_counts_a_core_bug_and_goes_on(fast, loop_parts):
    """Single packets read in one call go to the core together, as a super-packet's segments
    do: a bug costs them (counted once), and the next call's packets are handled."""
    _, tun_peer, _, _ = loop_parts
    for packet in (BOOM, ipv4_packet("10.8.0.1", "10.8.0.9")):
        tun_peer.send(packet)
    fast.tun_selected(time.monotonic())
    drops = fast.core.counters.drops
    assert drops["bug: IndexError"] == 1
    assert drops["tun: no client for destination"] == 0
    tun_peer.send(ipv4_packet("10.8.0.1", "10.8.0.9"))
    fast.tun_selected(time.monotonic())
    assert drops["tun: no client for destination"] == 1


def test_VnetTun_reads_a_run_of_single_packets_in_one_call(fast, loop_parts):
    """Up to ``limit`` single packets per call (one after a pause: ``limit`` 1); after a call
    that emptied the ring the next returns [] without reading, so a wake-up reads the empty
    ring once, and the call after it reads again."""
    _, tun_peer, _, _ = loop_parts
    packets = [ipv4_packet("10.8.0.1", f"10.8.0.{n}") for n in range(2, 7)]
    for packet in packets:
        tun_peer.send(packet)
    assert fast.device.read(1) == packets[:1]
    assert fast.device.read(3) == packets[1:4]
    assert fast.device.read(64) == packets[4:]  # and the ring is empty
    late = ipv4_packet("10.8.0.1", "10.8.0.9")
    tun_peer.send(late)
    assert fast.device.read(64) == []
    assert fast.device.read(64) == [late]


def test_FastDatapath_sock_selected_counts_a_core_bug_and_goes_on(fast, loop_parts):
    _, _, sock, _ = loop_parts
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for datagram in (BOOM, b"not boom", BOOM + b"!"):
            stranger.sendto(datagram, sock.getsockname())
        wait_readable(sock)
        time.sleep(0.05)
        fast.sock_selected(time.monotonic())
    drops = fast.core.counters.drops
    assert drops["bug: KeyError"] == 2
    assert drops["unknown peer"] == 1


def test_VnetTun_write_survives_a_coalesce_bug(fast, loop_parts, monkeypatch):
    """A bug joining segments costs the join, not the packets: each is written on its own."""
    _, tun_peer, _, _ = loop_parts
    device = fast.device
    device.offloads.vnet_hdr = device.offloads.tso = True

    def broken(packets):
        raise ValueError("bad segment")

    monkeypatch.setattr(datapath, "coalesce", broken)
    packets = [ipv4_packet("10.8.0.2", "10.8.0.1"), ipv4_packet("10.8.0.3", "10.8.0.1")]
    device.write(packets)
    assert fast.core.counters.drops["bug: ValueError"] == 1
    assert [tun_peer.recv(2048) for _ in packets] == [NO_OFFLOAD + p for p in packets]


def test_FastDatapath_reports_its_offloads_and_batches(fast):
    """The status file shows the data path, what the kernel granted and the batch counters."""
    status = fast.device.describe()
    assert status["datapath"] == "fast"
    assert str(status["offloads"]).startswith("offloads ")
    assert isinstance(status["fastpath"], dict)
    log = fast.reporter.stream.getvalue()
    assert "datapath fast: offloads" in log
    assert "fast path: kernel refused TUNSETVNETHDRSZ" in log  # a socket is no tun0
