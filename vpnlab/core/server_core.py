"""ServerConnection, sans-IO: answer Hellos, give each client an address, carry its packets.

A Hello costs the server work in proportion to the proof it carries (wireguard-go
``device/receive.go`` and ``cookie.go``): the handshake's ``screen`` first (identity mode: a
Hello without a valid mac1 costs one hash; under load one without a valid mac2 gets a cookie
reply), then the per-source rate limit, and only then a Diffie-Hellman, at most
``HANDSHAKES_PER_WAKEUP`` per wake-up; the others wait in a bounded queue that ``handle_timer``
works through after the data of the same wake-up. A new handshake never ends a live session:
its keys wait as the session's ``pending`` ones until a datagram under them arrives, and the
address the server sends to follows the latest authentic datagram (``_roaming``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
)

from vpnlab.core import constants
from vpnlab.core.bridge import LOCAL, Switch
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import (
    Address,
    EndpointMoved,
    Event,
    HandshakeCompleted,
    PacketReceived,
    SessionClosed,
)
from vpnlab.core.formats import CheckedHello, Established, Format, Kind, Peer, RandomBytes
from vpnlab.core.packet import (
    LINK_SCOPE_DROP,
    destination_bytes,
    ip_destination,
    ip_source,
    ip_version,
    is_link_scope,
    unmapped,
)
from vpnlab.core.pool import AddressPool
from vpnlab.core.ratelimit import HandshakeLoad, HelloRateLimiter
from vpnlab.core.server_batch import BatchReceiving
from vpnlab.core.server_tap import TapSwitching
from vpnlab.core.session import (
    DEFAULT_TIMEOUTS,
    Counters,
    Session,
    State,
    Timeouts,
)

MAX_SESSIONS_PER_IP = 32
"""Sessions from one source IP (a classroom behind one NAT shares it) in the modes without
identities; in the identity mode each peer has its own address, so no pool can be drained."""


def no_client(packet: bytes) -> str:
    """Why a packet from tun0 has nowhere to go: the kernel's own IPv6 link chatter (a fresh
    tun0's router solicitations, MLD reports), or a destination no client owns."""
    return LINK_SCOPE_DROP if is_link_scope(packet) else "tun: no client for destination"


