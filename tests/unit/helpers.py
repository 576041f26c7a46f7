"""What the unit tests share; above all a client core and a server core wired together.

:class:`CorePair`, as h11's ConnectionPair and aioquic's roundtrip: datagrams are handed across
by hand, the clock is a number we move. Nothing sleeps. Its peers have the lab's addresses
(from the topology); packets the tests build as data keep their literal addresses.
"""

from __future__ import annotations

import importlib.util
import io
import random
import select
import shutil
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import ModuleType

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import PORT
from vpnlab.core.events import Address, Event, PacketReceived
from vpnlab.core.formats import Format
from vpnlab.core.server_core import ServerCore
from vpnlab.lab.topology import DEFAULT_TOPOLOGY
from vpnlab.shell.report import Reporter
from vpnlab.shell.tunnel import Datapath, SelectLoop, SimpleDatapath
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.plain import PLAIN

SERVER = (DEFAULT_TOPOLOGY.server_ip, PORT)
CLIENT = (DEFAULT_TOPOLOGY.node(DEFAULT_TOPOLOGY.tunnel.clients[0]).address(), PORT)
SERVER_TUNNEL_ADDRESS = IPv4Interface(DEFAULT_TOPOLOGY.tunnel.server_address)

PSK = bytes(range(32))
FORMATS = [PLAIN, make_format("esp-null", PSK), make_format("esp-aes-gcm", PSK)]
"""Every wire format, for the core tests (the ``fmt`` fixture of conftest.py)."""

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
"""The committed reference captures."""
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (the developers' scripts are not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_random(seed: int = 1):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def ipv6_packet(src: str, dst: str, payload: bytes = b"x" * 20) -> bytes:
    """An IPv6/UDP packet (scapy), the IPv6 counterpart of :func:`ipv4_packet`."""
    return bytes(IPv6(src=src, dst=dst) / UDP(sport=1, dport=2) / payload)


def ipv4_packet(src: str, dst: str, payload: bytes = b"x" * 20, proto: int = 17) -> bytes:
    """A syntactically valid IPv4 header + payload (checksum left 0: the cores never check it)."""
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        proto,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    return header + payload


def receive_one(core: ClientCore | ServerCore, datagram: bytes, peer: Address, now: float):
    """One datagram through the cores' batch entry (a batch of one, as the select loop hands
    it): its events, then what it opened for tun0 as PacketReceived, in one list."""
    packets, events = core.receive_datagrams([datagram], peer, now)
    return [*events, *map(PacketReceived, packets)]


class CorePair:
    """One client and one server core and the fake clock they share."""

    def __init__(self, fmt: Format, now: float = 0.0, **server_kw) -> None:
        self.now = now
        self.server = ServerCore(fmt, SERVER_TUNNEL_ADDRESS, seeded_random(1), **server_kw)
        self.client = ClientCore(SERVER, fmt.client_handshake(seeded_random(2)))
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def client_to_server(self, drop: bool = False) -> int:
        """Deliver everything the client queued; return how many datagrams."""
        out = self.client.datagrams_to_send()
        for datagram, peer in out:
            assert peer == SERVER
            if not drop:
                self.server_events += receive_one(self.server, datagram, CLIENT, self.now)
        return len(out)

    def server_to_client(self, drop: bool = False) -> int:
        out = self.server.datagrams_to_send()
        for datagram, peer in out:
            assert peer == CLIENT
            if not drop:
                self.client_events += receive_one(self.client, datagram, SERVER, self.now)
        return len(out)

    def connect(self) -> None:
        self.client_events += self.client.connect(self.now)
        self.client_to_server()
        self.server_to_client()

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing both cores' timers on the way, delivering all."""
        for _ in range(100_000):
            timers = [
                t for t in (self.client.next_timer(), self.server.next_timer()) if t is not None
            ]
            due = min(timers, default=None)
            if due is None or due > to:
                break
            self.now = due
            self.client_events += self.client.handle_timer(self.now)
            self.server_events += self.server.handle_timer(self.now)
            self.client_to_server()
            self.server_to_client()
        self.now = to


TS = [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))]
"""TCP options of :func:`super_v4`'s packets."""


def super_v4(payload: bytes, seq: int = 1000, ip_id: int = 7, flags: str = "PA", **tcp) -> bytes:
    """A TCP/IPv4 packet of any size (a TSO super-packet if large), checksums by scapy."""
    packet = IP(src="10.8.0.2", dst="203.0.113.10", id=ip_id, flags="DF") / TCP(
        sport=40000, dport=5201, seq=seq, ack=55, flags=flags, options=TS, **tcp
    )
    return bytes(packet / payload)


# --- the select loop without root: a socket pair as tun0 (test_tunnel.py, test_datapath.py) ----

BOOM = b"boom"
"""What :class:`BuggyServer` cannot parse."""


class BuggyServer(ServerCore):
    """A real ServerCore with a parser bug: it raises on anything that starts with BOOM."""

    def send_packets(self, packets: list[bytes], now: float) -> list[Event]:
        if any(packet.startswith(BOOM) for packet in packets):
            raise IndexError("index out of range")
        return super().send_packets(packets, now)

    def _receive_stranger(self, datagram: bytes, peer, now: float, to_tun: list[bytes]):
        """A datagram from an address without a session (``receive_runs`` hands each here)."""
        if datagram.startswith(BOOM):
            raise KeyError(peer)
        return super()._receive_stranger(datagram, peer, now, to_tun)


def make_loop(loop_parts, core=None, datapath: type[Datapath] = SimpleDatapath, **kw) -> SelectLoop:
    """A SelectLoop on the ``loop_parts`` fixture with ``datapath``'s two ends; a BuggyServer
    (clamping the MSS as the daemon's does) unless told."""
    tun, _, sock, signals = loop_parts
    core = core or BuggyServer(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random(), mss_clamp=1360)
    reporter = Reporter("server", None, stream=io.StringIO())
    ends = datapath(reporter)
    device = ends.device(tun.fileno(), core.counters.drops)
    transport = ends.udp(sock, core.counters.drops)
    return SelectLoop(core, device, transport, reporter, signals, **kw)


def wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 2.0)[0], "nothing arrived"
