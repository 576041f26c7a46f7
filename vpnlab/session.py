"""The sans-IO protocol core: handshake, liveness timers and counters for both daemons.

Nothing here touches a socket, a file descriptor or the clock: datagrams and packets come in as
bytes, the time comes in as ``now`` (seconds, monotonic), and what must be sent goes out through
``datagrams_to_send()``. The select loop in ``tunnel.py`` is the only caller that does I/O, and
the unit tests drive two cores against each other with a fake clock (see ``tests/unit``).

    ClientCore   ClientConnection of the notes: Hello, 2.5 s connect timeout, then one Session.
    ServerCore   ServerConnection of the notes: answers Hellos, one Session per client.
    Session      one established peer: seal/open, keepalive when idle, 6 s liveness timeout.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from . import constants
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Address,
    DatagramDropped,
    Event,
    HandshakeCompleted,
    PacketReceived,
    SessionClosed,
)
from .formats import ClientHandshake, Established, Format, Kind, Protection, RandomBytes

NAT_KEEPALIVE = b"\xff"
"""RFC 3948 NAT-keepalive: accepted and ignored, never counted as liveness."""


class State(enum.Enum):
    """Where a core is in the design notes' connection flow."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


# The one transition table (as h11's _state.py): (state, what happened) -> next state.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.CONNECTING, "welcome"): State.CONNECTED,
    (State.CONNECTING, "server unreachable"): State.CLOSED,
    (State.CONNECTING, "closed"): State.CLOSED,
    (State.CONNECTED, "peer lost"): State.CLOSED,
    (State.CONNECTED, "bye"): State.CLOSED,
    (State.CONNECTED, "closed"): State.CLOSED,
}


def next_state(state: State, what: str) -> State:
    """Look up the transition table; a missing entry is a bug in the caller."""
    try:
        return TRANSITIONS[(state, what)]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state.value} on {what!r}") from None


@dataclass
class Counters:
    """What a student reads in the log and the status file: packets, bytes, drops by reason."""

    packets_from_tun: int = 0
    bytes_from_tun: int = 0
    packets_to_tun: int = 0
    bytes_to_tun: int = 0
    keepalives_sent: int = 0
    keepalives_received: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "packets_from_tun": self.packets_from_tun,
            "bytes_from_tun": self.bytes_from_tun,
            "packets_to_tun": self.packets_to_tun,
            "bytes_to_tun": self.bytes_to_tun,
            "keepalives_sent": self.keepalives_sent,
            "keepalives_received": self.keepalives_received,
            "drops": dict(sorted(self.drops.items())),
        }


@dataclass(frozen=True)
class Timeouts:
    """The notes' timers; tests shorten nothing, they move the fake clock instead."""

    connect_s: float = constants.CONNECT_TIMEOUT_S
    hello_retry_s: float = constants.HELLO_RETRY_S
    keepalive_s: float = constants.KEEPALIVE_INTERVAL_S
    liveness_s: float = constants.LIVENESS_TIMEOUT_S


def ipv4_source(packet: bytes) -> IPv4Address | None:
    """The source address of an IPv4 packet, or None if ``packet`` is not IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return IPv4Address(packet[12:16])


def ipv4_destination(packet: bytes) -> IPv4Address | None:
    """The destination address of an IPv4 packet, or None if ``packet`` is not IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return IPv4Address(packet[16:20])


class Session:
    """One established peer: TunSelected and SockSelected for its packets, and its timers.

    Args:
        peer: the peer's UDP address.
        established: keys and tunnel address from the handshake (or a static key file).
        now: the time the session starts; both timers start from it.
        counters: where to count (the core's, shared by all its sessions).
    """

    def __init__(
        self,
        peer: Address,
        established: Established,
        now: float,
        counters: Counters,
        timeouts: Timeouts,
    ) -> None:
        self.peer = peer
        self.protection: Protection = established.protection
        self.tunnel_address = established.client_address
        self.counters = counters
        self.timeouts = timeouts
        self.last_received = now
        self.last_sent = now
        self.outbox: list[bytes] = []

    def send_packet(self, packet: bytes, now: float) -> None:
        """TunSelected: seal one packet read from tun0 for the peer.

        Raises:
            LocalProtocolError: the packet cannot be sealed (too large for the format).
        """
        self.outbox.append(self.protection.seal(packet))
        self.last_sent = now
        self.counters.packets_from_tun += 1
        self.counters.bytes_from_tun += len(packet)

    def receive_datagram(self, datagram: bytes, now: float) -> tuple[Kind, bytes]:
        """SockSelected: open one datagram; raises RemoteProtocolError if it is bad."""
        if datagram == NAT_KEEPALIVE:
            raise RemoteProtocolError("nat keepalive")
        kind, packet = self.protection.open(datagram)
        self.last_received = now
        if kind is Kind.KEEPALIVE:
            self.counters.keepalives_received += 1
        return kind, packet

    def next_timer(self) -> float:
        """The earlier of the keepalive and the liveness deadlines."""
        return min(
            self.last_sent + self.timeouts.keepalive_s,
            self.last_received + self.timeouts.liveness_s,
        )

    def handle_timer(self, now: float) -> bool:
        """Send a keepalive if idle; return False once the peer has been silent too long."""
        if now >= self.last_received + self.timeouts.liveness_s:
            return False
        if now >= self.last_sent + self.timeouts.keepalive_s:
            self._send_keepalive(now)
        return True

    def _send_keepalive(self, now: float) -> None:
        self.outbox.append(self.protection.seal_keepalive())
        self.last_sent = now
        self.counters.keepalives_sent += 1

    def close(self) -> None:
        """CleanUp: tell the peer at once, so it need not wait for its liveness timeout."""
        self.outbox.append(self.protection.seal_bye())