def _endpoint(peer: Address) -> str:
    """A client's UDP address for the status: ``192.0.2.2:4500`` or ``[2001:db8:1::2]:4500``."""
    host = unmapped(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


class ServerCore(TapSwitching, BatchReceiving):
    """ServerConnection: answer Hellos, give each client an address, carry its packets.

    Args:
        format: the wire format (``--cipher``); None with ``static``.
        server_address: the server's own tunnel address, e.g. 10.8.0.1/24.
        random_bytes: randomness for the handshake.
        once: the design notes' behaviour: finish when the first client's session ends.
        clock_offset_s: added to ``now`` to get wall-clock time for the handshake.
        static: static keys (no handshake): the first datagram that opens with them binds
            the one client's UDP address.
        isolate_clients: drop packets from one client to another (otherwise they cross the
            server: into tun0, routed by the kernel, out of tun0 to the other client).
        client_networks: site to site: the networks behind each client (by its tunnel
            address, as OpenVPN's iroute): packets to them go to that client, and that
            client may send from them.
        layer2: ``--mode tap``: carry Ethernet frames; the server's tap0 and every client
            form one segment, switched by destination MAC (``bridge.Switch``).
        max_sessions_per_ip: sessions one source IP may hold (its ports): without
            identities, one address must not drain the pool.
    """

    def __init__(
        self,
        format: Format | None,
        server_address: IPv4Interface,
        random_bytes: RandomBytes,
        *,
        once: bool = False,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        clock_offset_s: float = 0.0,
        static: Established | None = None,
        isolate_clients: bool = False,
        client_networks: Mapping[IPv4Address, Sequence[IPv4Network | IPv6Network]] | None = None,
        layer2: bool = False,
        max_sessions_per_ip: int = MAX_SESSIONS_PER_IP,
    ) -> None:
        self.format = format
        self.max_sessions_per_ip = max_sessions_per_ip
        self.switch: Switch | None = Switch() if layer2 else None
        if self.switch is not None:
            self.switch.add_port(LOCAL)
        self.isolate_clients = isolate_clients
        self.set_client_networks(client_networks or {})
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
        self.by_address: dict[IPv4Address | IPv6Address, Session] = {}  # both families
        self.finished = False
        self._replies: dict[Address, tuple[bytes, bytes]] = {}  # peer -> (hello, reply)
        self.limiter = HelloRateLimiter()
        self.load = HandshakeLoad()
        self.hello_queue: deque[tuple[bytes, Address, float]] = deque()
        """Hellos past every cheap check, waiting for their Diffie-Hellman (bounded)."""
        self._budget_now = float("nan")
        self._budget = 0
        self._roaming: dict[Address, Session] = {}
        """Addresses an authentic Hello (or the session's old address) came from: the first
        datagram from one that opens under the session's keys moves the session there."""
        self._outbox: list[tuple[bytes, Address]] = []

    @property
    def state(self) -> State:
        """CONNECTED while at least one client is, else CONNECTING (waiting for a Hello)."""
        if self.finished:
            return State.CLOSED
        return State.CONNECTED if self.sessions else State.CONNECTING

    def _receive(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """SockSelected for one datagram: a Hello from a new client, or a datagram from a
        known one (``receive_datagrams`` hands each of its batch here)."""
        session = self.sessions.get(peer)
        if session is None and self.static is not None and not self.sessions:
            return self._receive_static(datagram, peer, now)
        if self.format is not None and self.format.is_hello(datagram):
            return self._receive_hello(datagram, peer, now)
        if session is None:
            return self._receive_roaming(datagram, peer, now)
        try:
            kind, packet = session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        return self._deliver(session, kind, packet, now)

    def _receive_roaming(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """A datagram from an address without a session: if it opens under the keys of the
        session an authentic Hello from there (or its old address) named, the session moves
        to it (the address follows the latest authentic datagram); anything else is dropped."""
        session = self._roaming.get(peer)
        if session is None:
            return self._drop("unknown peer", peer)
        try:
            kind, packet = session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        old = session.peer
        self._forget(session)
        session.peer = peer
        self._add(session)
        self._roaming[old] = session
        return [EndpointMoved(old, peer), *self._deliver(session, kind, packet, now)]

    def _deliver(self, session: Session, kind: Kind, packet: bytes, now: float) -> list[Event]:
        peer = session.peer
        if kind is Kind.BYE:
            return self._end(session, "bye")
        if kind is Kind.KEEPALIVE:
            return []
        if self.switch is not None:
            return self._switch_frame(session, packet, now)
        fast_ok = packet[12:16] == session.source_bytes and packet[0] >> 4 == 4  # IPv4, its own
        if not fast_ok and not self._source_ok(session, packet):
            return self._drop("spoofed source", peer)
        if self.isolate_clients:
            target = self._route(ip_destination(packet))
            if target is not None and target is not session:
                return self._drop("client to client denied", peer)
        self.counters.packets_to_tun += 1
        self.counters.bytes_to_tun += len(packet)
        return [PacketReceived(packet)]

    def _source_ok(self, session: Session, packet: bytes) -> bool:
        """Inner-source check past the IPv4 fast path: the client's IPv6 twin (fd10:8::N),
        or an address of its LAN (site to site, either family)."""
        if packet[8:24] == session.source6_bytes and ip_version(packet) == 6:
            return True
        source = ip_source(packet)
        return source is not None and self._owner(source) is session

    def _receive_static(self, datagram: bytes, peer: Address, now: float) -> list[Event]:
        """Static keys: a datagram that opens with them makes its sender the client."""
        assert self.static is not None
        session = self._session(peer, self.static, now)
        try:
            kind, packet = session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        self._add(session)
        events: list[Event] = [HandshakeCompleted(peer, session.tunnel_address)]
        return events + self._deliver(session, kind, packet, now)

    def _receive_hello(self, hello: bytes, peer: Address, now: float) -> list[Event]:
        """ServerConnection: the cheap checks first (the handshake's ``screen``: mac1, and a
        cookie reply under load), then the rate limit, then the Diffie-Hellman: now if this
        wake-up's budget allows it, else in the bounded queue."""
        cached = self._replies.get(peer)
        if cached is not None and cached[0] == hello:
            if not self.limiter.allow(peer[0], now):
                return self._drop("hello rate limit", peer)
            self._outbox.append((cached[1], peer))  # our answer was lost: the same again
            return []
        assert self.handshake is not None
        if not self.handshake.costly_check:  # plain, PSK: check (cheap) before the rate limit
            return self._handshake(hello, peer, now, rate_limit=True)
        try:
            under_load = self.load.hello(now, len(self.hello_queue))
            cookie = self.handshake.screen(hello, peer, now + self.clock_offset_s, under_load)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        if cookie:
            self._outbox.append((cookie, peer))
            return self._drop("under load: cookie reply sent", peer)
        if not self.limiter.allow(peer[0], now):
            return self._drop("hello rate limit", peer)
        if not self.hello_queue and self._take_budget(now):
            return self._handshake(hello, peer, now)
        if len(self.hello_queue) >= constants.HANDSHAKE_QUEUE:
            return self._drop("handshake queue full", peer)
        self.hello_queue.append((hello, peer, now))
        return []

    def _take_budget(self, now: float) -> bool:
        """One of this wake-up's ``HANDSHAKES_PER_WAKEUP`` Diffie-Hellmans (a wake-up is one
        ``now``: the loop hands one to everything a select() returned; ``handle_timer``, at
        the end of each round, has a budget of its own)."""
        if now != self._budget_now:
            self._budget_now, self._budget = now, constants.HANDSHAKES_PER_WAKEUP
        if self._budget <= 0:
            return False
        self._budget -= 1
        return True

    def _answer_queued(self, now: float) -> list[Event]:
        """The queued Hellos a round's budget allows, oldest first."""
        self._budget_now, self._budget = now, constants.HANDSHAKES_PER_WAKEUP
        events: list[Event] = []
        while self.hello_queue and self._take_budget(now):
            hello, peer, _ = self.hello_queue.popleft()
            events += self._handshake(hello, peer, now)
        return events

    def _handshake(
        self, hello: bytes, peer: Address, now: float, rate_limit: bool = False
    ) -> list[Event]:
        """Check the Hello (identity mode: the Diffie-Hellman), then, with ``rate_limit``,
        its source's token, then an address: the peer's own (identity mode), its session's
        (a rekey, or the peer's live session at another address), or the pool's."""
        assert self.handshake is not None
        try:
            checked = self.handshake.check(hello, now + self.clock_offset_s)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        if rate_limit and not self.limiter.allow(peer[0], now):
            return self._drop("hello rate limit", peer)
        old = self.sessions.get(peer)
        if old is not None and old.identity != checked.peer:
            return self._drop("peer address taken", peer)
        if old is None and checked.peer is not None:
            old = self.by_address.get(checked.peer.tunnel_address.ip)
        address, refused = self._address_for(checked, old, peer)
        if address is None:
            return self._drop(refused, peer)
        reply, protection = self.handshake.answer(checked, address)
        if old is not None:  # a rekey, or roaming: the live keys stay until these are used
            old.rekey(protection, now, confirmed=False)
            self.counters.rekeys += 1
            if old.peer != peer:
                self._roaming[peer] = old
        else:
            session = self._session(peer, Established(protection, address), now)
            session.identity = checked.peer
            self._add(session)
        self._replies[peer] = (hello, reply)
        self._outbox.append((reply, peer))
        return [HandshakeCompleted(peer, address)]

    def _address_for(
        self, hello: CheckedHello, old: Session | None, peer: Address
    ) -> tuple[IPv4Interface | None, str]:
        """The tunnel address a checked Hello gets, or None and the reason it gets none."""
        if old is not None:
            return old.tunnel_address, ""
        if hello.peer is not None:  # identity mode: the peer's own, wherever it comes from
            return hello.peer.tunnel_address, ""
        if self._sessions_from(peer[0]) >= self.max_sessions_per_ip:
            return None, "too many sessions from one address"
        address = self.pool.take()
        return address, "" if address is not None else "address pool exhausted"

    def _sessions_from(self, ip: str) -> int:
        return sum(1 for address in self.sessions if address[0] == ip)

    def _add(self, session: Session) -> None:
        """The session is authentic (a Hello answered, a static-key datagram opened): only now
        does it get a switch port, so strangers add none."""
        self.sessions[session.peer] = session
        self.by_address[session.tunnel_address.ip] = session
        self.by_address[session.tunnel_address6.ip] = session
        if self.switch is not None:
            self.switch.add_port(session.peer)

    def _session(self, peer: Address, established: Established, now: float) -> Session:
        layer2 = self.switch is not None
        return Session(peer, established, now, self.counters, self.timeouts, layer2)

    def _speaks_for(self, session: Session, address: IPv4Address | None) -> bool:
        """Whether ``session`` may send from ``address``: its tunnel address, or its LAN's."""
        return address == session.tunnel_address.ip or self._owner(address) is session

    def _forget(self, session: Session) -> None:
        if self.switch is not None:
            self.switch.remove_port(session.peer)
        self.sessions.pop(session.peer, None)
        self.by_address.pop(session.tunnel_address.ip, None)
        self.by_address.pop(session.tunnel_address6.ip, None)
        self._replies.pop(session.peer, None)
        for address in [a for a, s in self._roaming.items() if s is session]:
            del self._roaming[address]

    def _end(self, session: Session, reason: str) -> list[Event]:
        self._forget(session)
        if self.static is None and session.identity is None:
            self.pool.give_back(session.tunnel_address)
        if self.once:
            self.finished = True
        return [SessionClosed(session.peer, reason)]

    def update_peers(self, peers: Sequence[Peer]) -> list[Event]:
        """Identity mode: ``peers.toml`` changed. New peers are answered from now on; a
        revoked (or changed) peer's session ends at once ("revoked")."""
        if self.handshake is None:
            return []
        self.handshake.set_peers(peers)
        keep = set(peers)
        events: list[Event] = []
        for session in list(self.sessions.values()):
            if session.identity is not None and session.identity not in keep:
                events += self._end(session, "revoked")
        return events

    def set_client_networks(
        self, client_networks: Mapping[IPv4Address, Sequence[IPv4Network | IPv6Network]]
    ) -> None:
        """Site to site: the networks behind each client, by its tunnel address (at start,
        and whole again when ``peers.toml`` changes: a revoked peer's networks go with it)."""
        self.client_networks = sorted(  # most specific first
            ((net, client) for client, nets in client_networks.items() for net in nets),
            key=lambda route: -route[0].prefixlen,
        )

    def _route(self, destination: IPv4Address | IPv6Address | None) -> Session | None:
        """The client a packet to ``destination`` goes to: its tunnel address, or its network."""
        if destination is None:
            return None
        return self.by_address.get(destination) or self._owner(destination)

    def _owner(self, address: IPv4Address | IPv6Address | None) -> Session | None:
        """The connected client whose network (site to site) holds ``address``."""
        if address is None:
            return None
        for network, client in self.client_networks:
            if address in network:
                return self.by_address.get(client)
        return None

    def send_packets(self, packets: list[bytes], now: float) -> list[Event]:
        """TunSelected for a batch: one routing decision per run of packets to one destination
        (the fast path's segments of a super-packet share theirs), then each is sealed.

        TAP mode: each frame is switched on its own by its destination MAC (flooded to every
        client if unknown).
        """
        if self.switch is not None:
            return [event for frame in packets for event in self._switch_from_tap(frame, now)]
        events: list[Event] = []
        routed_to, session = b"", None
        for packet in packets:
            destination = destination_bytes(packet)  # IPv4 or IPv6
            if not destination:
                events += self._drop("tun: not ip")
                continue
            if destination != routed_to:
                routed_to = destination
                session = self._route(ip_address(destination))
            if session is None:
                events += self._drop(no_client(packet))
                continue
            events += self._seal(session, packet, now)
        return events

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
        """The earliest deadline over all sessions (None while no client is connected); at
        once while Hellos wait in the queue."""
        if self.hello_queue:
            return self.hello_queue[0][2]
        return min((s.next_timer() for s in self.sessions.values()), default=None)

    def handle_timer(self, now: float) -> list[Event]:
        """Queued Hellos (this wake-up's budget); keepalives for idle sessions; drop the
        clients silent for 6 s."""
        events: list[Event] = self._answer_queued(now)
        if self.switch is not None:
            self.switch.expire(now)
        for session in list(self.sessions.values()):
            reason = session.handle_timer(now)
            if reason is not None:
                self._outbox.extend((d, session.peer) for d in session.outbox)
                events += self._end(session, reason)
        return events

    def describe(self, now: float) -> dict[str, object]:
        """The status file's fields: every client's address and silence, and the counters."""
        state = "closed" if self.finished else "connected" if self.sessions else "listening"
        return {
            "state": state,
            "clients": [
                {
                    "peer": _endpoint(peer),
                    "tunnel_address": str(session.tunnel_address),
                    "tunnel_address6": str(session.tunnel_address6),
                    "silent_s": round(now - session.last_received, 1),
                }
                for peer, session in self.sessions.items()
            ],
            "free_addresses": len(self.pool),
            **({"mac_table": self.switch.entries(now)} if self.switch is not None else {}),
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
