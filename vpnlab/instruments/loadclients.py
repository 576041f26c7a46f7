"""A class of clients against one server: load clients that speak the real protocol, no tun0.

A full client daemon costs about 46 MB, so 250 of them would not fit a teaching machine. A load
client is the part of a daemon that the server sees: the project's own ``ClientCore`` (the same
handshake, ESP sealing, keepalives and liveness as ``vpnlab client``) with a UDP socket of its
own, and no tun0. After its handshake it sends one ICMP echo request from its tunnel address
to the server's (10.8.0.1; an IPv6-only client, past the /24's 253, an ICMPv6 one from its
fd10:8::N to fd10:8::1), sealed in ESP; the server opens it and writes it to its tun0, the
kernel answers, the server seals the reply, and the load client opens it and checks it (an
echo reply, from 10.8.0.1 to it, its id and sequence number). One select loop drives every load
client with their cores' timers, always bounded in time.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import Address, Event, HandshakeCompleted, PacketReceived, SessionClosed
from vpnlab.core.packet import internet_checksum
from vpnlab.core.reasons import Close

ECHO_ID = 0x7601
ECHO_PAYLOAD = b"vpnlab class load"


IPAddress = IPv4Address | IPv6Address
ICMP6 = 58


def echo_request(source: IPAddress, target: IPAddress, seq: int) -> bytes:
    """An ICMP echo request ``source`` -> ``target`` (checksums filled in): IPv4, or ICMPv6
    for two IPv6 addresses."""
    if isinstance(source, IPv6Address):
        return _echo_request6(source, target, seq)
    icmp = struct.pack("!BBHHH", 8, 0, 0, ECHO_ID, seq) + ECHO_PAYLOAD
    icmp = icmp[:2] + internet_checksum(icmp).to_bytes(2, "big") + icmp[4:]
    total = 20 + len(icmp)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, seq, 0, 64, 1, 0, source.packed, target.packed
    )
    return ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:] + icmp


def _echo_request6(source: IPv6Address, target: IPAddress, seq: int) -> bytes:
    """ICMPv6 echo request (type 128); its checksum covers the RFC 8200 pseudo-header."""
    icmp = struct.pack("!BBHHH", 128, 0, 0, ECHO_ID, seq) + ECHO_PAYLOAD
    pseudo = source.packed + target.packed + struct.pack("!I3xB", len(icmp), ICMP6)
    icmp = icmp[:2] + internet_checksum(pseudo + icmp).to_bytes(2, "big") + icmp[4:]
    header = struct.pack("!IHBB", 6 << 28, len(icmp), ICMP6, 64)
    return header + source.packed + target.packed + icmp


def is_echo_reply(packet: bytes, source: IPAddress, target: IPAddress, seq: int) -> bool:
    """Whether ``packet`` answers :func:`echo_request` (``source``, ``target``, ``seq``)."""
    if isinstance(source, IPv6Address):
        return (
            len(packet) >= 48
            and packet[0] >> 4 == 6
            and packet[6] == ICMP6
            and packet[8:24] == target.packed
            and packet[24:40] == source.packed
            and packet[40] == 129
            and packet[44:48] == struct.pack("!HH", ECHO_ID, seq)
            and packet[48:] == ECHO_PAYLOAD
        )
    return (
        len(packet) >= 28
        and packet[9] == 1
        and packet[12:16] == target.packed
        and packet[16:20] == source.packed
        and packet[20] == 0
        and packet[24:28] == struct.pack("!HH", ECHO_ID, seq)
        and packet[28:] == ECHO_PAYLOAD
    )


@dataclass
class LoadClient:
    """One load client: its core, its socket and what it measured (monotonic seconds)."""

    core: ClientCore
    sock: socket.socket
    hello_at: float = 0.0
    connected_at: float | None = None
    ping_seq: int = 0
    ping_at: float | None = None
    rtt_s: float | None = None
    closed: Close | None = None
    bad_replies: int = 0
    make_core: Callable[[], ClientCore] | None = None
    """Its own cores (an identity each); None: the driver's."""

    @property
    def handshake_s(self) -> float | None:
        return None if self.connected_at is None else self.connected_at - self.hello_at


