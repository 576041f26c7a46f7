"""ServerConnection, sans-IO: answer Hellos, give each client an address, carry its packets.

A Hello costs the server work in proportion to the proof it carries (wireguard-go
``device/receive.go`` and ``cookie.go``): the handshake's ``screen`` first (identity mode: a
Hello without a valid mac1 costs one hash; under load one without a valid mac2 gets a cookie
reply), then the per-source rate limit, and only then a Diffie-Hellman, at most
``HANDSHAKES_PER_WAKEUP`` per wake-up; the others wait in a bounded queue that ``handle_timer``
works through after the data of the same wake-up. A new handshake never ends a live session:
its keys wait as the session's ``pending`` ones until a datagram under them arrives, and the
address the server sends to follows the latest authentic datagram (``_roaming``).

With ``kernel_dataplane`` the kernel's xfrm carries the data (``vpnlab server
--kernel-dataplane``, ``shell/xfrm.py``): no datagram under a session's keys ever reaches this
core, so an answered Hello is all it sees of a client after the first handshake. Then a
rekey's keys are in use at once (the kernel sends with the newest state), an authentic Hello
from another address moves its session at once (roaming), the Hello is the client's sign of
life, and :meth:`ServerCore.keys_in_use` and :meth:`ServerCore.end_session` tell the shell
which keys to give the kernel and let it end a session whose hand-off failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from ipaddress import IPv4Interface

from vpnlab.core import constants
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import (
    Address,
    DatagramDropped,
    EndpointMoved,
    Event,
    HandshakeCompleted,
    SessionClosed,
)
from vpnlab.core.formats import (
    KIND_BYE,
    KIND_KEEPALIVE,
    KIND_PACKET,
    CheckedHello,
    Established,
    Format,
    Kind,
    Peer,
    Protection,
    RandomBytes,
)
from vpnlab.core.forwarding import (
    ClientNetworks,
    EthernetForwarder,
    Forwarder,
    IpForwarder,
    Router,
)
from vpnlab.core.packet import clamp_mss, unmapped
from vpnlab.core.pool import AddressPool, Ipv6OnlyPool, TunnelAddress
from vpnlab.core.ratelimit import HandshakeLoad, HelloRateLimiter
from vpnlab.core.reasons import STATE_CLOSED, STATE_CONNECTED, STATE_LISTENING, Close, Drop, State
from vpnlab.core.session import (
    DEFAULT_TIMEOUTS,
    CoreBase,
    Counters,
    OnBug,
    Outbox,
    Session,
    Timeouts,
    report_bug,
    take,
)

MAX_SESSIONS_PER_IP = 32
"""Sessions from one source IP (a classroom behind one NAT shares it) in the modes without
identities; in the identity mode each peer has its own address, so no pool can be drained."""


def _endpoint(peer: Address) -> str:
    """A client's UDP address for the status: ``192.0.2.2:4500`` or ``[2001:db8:1::2]:4500``."""
    host = unmapped(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


class ServerCore(CoreBase):
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
        ipv6_only_clients: once the IPv4 pool is used up, this many more clients get an
            IPv6-only address of fd10:8::/64 (``pool.Ipv6OnlyPool``; 0: a Hello then gets
            nothing, "address pool exhausted"). Only for a tun0 that carries IPv6.
        mss_clamp: lower the MSS option of TCP SYNs read from tun0 to this (tun0's MTU - 40;
            None: leave it, as TAP mode does).
        kernel_dataplane: the kernel carries the sessions' data (see the module's text): a
            handshake's keys are used at once and its Hello moves and refreshes its session.
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
        client_networks: ClientNetworks | None = None,
        layer2: bool = False,
        max_sessions_per_ip: int = MAX_SESSIONS_PER_IP,
        ipv6_only_clients: int = 0,
        mss_clamp: int | None = None,
        kernel_dataplane: bool = False,
    ) -> None:
        self.format = format
        self.mss_clamp = mss_clamp
        self.kernel_dataplane = kernel_dataplane
        self.max_sessions_per_ip = max_sessions_per_ip
        self.counters = Counters()
        self.router = Router(client_networks)
        forwarder = EthernetForwarder if layer2 else IpForwarder
        self.forwarder: Forwarder = forwarder(self.router, self.counters, isolate_clients)
        self.clock_offset_s = clock_offset_s
        self.static = static
        if (format is None) == (static is None):
            raise LocalProtocolError("give exactly one of format or static")
        self.handshake = format.server_handshake(random_bytes) if format else None
        self.pool = AddressPool(server_address)
        self.pool6 = Ipv6OnlyPool(server_address, ipv6_only_clients)
        self.once = once
        self.timeouts = timeouts
        self.sessions: dict[Address, Session] = {}
        self.finished = False
        self._replies: dict[Address, tuple[bytes, bytes]] = {}  # peer -> (hello, reply)
        self.limiter = HelloRateLimiter()
        self.load = HandshakeLoad()
        self.hello_queue: deque[tuple[bytes, Address, float]] = deque()
        """Hellos past every cheap check, waiting for their Diffie-Hellman (bounded)."""
        self._budget_now = float("nan")
        self._budget = 0
        self._sessions_due = float("inf")
        """No session's timer is due before this: ``handle_timer`` walks the sessions only once
        it has passed (and sets it again), so a wake-up does not cost a walk over all of them.
        A bound, never late: a new session or a key switch lowers it; traffic only moves the
        sessions' timers later (then one walk finds nothing due and sets it again)."""
        self._roaming: dict[Address, Session] = {}
        """Addresses an authentic Hello (or the session's old address) came from: the first
        datagram from one that opens under the session's keys moves the session there."""
        self.outbox: Outbox = []
        """What the server and its sessions have sealed, in order (``session.take``)."""
        self._endpoints: dict[Address, str] = {}
        """A session's endpoint as the status shows it, formatted once (an IPv6 address's text
        costs about 30 us: 250 clients' took 12 ms a second); its tunnel addresses' texts are
        the session's own (``Session.addresses_text``)."""

    @property
    def state(self) -> State:
        """CONNECTED while at least one client is, else LISTENING (waiting for a Hello)."""
        if self.finished:
            return STATE_CLOSED
        return STATE_CONNECTED if self.sessions else STATE_LISTENING

    def receive_runs(
        self, runs: Sequence[tuple[Address, list[bytes]]], now: float, on_bug: OnBug | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """SockSelected for one wake-up's datagrams, in runs of one peer each (a GRO batch, or
        a batch of one): the data first, then the Hellos, so a flood of Hellos never holds up
        the tunnel's datagrams that arrived with it. Each datagram is asked once whether it
        is a Hello; a run's data then meets its session once (``_receive_data``).
        """
        is_hello = self.format.is_hello if self.format is not None else None
        packets: list[bytes] = []
        events: list[Event] = []
        hellos: list[tuple[Address, list[bytes]]] = []
        for peer, datagrams in runs:
            data = datagrams
            if is_hello is not None:
                data = [d for d in datagrams if not is_hello(d)]
                if len(data) < len(datagrams):
                    hellos.append((peer, [d for d in datagrams if is_hello(d)]))
            if data:
                events += self._receive_data(data, peer, now, packets, on_bug)
        for peer, datagrams in hellos:
            events += self._receive_hellos(datagrams, peer, now, on_bug)
        return packets, events

    def _receive_data(
        self,
        datagrams: list[bytes],
        peer: Address,
        now: float,
        to_tun: list[bytes],
        on_bug: OnBug | None,
    ) -> list[Event]:
        """SockSelected for one peer's datagrams that are not Hellos: its session is looked up
        once, and again only after a datagram that may have changed it (a Bye, a stranger's
        datagram that made or moved one). Each is opened; its data packets go to the
        forwarder together, which appends those for the server's device to ``to_tun``; before
        anything else a datagram causes, so the order of events stays the datagrams'.

        A bug costs its datagram (one in the forwarder, the packets it was given): it goes to
        ``on_bug`` (None: it propagates) and the others still arrive.
        """
        events: list[Event] = []
        opened: list[bytes] = []  # this session's data packets, not yet forwarded
        session = self.sessions.get(peer)
        for datagram in datagrams:
            try:
                if session is None:
                    events += self._receive_stranger(datagram, peer, now, to_tun)
                    session = self.sessions.get(peer)
                    continue
                try:
                    kind, packet = session.open(datagram, now)
                except RemoteProtocolError as exc:
                    events += self._forward(session, opened, now, to_tun, on_bug)
                    events += self._drop(exc.reason, peer)
                    opened = []
                    continue
                if kind is KIND_PACKET:
                    opened.append(packet)
                    continue
                events += self._forward(session, opened, now, to_tun, on_bug)
                opened = []
                events += self._deliver(session, kind, packet, now, to_tun)
                session = self.sessions.get(peer)
            except Exception as exc:
                report_bug(exc, on_bug)
        if opened:
            assert session is not None  # it opened them
            events += self._forward(session, opened, now, to_tun, on_bug)
        if session is not None and session.previous is not None:  # keys switched: a deadline
            self._sessions_due = min(self._sessions_due, session.previous_until)
        return events

    def _forward(
        self,
        session: Session,
        opened: list[bytes],
        now: float,
        to_tun: list[bytes],
        on_bug: OnBug | None,
    ) -> list[Event]:
        """The data packets ``session`` opened, to the forwarder together; a bug there costs
        these packets."""
        if not opened:
            return []
        try:
            return self.forwarder.from_client(session, opened, now, to_tun)
        except Exception as exc:
            report_bug(exc, on_bug)
            return []

    def _receive_hellos(
        self, hellos: list[bytes], peer: Address, now: float, on_bug: OnBug | None
    ) -> list[Event]:
        """SockSelected for one peer's Hellos: the batch screen first (identity mode): a
        well-formed Hello whose mac1 is wrong costs one hash and is counted, one event for the
        run ("bad mac1", with its count), not one per datagram; then each is answered or
        queued (``_receive_hello``). A bug costs its Hello, as in ``_receive_data``."""
        assert self.handshake is not None
        screened = [h for h in hellos if not self.handshake.bad_mac1(h)]
        events: list[Event] = []
        if len(screened) < len(hellos):
            bad = len(hellos) - len(screened)
            self.counters.drops[Drop.BAD_MAC1] += bad
            self.load.hellos(now, bad, len(self.hello_queue))
            events.append(DatagramDropped(Drop.BAD_MAC1, peer, bad))
        for hello in screened:
            try:
                events += self._receive_hello(hello, peer, now)
            except Exception as exc:
                report_bug(exc, on_bug)
        return events

    def _receive_stranger(
        self, datagram: bytes, peer: Address, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """A datagram, not a Hello, from an address without a session: with static keys and
        no client yet, it may make its sender the client; otherwise it may be a roaming
        client's (``_receive_roaming``)."""
        if self.static is not None and not self.sessions:
            return self._receive_static(datagram, peer, now, to_tun)
        return self._receive_roaming(datagram, peer, now, to_tun)

    def _receive_roaming(
        self, datagram: bytes, peer: Address, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """A datagram from an address without a session: if it opens under the keys of the
        session an authentic Hello from there (or its old address) named, the session moves
        to it (the address follows the latest authentic datagram); anything else is dropped."""
        session = self._roaming.get(peer)
        if session is None:
            return self._drop(Drop.UNKNOWN_PEER, peer)
        try:
            kind, packet = session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        if session.previous is not None:
            self._sessions_due = min(self._sessions_due, session.previous_until)
        moved = self._move(session, peer)
        return [moved, *self._deliver(session, kind, packet, now, to_tun)]

    def _move(self, session: Session, peer: Address) -> EndpointMoved:
        """Roaming: the session's datagrams go to ``peer`` from now on (its old address may
        still prove itself, as a client moving back does)."""
        old = session.peer
        self._forget(session)
        session.peer = peer
        self._add(session)
        self._roaming[old] = session
        return EndpointMoved(old, peer)

    def _deliver(
        self, session: Session, kind: Kind, packet: bytes, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """What an opened datagram says: a Bye ends the session, a keepalive only keeps it
        alive (``Session.open`` noted the time), a packet goes to the forwarder."""
        if kind is KIND_BYE:
            return self._end(session, Close.BYE)
        if kind is KIND_KEEPALIVE:
            return []
        return self.forwarder.from_client(session, [packet], now, to_tun)

    def _receive_static(
        self, datagram: bytes, peer: Address, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """Static keys: a datagram that opens with them makes its sender the client."""
        assert self.static is not None
        session = self._session(peer, self.static, now)
        try:
            kind, packet = session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        self._add(session)
        events: list[Event] = [HandshakeCompleted(peer, session.client_address)]
        return events + self._deliver(session, kind, packet, now, to_tun)

    def _receive_hello(self, hello: bytes, peer: Address, now: float) -> list[Event]:
        """ServerConnection: the cheap checks first (the handshake's ``screen``: mac1, and a
        cookie reply under load), then the rate limit, then the Diffie-Hellman: now if this
        wake-up's budget allows it, else in the bounded queue."""
        cached = self._replies.get(peer)
        if cached is not None and cached[0] == hello:
            if not self.limiter.allow(peer[0], now):
                return self._drop(Drop.HELLO_RATE_LIMIT, peer)
            self.outbox.append((cached[1], peer))  # our answer was lost: the same again
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
            self.outbox.append((cookie, peer))
            return self._drop(Drop.UNDER_LOAD_COOKIE_SENT, peer)
        if not self.limiter.allow(peer[0], now):
            return self._drop(Drop.HELLO_RATE_LIMIT, peer)
        if not self.hello_queue and self._take_budget(now):
            return self._handshake(hello, peer, now)
        if len(self.hello_queue) >= constants.HANDSHAKE_QUEUE:
            return self._drop(Drop.HANDSHAKE_QUEUE_FULL, peer)
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
            return self._drop(Drop.HELLO_RATE_LIMIT, peer)
        old = self.sessions.get(peer)
        if old is not None and old.identity != checked.peer:
            return self._drop(Drop.PEER_ADDRESS_TAKEN, peer)
        if old is None and checked.peer is not None:
            old = self.router.by_address.get(checked.peer.tunnel_address.ip)
        address = self._address_for(checked, old, peer)
        if isinstance(address, Drop):
            return self._drop(address, peer)
        reply, protection = self.handshake.answer(checked, address)
        events: list[Event] = []
        if old is not None and self.kernel_dataplane:  # no datagram will confirm them: now
            old.rekey(protection, now, confirmed=True)
            old.last_received = now  # the only sign of life the kernel lets us see
            self.counters.rekeys += 1
            if old.peer != peer:
                events.append(self._move(old, peer))
        elif old is not None:  # a rekey, or roaming: the live keys stay until these are used
            old.rekey(protection, now, confirmed=False)
            self.counters.rekeys += 1
            if old.peer != peer:
                self._roaming[peer] = old
        else:
            session = self._session(peer, Established(protection, address), now)
            session.identity = checked.peer
            self._add(session)
        self._replies[peer] = (hello, reply)
        self.outbox.append((reply, peer))
        return [*events, HandshakeCompleted(peer, address)]

    def _address_for(
        self, hello: CheckedHello, old: Session | None, peer: Address
    ) -> TunnelAddress | Drop:
        """The tunnel address a checked Hello gets, or the reason it gets none: its session's,
        its identity's, the IPv4 pool's, or once that is used up an IPv6-only one."""
        if old is not None:
            return old.client_address
        if hello.peer is not None:  # identity mode: the peer's own, wherever it comes from
            return hello.peer.tunnel_address
        if self._sessions_from(peer[0]) >= self.max_sessions_per_ip:
            return Drop.TOO_MANY_SESSIONS
        address: TunnelAddress | None = self.pool.take() or self.pool6.take()
        return Drop.POOL_EXHAUSTED if address is None else address

    def _sessions_from(self, ip: str) -> int:
        return sum(1 for address in self.sessions if address[0] == ip)

    def _add(self, session: Session) -> None:
        """The session is authentic (a Hello answered, a static-key datagram opened): only now
        does it get a switch port, so strangers add none."""
        self.sessions[session.peer] = session
        self._sessions_due = min(self._sessions_due, session.next_timer())
        self.router.add(session)
        self.forwarder.add(session)

    def _session(self, peer: Address, established: Established, now: float) -> Session:
        layer2 = self.forwarder.layer2
        return Session(peer, established, now, self.counters, self.outbox, self.timeouts, layer2)

    def _forget(self, session: Session) -> None:
        self.forwarder.remove(session)
        self.sessions.pop(session.peer, None)
        self.router.remove(session)
        self._replies.pop(session.peer, None)
        self._endpoints.pop(session.peer, None)
        for address in [a for a, s in self._roaming.items() if s is session]:
            del self._roaming[address]

    def _end(self, session: Session, reason: Close) -> list[Event]:
        self._forget(session)
        if self.static is None and session.identity is None:
            if session.tunnel_address is None:
                self.pool6.give_back(session.tunnel_address6)
            else:
                self.pool.give_back(session.tunnel_address)
        if self.once:
            self.finished = True
        return [SessionClosed(session.peer, reason)]

    def keys_in_use(self, peer: Address) -> Protection | None:
        """The keys ``peer``'s session sends with now (a rekey's, once in use), which the
        kernel must hold (``--kernel-dataplane``); None: no session there."""
        session = self.sessions.get(peer)
        return None if session is None else session.protection

    def end_session(self, peer: Address, reason: Close = Close.CLOSED) -> list[Event]:
        """End ``peer``'s session from outside the protocol (the shell could not give its keys
        to the kernel): its address goes back to the pool; nothing is sent (the peer's next
        Hello starts again). No session there: nothing happens."""
        session = self.sessions.get(peer)
        return [] if session is None else self._end(session, reason)

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
                events += self._end(session, Close.REVOKED)
        return events

    def set_client_networks(self, client_networks: ClientNetworks) -> None:
        """Site to site: the networks behind each client, by its tunnel address (at start,
        and whole again when ``peers.toml`` changes: a revoked peer's networks go with it)."""
        self.router.set_client_networks(client_networks)

    def set_local_mac(self, mac: bytes) -> None:
        """Ifconfig, TAP mode: the MAC of the server's tap0, which no client may claim."""
        if isinstance(self.forwarder, EthernetForwarder):
            self.forwarder.set_local_mac(mac)

    def send_packets(self, packets: list[bytes], now: float) -> list[Event]:
        """TunSelected: packets from tun0 (one from the select loop, the segments of a
        super-packet from the fast path), each to the client that owns its destination.

        A TCP SYN's MSS is clamped before it is sealed (``mss_clamp``).

        TAP mode: frames from tap0, switched by destination MAC (flooded if unknown).
        """
        if self.mss_clamp:
            packets = [clamp_mss(packet, self.mss_clamp) for packet in packets]
        return self.forwarder.from_tun(packets, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything queued since the last call, with its destination."""
        return take(self.outbox)

    def next_timer(self) -> float | None:
        """When the sessions' earliest timer may be due (None while no client is connected;
        it may come early, never late); at once while Hellos wait in the queue."""
        if self.hello_queue:
            return self.hello_queue[0][2]
        return self._sessions_due if self.sessions else None

    def handle_timer(self, now: float) -> list[Event]:
        """Queued Hellos (this wake-up's budget); once a session's timer may be due, the walk:
        keepalives for idle sessions, drop the clients silent for 6 s, at most
        ``SESSION_TIMERS_PER_WAKEUP`` of them (the others stay due: the next wake-up, at
        once, serves the data first and then them). A walk that served every due session
        looks again no sooner than ``SERVER_TIMER_STEP_S`` later (1,000 clients' deadlines
        fall every few milliseconds)."""
        events: list[Event] = self._answer_queued(now)
        if now < self._sessions_due:
            return events
        self.forwarder.expire(now)
        self._sessions_due = float("inf")
        budget = constants.SESSION_TIMERS_PER_WAKEUP
        for session in list(self.sessions.values()):
            due = session.next_timer()
            if due > now or budget == 0:
                self._sessions_due = min(self._sessions_due, due)
                continue
            budget -= 1
            reason = session.handle_timer(now)
            if reason is not None:
                events += self._end(session, reason)
            else:
                self._sessions_due = min(self._sessions_due, session.next_timer())
        if budget > 0:  # every due session served: the next walk after one step at least
            self._sessions_due = max(self._sessions_due, now + constants.SERVER_TIMER_STEP_S)
        return events

    def describe(self, now: float) -> dict[str, object]:
        """The status file's fields: every client's address and silence, and the counters."""
        return {
            "state": self.state.value,
            "clients": [
                {
                    "peer": self._endpoint_text(peer),
                    "tunnel_address": session.addresses_text[0],
                    "tunnel_address6": session.addresses_text[1],
                    "silent_s": round(now - session.last_received, 1),
                }
                for peer, session in self.sessions.items()
            ],
            "free_addresses": len(self.pool) + len(self.pool6),
            **self.forwarder.status(now),
            "counters": self.counters.as_dict(),
        }

    def _endpoint_text(self, peer: Address) -> str:
        text = self._endpoints.get(peer)
        if text is None:
            text = self._endpoints[peer] = _endpoint(peer)
        return text

    def close(self, now: float) -> list[Event]:
        """CleanUp: Bye to every client."""
        events: list[Event] = []
        for session in list(self.sessions.values()):
            session.close()
            events += self._end(session, Close.CLOSED)
        self.finished = True
        return events