class ClientCore:
    """ClientConnection: Hello, wait up to 2.5 s for the answer, then carry packets.

    Args:
        server: the server's UDP address; datagrams from anywhere else are dropped.
        handshake: the format's client handshake, or None with ``established`` (static keys).
        established: static keys: skip the handshake.
        clock_offset_s: added to ``now`` to get wall-clock time for the handshake's
            timestamps, which the server compares with its own clock.
    """

    def __init__(
        self,
        server: Address,
        handshake: ClientHandshake | None,
        *,
        established: Established | None = None,
        timeouts: Timeouts = Timeouts(),
        clock_offset_s: float = 0.0,
    ) -> None:
        if (handshake is None) == (established is None):
            raise LocalProtocolError("give exactly one of handshake or established")
        self.server = server
        self.handshake = handshake
        self.static = established
        self.timeouts = timeouts
        self.clock_offset_s = clock_offset_s
        self.state = State.CONNECTING
        self.counters = Counters()
        self.session: Session | None = None
        self.close_reason: str | None = None
        self._outbox: list[bytes] = []
        self._hello = b""
        self._connect_deadline = 0.0
        self._retry_at = 0.0

    def connect(self, now: float) -> list[Event]:
        """ClientConnection: send the Hello and start the 2.5 s connect timer."""
        if self.static is not None:
            return self._established(self.static, now)
        assert self.handshake is not None
        self._hello = self.handshake.hello(now + self.clock_offset_s)
        self._outbox.append(self._hello)
        self._connect_deadline = now + self.timeouts.connect_s
        self._retry_at = now + self.timeouts.hello_retry_s
        return []

    def _established(self, established: Established, now: float) -> list[Event]:
        self.state = next_state(self.state, "welcome")
        self.session = Session(self.server, established, now, self.counters, self.timeouts)
        return [HandshakeCompleted(self.server, established.client_address)]

    def _close(self, reason: str) -> list[Event]:
        self.state = next_state(self.state, reason)
        self.close_reason = reason
        return [SessionClosed(self.server, reason)]

    def _drop(self, reason: str, peer: Address | None = None) -> list[Event]:
        self.counters.drops[reason] += 1
        return [DatagramDropped(reason, peer)]

    def receive_datagram(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """SockSelected: one datagram from the socket."""
        if peer != self.server:
            return self._drop("unknown peer", peer)
        if self.state is State.CONNECTING:
            assert self.handshake is not None
            try:
                established = self.handshake.receive(datagram, now + self.clock_offset_s)
            except RemoteProtocolError as exc:
                return self._drop(exc.reason, peer)
            return self._established(established, now)
        if self.state is State.CLOSED or self.session is None:
            return self._drop("session closed", peer)
        try:
            kind, packet = self.session.receive_datagram(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        if kind is Kind.PACKET:
            self.counters.packets_to_tun += 1
            self.counters.bytes_to_tun += len(packet)
            return [PacketReceived(packet)]
        if kind is Kind.BYE:
            return self._close("bye")
        return []

    def send_packet(self, packet: bytes, now: float) -> list[Event]:
        """TunSelected: one packet read from tun0; only IPv4 enters the tunnel."""
        if self.session is None or self.state is not State.CONNECTED:
            return self._drop("not connected")
        if ipv4_source(packet) is None:
            return self._drop("tun: not ipv4")
        try:
            self.session.send_packet(packet, now)
        except LocalProtocolError as exc:
            return self._drop(f"tun: {exc}")
        return []

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything queued since the last call, with its destination."""
        queued = self._outbox
        if self.session is not None:
            queued += self.session.outbox
            self.session.outbox = []
        self._outbox = []
        return [(datagram, self.server) for datagram in queued]

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next (None: nothing pending)."""
        if self.state is State.CONNECTING and self.static is None:
            return min(self._retry_at, self._connect_deadline)
        if self.state is State.CONNECTED and self.session is not None:
            return self.session.next_timer()
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Connect timeout and Hello retries; then keepalives and the liveness timeout."""
        if self.state is State.CONNECTING:
            if now >= self._connect_deadline:
                return self._close("server unreachable")
            if now >= self._retry_at:
                self._outbox.append(self._hello)
                self._retry_at = now + self.timeouts.hello_retry_s
            return []
        session = self.session
        if self.state is State.CONNECTED and session and not session.handle_timer(now):
            return self._close("peer lost")
        return []

    def describe(self, now: float) -> dict[str, object]:
        """The status file's fields: state, addresses, counters."""
        session = self.session
        return {
            "state": self.state.value,
            "server": f"{self.server[0]}:{self.server[1]}",
            "tunnel_address": str(session.tunnel_address) if session else None,
            "close_reason": self.close_reason,
            "counters": self.counters.as_dict(),
        }

    def close(self, now: float) -> list[Event]:
        """CleanUp: say Bye if connected, and close."""
        if self.state is State.CLOSED:
            return []
        if self.state is State.CONNECTED and self.session is not None:
            self.session.close()
        return self._close("closed")


class AddressPool:
    """Tunnel addresses for clients: every host of the server's network but its own."""

    def __init__(self, server_address: IPv4Interface) -> None:
        self.server_address = server_address
        network = server_address.network
        self._free = [
            IPv4Interface(f"{host}/{network.prefixlen}")
            for host in network.hosts()
            if host != server_address.ip
        ]

    def take(self) -> IPv4Interface | None:
        return self._free.pop(0) if self._free else None

    def give_back(self, address: IPv4Interface) -> None:
        self._free.insert(0, address)

    def __len__(self) -> int:
        return len(self._free)


class ServerCore:
    """ServerConnection: answer Hellos, give each client an address, carry its packets.

    Args:
        format: the wire format (``--cipher``); None with ``static``.
        server_address: the server's own tunnel address, e.g. 10.8.0.1/24.
        random_bytes: randomness for the handshake.
        once: the design notes' behaviour: finish when the first client's session ends.
        clock_offset_s: added to ``now`` to get wall-clock time for the handshake.
        static: static keys (no handshake): the first datagram that opens with them binds
            the one client's UDP address.
    """

    def __init__(
        self,
        format: Format | None,
        server_address: IPv4Interface,
        random_bytes: RandomBytes,
        *,
        once: bool = False,
        timeouts: Timeouts = Timeouts(),
        clock_offset_s: float = 0.0,
        static: Established | None = None,
    ) -> None:
        self.format = format
        self.clock_offset_s = clock_offset_s
        self.static = static
        if (format is None) == (static is None):
            raise LocalProtocolError("give exactly one of format or static")
        self.handshake = format.server_handshake(random_bytes) if format else None
        self.pool = AddressPool(server_address)
        self.once = once
        self.timeouts = timeouts
        self.counters = Counters()
        self.sessions: dict[Address, Session] = {}
        self.by_address: dict[IPv4Address, Session] = {}
        self.finished = False
        self._replies: dict[Address, tuple[bytes, bytes]] = {}  # peer -> (hello, reply)
        self._outbox: list[tuple[bytes, Address]] = []

    @property
    def state(self) -> State:
        """CONNECTED while at least one client is, else CONNECTING (waiting for a Hello)."""
        if self.finished:
            return State.CLOSED
        return State.CONNECTED if self.sessions else State.CONNECTING

    def _drop(self, reason: str, peer: Address | None = None) -> list[Event]:
        self.counters.drops[reason] += 1
        return [DatagramDropped(reason, peer)]

    def receive_datagram(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """SockSelected: a Hello from a new client, or a datagram from a known one."""
        session = self.sessions.get(peer)
        if session is None and self.static is not None and not self.sessions:
            return self._receive_static(datagram, peer, now)
        if self.format is not None and self.format.is_hello(datagram):
            return self._receive_hello(datagram, peer, now)
        if session is None:
            return self._drop("unknown peer", peer)
        try:
            kind, packet = session.receive_datagram(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        return self._deliver(session, kind, packet)

    def _deliver(self, session: Session, kind: Kind, packet: bytes) -> list[Event]:
        peer = session.peer
        if kind is Kind.BYE:
            return self._end(session, "bye")
        if kind is Kind.KEEPALIVE:
            return []
        if ipv4_source(packet) != session.tunnel_address.ip:
            return self._drop("spoofed source", peer)
        self.counters.packets_to_tun += 1
        self.counters.bytes_to_tun += len(packet)
        return [PacketReceived(packet)]

    def _receive_static(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """Static keys: a datagram that opens with them makes its sender the client."""
        assert self.static is not None
        session = Session(peer, self.static, now, self.counters, self.timeouts)
        try:
            kind, packet = session.receive_datagram(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        self.sessions[peer] = session
        self.by_address[session.tunnel_address.ip] = session
        events: list[Event] = [HandshakeCompleted(peer, session.tunnel_address)]
        return events + self._deliver(session, kind, packet)

    def _receive_hello(self, hello: bytes, peer: Address, now: float) -> list[Event]:
        cached = self._replies.get(peer)
        if cached is not None and cached[0] == hello:
            self._outbox.append((cached[1], peer))  # our answer was lost: the same again
            return []
        old = self.sessions.get(peer)
        address = old.tunnel_address if old is not None else self.pool.take()
        if address is None:
            return self._drop("address pool exhausted", peer)
        assert self.handshake is not None
        try:
            reply, protection = self.handshake.respond(hello, address, now + self.clock_offset_s)
        except RemoteProtocolError as exc:
            if old is None:
                self.pool.give_back(address)
            return self._drop(exc.reason, peer)
        if old is not None:  # the client restarted from the same port: a fresh session
            self._forget(old)
        session = Session(peer, Established(protection, address), now, self.counters, self.timeouts)
        self.sessions[peer] = session
        self.by_address[address.ip] = session
        self._replies[peer] = (hello, reply)
        self._outbox.append((reply, peer))
        return [HandshakeCompleted(peer, address)]

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.peer, None)
        self.by_address.pop(session.tunnel_address.ip, None)
        self._replies.pop(session.peer, None)

    def _end(self, session: Session, reason: str) -> list[Event]:
        self._forget(session)
        if self.static is None:
            self.pool.give_back(session.tunnel_address)
        if self.once:
            self.finished = True
        return [SessionClosed(session.peer, reason)]

    def send_packet(self, packet: bytes, now: float) -> list[Event]:
        """TunSelected: route one packet from tun0 to the client that owns its destination."""
        destination = ipv4_destination(packet)
        if destination is None:
            return self._drop("tun: not ipv4")
        session = self.by_address.get(destination)
        if session is None:
            return self._drop("tun: no client for destination")
        try:
            session.send_packet(packet, now)
        except LocalProtocolError as exc:
            return self._drop(f"tun: {exc}")
        return []

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything queued since the last call, with its destination."""
        queued = self._outbox
        self._outbox = []
        for session in self.sessions.values():
            if session.outbox:
                queued.extend((datagram, session.peer) for datagram in session.outbox)
                session.outbox = []
        return queued

    def next_timer(self) -> float | None:
        """The earliest deadline over all sessions (None while no client is connected)."""
        return min((s.next_timer() for s in self.sessions.values()), default=None)

    def handle_timer(self, now: float) -> list[Event]:
        """Keepalives for idle sessions; drop the clients silent for 6 s."""
        events: list[Event] = []
        for session in list(self.sessions.values()):
            if not session.handle_timer(now):
                self._outbox.extend((d, session.peer) for d in session.outbox)
                events += self._end(session, "peer lost")
        return events

    def describe(self, now: float) -> dict[str, object]:
        """The status file's fields: every client's address and silence, and the counters."""
        state = "closed" if self.finished else "connected" if self.sessions else "listening"
        return {
            "state": state,
            "clients": [
                {
                    "peer": f"{peer[0]}:{peer[1]}",
                    "tunnel_address": str(session.tunnel_address),
                    "silent_s": round(now - session.last_received, 1),
                }
                for peer, session in self.sessions.items()
            ],
            "free_addresses": len(self.pool),
            "counters": self.counters.as_dict(),
        }

    def close(self, now: float) -> list[Event]:
        """CleanUp: Bye to every client."""
        events: list[Event] = []
        for session in list(self.sessions.values()):
            session.close()
            self._outbox.extend((d, session.peer) for d in session.outbox)
            session.outbox = []
            events += self._end(session, "closed")
        self.finished = True
        return events