class LoadDriver:
    """The select loop of many load clients (the notes' loop, without tun0).

    Args:
        server: the server's UDP address.
        make_core: a fresh ClientCore (its handshake) for each connection.
        target: where the echo requests go (the server's tunnel address).
        target6: where those of IPv6-only clients go (its twin, fd10:8::1); None: they
            send none.
    """

    def __init__(
        self,
        server: Address,
        make_core: Callable[[], ClientCore],
        target: IPv4Address,
        target6: IPv6Address | None = None,
    ) -> None:
        self.server = server
        self.make_core = make_core
        self.target = target
        self.target6 = target6
        self.selector = selectors.DefaultSelector()
        self.clients: list[LoadClient] = []

    def add(
        self, sock: socket.socket, make_core: Callable[[], ClientCore] | None = None
    ) -> LoadClient:
        """A load client on ``sock`` (bound, non-blocking); it connects when told to.
        ``make_core``: its own (the identity mode: each load client a peer of its own)."""
        client = LoadClient((make_core or self.make_core)(), sock, make_core=make_core)
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.clients.append(client)
        return client

    def connect(self, client: LoadClient) -> None:
        """ClientConnection: a fresh core sends its Hello now."""
        client.core = (client.make_core or self.make_core)()
        client.connected_at = client.ping_at = client.rtt_s = client.closed = None
        client.hello_at = time.monotonic()
        self._events(client, client.core.connect(client.hello_at))
        self._flush(client)

    def ping(self, client: LoadClient) -> None:
        """TunSelected, as if tun0 had one echo request: sealed by the core, sent."""
        ends = self._ends(client)
        if ends is None:
            return
        client.ping_seq += 1
        client.rtt_s = None
        client.ping_at = time.monotonic()
        packet = echo_request(*ends, client.ping_seq)
        self._events(client, client.core.send_packets([packet], client.ping_at))
        self._flush(client)

    def run(self, done: Callable[[], bool], limit_s: float) -> bool:
        """SockSelected and the timers, until ``done()`` or ``limit_s`` passed; whether done."""
        end = time.monotonic() + limit_s
        while not done():
            now = time.monotonic()
            if now >= end:
                return False
            for key, _ in self.selector.select(min(0.05, end - now)):
                self._receive(key.data)
            now = time.monotonic()
            for client in self.clients:
                deadline = client.core.next_timer()
                if deadline is not None and now >= deadline:
                    self._events(client, client.core.handle_timer(now))
                    self._flush(client)
        return True

    def close(self) -> None:
        """CleanUp: a Bye from every connected client; the sockets stay open."""
        now = time.monotonic()
        for client in self.clients:
            client.core.close(now)
            self._flush(client)

    def _receive(self, client: LoadClient) -> None:
        for _ in range(64):
            try:
                datagram, peer = client.sock.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError:  # an ICMP error queued on the socket: the next Hello retries
                continue
            now = time.monotonic()
            packets, events = client.core.receive_datagrams([datagram], peer[:2], now)
            self._events(client, [*events, *map(PacketReceived, packets)])
            self._flush(client)

    def _events(self, client: LoadClient, events: list[Event]) -> None:
        now = time.monotonic()
        for event in events:
            if type(event) is HandshakeCompleted and client.connected_at is None:
                client.connected_at = now
            elif type(event) is SessionClosed:
                client.closed = event.reason
            elif type(event) is PacketReceived and client.ping_at is not None:
                ends = self._ends(client)
                if ends is not None and is_echo_reply(event.packet, *ends, client.ping_seq):
                    client.rtt_s = now - client.ping_at
                else:
                    client.bad_replies += 1

    def _ends(self, client: LoadClient) -> tuple[IPAddress, IPAddress] | None:
        """A connected client's echo: its tunnel address and the target of that family."""
        session = client.core.session
        if session is None:
            return None
        if session.tunnel_address is not None:
            return session.tunnel_address.ip, self.target
        if self.target6 is None:
            return None
        return session.tunnel_address6.ip, self.target6

    def _flush(self, client: LoadClient) -> None:
        for datagram, peer in client.core.datagrams_to_send():
            with contextlib.suppress(OSError):  # a full buffer: the core's retry sends again
                client.sock.sendto(datagram, peer)
