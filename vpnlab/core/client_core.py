"""ClientConnection, sans-IO: the Hello, the 2.5 s connect timeout, then one Session."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import (
    Address,
    Event,
    HandshakeCompleted,
    SessionClosed,
)
from vpnlab.core.formats import KIND_BYE, KIND_PACKET, ClientHandshake, Established
from vpnlab.core.packet import clamp_mss, ip_version, is_link_scope
from vpnlab.core.reasons import (
    STATE_CLOSED,
    STATE_CONNECTED,
    STATE_CONNECTING,
    Close,
    Drop,
    Opened,
    State,
)
from vpnlab.core.session import (
    DEFAULT_TIMEOUTS,
    CoreBase,
    Counters,
    OnBug,
    Outbox,
    Session,
    Timeouts,
    next_state,
    report_bug,
    seal,
    take,
)


class ClientCore(CoreBase):
    """ClientConnection: Hello, wait up to 2.5 s for the answer, then carry packets.

    Args:
        server: the server's UDP address; datagrams from anywhere else are dropped.
        handshake: the format's client handshake, or None with ``established`` (static keys).
        established: static keys: skip the handshake.
        clock_offset_s: added to ``now`` to get wall-clock time for the handshake's
            timestamps, which the server compares with its own clock.
        layer2: ``--mode tap``: carry Ethernet frames from tap0 instead of IPv4 packets.
        new_handshake: makes a fresh handshake for each rekey (every ``timeouts.rekey_s``);
            None: the session keeps its first keys (plain, static keys).
        mss_clamp: lower the MSS option of TCP SYNs read from tun0 to this (tun0's MTU - 40;
            None: leave it, as TAP mode does).
    """

    def __init__(
        self,
        server: Address,
        handshake: ClientHandshake | None,
        *,
        established: Established | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        clock_offset_s: float = 0.0,
        layer2: bool = False,
        new_handshake: Callable[[], ClientHandshake] | None = None,
        mss_clamp: int | None = None,
    ) -> None:
        self.layer2 = layer2
        self.mss_clamp = mss_clamp
        self.new_handshake = new_handshake
        self.rekeying: ClientHandshake | None = None
        """The handshake of a rekey in flight (the session goes on with its keys meanwhile)."""
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
        self.close_reason: Close | None = None
        self.outbox: Outbox = []
        self._hello = b""
        self._connect_deadline = 0.0
        self._retry_at = 0.0

    def connect(self, now: float) -> list[Event]:
        """ClientConnection: send the Hello and start the 2.5 s connect timer."""
        if self.static is not None:
            return self._established(self.static, now)
        assert self.handshake is not None
        self._hello = self.handshake.hello(now + self.clock_offset_s)
        self.outbox.append((self._hello, self.server))
        self._connect_deadline = now + self.timeouts.connect_s
        self._retry_at = now + self.timeouts.hello_retry_s
        return []

    def tunnel_up(self, now: float) -> None:
        """The loop starts carrying packets (after CreateTunDev, Ifconfig, SetRouting): the
        keepalive and liveness clocks start now, not when the Welcome came. After a
        handshake, a keepalive at once: the server may hold our keys as the ``pending`` ones
        of our earlier session (we restarted, or moved), which a datagram under them confirms."""
        if self.session is not None:
            self.session.last_received = self.session.last_sent = now
            if self.static is None:
                self.session.send_keepalive(now)

    def _established(self, established: Established, now: float) -> list[Event]:
        self.state = next_state(self.state, Opened.WELCOME)
        self.session = Session(
            self.server, established, now, self.counters, self.outbox, self.timeouts, self.layer2
        )
        return [HandshakeCompleted(self.server, established.client_address)]

    def _close(self, reason: Close) -> list[Event]:
        self.state = next_state(self.state, reason)
        self.close_reason = reason
        return [SessionClosed(self.server, reason)]

    def receive_runs(
        self, runs: Sequence[tuple[Address, list[bytes]]], now: float, on_bug: OnBug | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """SockSelected (``CoreBase.receive_runs``): each datagram in turn (``_receive``)."""
        packets: list[bytes] = []
        events: list[Event] = []
        for peer, datagrams in runs:
            for datagram in datagrams:
                try:
                    events += self._receive(datagram, peer, now, packets)
                except Exception as exc:
                    report_bug(exc, on_bug)
        return packets, events

    def _receive(
        self, datagram: bytes, peer: Address, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """SockSelected for one datagram: an opened packet is appended to ``to_tun``."""
        if peer != self.server:
            return self._drop(Drop.UNKNOWN_PEER, peer)
        state = self.state
        handshake = self.handshake if state is STATE_CONNECTING else self.rekeying
        if handshake is not None:
            try:
                if handshake.take_cookie(datagram, now + self.clock_offset_s):
                    return self._hello_with_cookie(handshake, now)
            except RemoteProtocolError as exc:
                return self._drop(exc.reason, peer)
        if state is STATE_CONNECTING:
            assert self.handshake is not None
            try:
                established = self.handshake.receive(datagram, now + self.clock_offset_s)
            except RemoteProtocolError as exc:
                return self._drop(exc.reason, peer)
            return self._established(established, now)
        if state is STATE_CLOSED or self.session is None:
            return self._drop(Drop.SESSION_CLOSED, peer)
        if self.rekeying is not None:
            try:
                established = self.rekeying.receive(datagram, now + self.clock_offset_s)
            except RemoteProtocolError:
                pass  # not the rekey's Welcome: the session decides what it is
            else:
                return self._rekeyed(established, now)
        try:
            kind, packet = self.session.open(datagram, now)
        except RemoteProtocolError as exc:
            return self._drop(exc.reason, peer)
        if kind is KIND_PACKET:
            self.counters.packets_to_tun += 1
            self.counters.bytes_to_tun += len(packet)
            to_tun.append(packet)
            return []
        if kind is KIND_BYE:
            return self._close(Close.BYE)
        return []

    def _hello_with_cookie(self, handshake: ClientHandshake, now: float) -> list[Event]:
        """The server is under load and sent a cookie: the same Hello again at once, now
        with mac2 (once per cookie: a forged reply cannot make us send more)."""
        hello = handshake.hello(now + self.clock_offset_s)
        if hello != self._hello:
            self._hello = hello
            self.outbox.append((hello, self.server))
            self._retry_at = now + self.timeouts.hello_retry_s
        self.counters.cookies_received += 1
        return []

    def _rekeyed(self, established: Established, now: float) -> list[Event]:
        """The rekey's Welcome: send with the new keys at once, and say so with a keepalive
        (the server switches when it sees them used)."""
        assert self.session is not None
        self.rekeying = None
        self.session.rekey(established.protection, now, confirmed=True)
        self.session.send_keepalive(now)
        self.counters.rekeys += 1
        return [HandshakeCompleted(self.server, established.client_address)]

    def send_packets(self, packets: list[bytes], now: float) -> list[Event]:
        """TunSelected: packets read from tun0 (one from the select loop, the segments of a
        super-packet from the fast path); the state is checked once, then each is sealed.
        IPv4 and IPv6 enter the tunnel, but not IPv6 that belongs to tun0's own link (a fresh
        tun0's router solicitations and MLD reports: the kernel's, never the user's; dropped
        and counted, ``is_link_scope``). A TCP SYN's MSS is clamped before it is sealed
        (``mss_clamp``).

        In TAP mode: Ethernet frames from tap0, whatever they carry (ARP, IPv4, IPv6).
        """
        session = self.session
        if session is None or self.state is not STATE_CONNECTED:
            return [event for _ in packets for event in self._drop(Drop.NOT_CONNECTED)]
        events: list[Event] = []
        clamp = self.mss_clamp
        ready: list[bytes] = []
        for packet in packets:
            if not self.layer2:
                version = ip_version(packet)
                if not version or version == 6 and is_link_scope(packet):
                    events += self._drop(Drop.TUN_LINK_SCOPE if version else Drop.TUN_NOT_IP)
                    continue
            ready.append(clamp_mss(packet, clamp) if clamp else packet)
        return events + seal(session, ready, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything queued since the last call, with its destination."""
        return take(self.outbox)

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next (None: nothing pending)."""
        if self.state is STATE_CONNECTING and self.static is None:
            return min(self._retry_at, self._connect_deadline)
        session = self.session
        if self.state is not STATE_CONNECTED or session is None:
            return None
        if self.rekeying is not None:
            return min(session.next_timer(), self._retry_at)
        if self.new_handshake is not None:
            return min(session.next_timer(), session.keys_since + self.timeouts.rekey_s)
        return session.next_timer()

    def handle_timer(self, now: float) -> list[Event]:
        """Connect timeout and Hello retries; then keepalives and the liveness timeout."""
        if self.state is STATE_CONNECTING:
            if now >= self._connect_deadline:
                return self._close(Close.SERVER_UNREACHABLE)
            if now >= self._retry_at:
                self.outbox.append((self._hello, self.server))
                self._retry_at = now + self.timeouts.hello_retry_s
            return []
        session = self.session
        if self.state is not STATE_CONNECTED or session is None:
            return []
        reason = session.handle_timer(now)
        if reason is not None:
            return self._close(reason)
        self._rekey_timer(session, now)
        return []

    def _rekey_timer(self, session: Session, now: float) -> None:
        """Rekeying: a new Hello when the keys are due (retried as at connect); no answer
        within the connect timeout gives up this attempt, and the next timer starts another."""
        if self.rekeying is None:
            if self.new_handshake is not None and session.rekey_due(now):
                self.rekeying = self.new_handshake()
                self._hello = self.rekeying.hello(now + self.clock_offset_s)
                self.outbox.append((self._hello, self.server))
                self._connect_deadline = now + self.timeouts.connect_s
                self._retry_at = now + self.timeouts.hello_retry_s
        elif now >= self._connect_deadline:
            self.rekeying = None
        elif now >= self._retry_at:
            self.outbox.append((self._hello, self.server))
            self._retry_at = now + self.timeouts.hello_retry_s

    def describe(self, now: float) -> dict[str, object]:
        """The status file's fields: state, addresses (IPv6 only: no IPv4 one, ""), counters."""
        session = self.session
        return {
            "state": self.state.value,
            "server": f"{self.server[0]}:{self.server[1]}",
            "tunnel_address": None if session is None else str(session.tunnel_address or ""),
            "close_reason": self.close_reason,
            "counters": self.counters.as_dict(),
        }

    def close(self, now: float) -> list[Event]:
        """CleanUp: say Bye if connected, and close."""
        if self.state is STATE_CLOSED:
            return []
        if self.state is STATE_CONNECTED and self.session is not None:
            self.session.close()
        return self._close(Close.CLOSED)
