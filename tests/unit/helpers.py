"""A client core and a server core wired together through an in-memory "network".

As h11's ConnectionPair and aioquic's roundtrip: datagrams are handed across by hand, the
clock is a number we move. Nothing sleeps.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv4Interface

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import Event
from vpnlab.core.formats import Format
from vpnlab.core.server_core import ServerCore

SERVER = ("198.51.100.2", 4500)
CLIENT = ("192.0.2.2", 4500)


def seeded_random(seed: int = 1):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


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


class CorePair:
    """One client and one server core and the fake clock they share."""

    def __init__(self, fmt: Format, now: float = 0.0, **server_kw) -> None:
        self.now = now
        self.server = ServerCore(fmt, IPv4Interface("10.8.0.1/24"), seeded_random(1), **server_kw)
        self.client = ClientCore(SERVER, fmt.client_handshake(seeded_random(2)))
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def client_to_server(self, drop: bool = False) -> int:
        """Deliver everything the client queued; return how many datagrams."""
        out = self.client.datagrams_to_send()
        for datagram, peer in out:
            assert peer == SERVER
            if not drop:
                self.server_events += self.server.receive_datagram(datagram, CLIENT, self.now)
        return len(out)

    def server_to_client(self, drop: bool = False) -> int:
        out = self.server.datagrams_to_send()
        for datagram, peer in out:
            assert peer == CLIENT
            if not drop:
                self.client_events += self.client.receive_datagram(datagram, SERVER, self.now)
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
