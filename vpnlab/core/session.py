"""The sans-IO protocol core: one peer's session, its timers, the state table, the counters.

Nothing in the core touches a socket, a file descriptor or the clock: datagrams and packets come
in as bytes, the time comes in as ``now`` (seconds, monotonic), and what must be sent goes out
through ``datagrams_to_send()``. The select loop in ``tunnel.py`` is the only caller that does
I/O, and the unit tests drive two cores against each other with a fake clock (``tests/unit``).

    client_core.ClientCore   ClientConnection: Hello, 2.5 s connect timeout, then one Session.
    server_core.ServerCore   ServerConnection: answers Hellos, one Session per client.
    session.Session          one established peer: seal/open, keepalive when idle, 6 s liveness.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from vpnlab.core import constants
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import Address, DatagramDropped, Event
from vpnlab.core.formats import KIND_KEEPALIVE, Established, Kind, Peer, Protection
from vpnlab.core.pool import tunnel_address6
from vpnlab.core.reasons import Close, Drop, DropLabel, Opened, State

# The one transition table (as h11's _state.py): (state, what happened) -> next state.
TRANSITIONS: dict[tuple[State, Opened | Close], State] = {
    (State.CONNECTING, Opened.WELCOME): State.CONNECTED,
    (State.CONNECTING, Close.SERVER_UNREACHABLE): State.CLOSED,
    (State.CONNECTING, Close.CLOSED): State.CLOSED,
    (State.CONNECTED, Close.PEER_LOST): State.CLOSED,
    (State.CONNECTED, Close.BYE): State.CLOSED,
    (State.CONNECTED, Close.CLOSED): State.CLOSED,
    (State.CONNECTED, Close.KEYS_EXHAUSTED): State.CLOSED,
}


def next_state(state: State, what: Opened | Close) -> State:
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
    rekeys: int = 0
    cookies_received: int = 0
    drops: Counter[DropLabel] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "packets_from_tun": self.packets_from_tun,
            "bytes_from_tun": self.bytes_from_tun,
            "packets_to_tun": self.packets_to_tun,
            "bytes_to_tun": self.bytes_to_tun,
            "keepalives_sent": self.keepalives_sent,
            "keepalives_received": self.keepalives_received,
            "rekeys": self.rekeys,
            "cookies_received": self.cookies_received,
            "drops": dict(sorted(self.drops.items())),
        }


@dataclass(frozen=True)
class Timeouts:
    """The notes' timers; tests shorten nothing, they move the fake clock instead."""

    connect_s: float = constants.CONNECT_TIMEOUT_S
    hello_retry_s: float = constants.HELLO_RETRY_S
    keepalive_s: float = constants.KEEPALIVE_INTERVAL_S
    liveness_s: float = constants.LIVENESS_TIMEOUT_S
    rekey_s: float = constants.REKEY_AFTER_S


DEFAULT_TIMEOUTS = Timeouts()


OnBug = Callable[[Exception], None]
"""What the loop does with a bug one datagram met (``receive_runs``)."""

Outbox = list[tuple[bytes, Address]]
"""Datagrams sealed and not yet sent, each with where it goes, in the order they were made:
one per core, which its sessions append to, so taking them costs the same with 1,000 clients
as with one (it walked every session: 15 us a call with 1,000)."""


def take(outbox: Outbox) -> Outbox:
    """``datagrams_to_send``: everything in ``outbox``, which is left empty (the sessions keep
    appending to the same list)."""
    queued = outbox.copy()
    outbox.clear()
    return queued


def report_bug(exc: Exception, on_bug: OnBug | None) -> None:
    """What a core raised for one datagram: to ``on_bug`` (the loop counts it and goes on),
    or raised again without one."""
    if on_bug is None:
        raise exc
    on_bug(exc)


def drop(counters: Counters, reason: DropLabel, peer: Address | None = None) -> list[Event]:
    """Count a refused datagram or packet by ``reason``; the event is for the log."""
    counters.drops[reason] += 1
    return [DatagramDropped(reason, peer)]


def seal(session: Session, packets: list[bytes], now: float, where: Drop = Drop.TUN) -> list[Event]:
    """TunSelected: ``session`` seals packets (or frames) in order; one it cannot is dropped
    (``where``: the device it came from, with why: "tun: oversize")."""
    events: list[Event] = []
    for exc in session.seal(packets, now):
        events += drop(session.counters, where.detail(str(exc)))
    return events


class CoreBase:
    """What ClientCore and ServerCore share: their counters, the one receive entry, and how
    they drop."""

    counters: Counters

    def receive_runs(
        self, runs: Sequence[tuple[Address, list[bytes]]], now: float, on_bug: OnBug | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """SockSelected: the one entry for datagrams from the socket, one wake-up's in runs of
        one peer each (a GRO batch from one peer, or a batch of one from the select loop).

        Args:
            on_bug: given, what the core raises for one datagram goes to it and the other
                datagrams still arrive; None: it propagates.

        Returns:
            The inner packets to write to tun0, in order, and every other event.
        """
        raise NotImplementedError

    def receive_datagrams(
        self, datagrams: list[bytes], peer: Address, now: float, on_bug: OnBug | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """``receive_runs`` for one run: ``datagrams`` from ``peer``."""
        return self.receive_runs([(peer, datagrams)], now, on_bug)

    def _drop(self, reason: DropLabel, peer: Address | None = None) -> list[Event]:
        return drop(self.counters, reason, peer)


class Session:
    """One established peer: TunSelected and SockSelected for its packets, and its timers.

    A session outlives its keys: a new handshake (a rekey) gives it a new Protection while the
    old one still opens what was sent before the switch. The side that answered the Hello
    keeps sending with the old keys until a datagram arrives under the new ones (the peer has
    them, then), as WireGuard's responder does; the side that sent it switches at once.

    Args:
        peer: the peer's UDP address.
        established: keys and tunnel address from the handshake (or a static key file).
        now: the time the session starts; both timers start from it.
        counters: where to count (the core's, shared by all its sessions).
        outbox: where to put what it seals, with ``peer`` (the core's, shared likewise).
        layer2: ``--mode tap``: the "packets" are Ethernet frames (``seal_frame``/``open_frame``).
    """

    def __init__(
        self,
        peer: Address,
        established: Established,
        now: float,
        counters: Counters,
        outbox: Outbox,
        timeouts: Timeouts,
        layer2: bool = False,
    ) -> None:
        self.peer = peer
        self.layer2 = layer2
        self.client_address = established.client_address
        """What the Welcome gave: the IPv4 address, or the IPv6-only one."""
        self.tunnel_address: IPv4Interface | None = None
        """None: IPv6 only (the server's IPv4 pool was used up)."""
        if isinstance(self.client_address, IPv4Interface):
            self.tunnel_address = self.client_address
            self.tunnel_address6 = tunnel_address6(self.client_address)  # twin, fd10:8::N
        else:
            self.tunnel_address6 = self.client_address
        self.source6_bytes = self.tunnel_address6.ip.packed  # the per-packet check: bytes
        self.source_bytes = (  # IPv6 only: 16 bytes, which no IPv4 source (4) equals
            self.tunnel_address.ip.packed if self.tunnel_address else self.source6_bytes
        )
        self.addresses_text = (str(self.tunnel_address or ""), str(self.tunnel_address6))
        """Both addresses for the server's status file, written once here (an IPv6 address
        takes 20 us to write out: 1,000 clients' every second were 2 % of a core)."""
        self.counters = counters
        self.timeouts = timeouts
        self.last_received = now
        self.last_sent = now
        self.outbox = outbox
        self.pending: Protection | None = None
        """Keys of a rekey we answered, not yet confirmed by a datagram from the peer."""
        self.previous: Protection | None = None
        """The keys before the last switch, kept to open late datagrams until ``previous_until``."""
        self.previous_until = 0.0
        self.identity: Peer | None = None
        """Identity mode: the peer that proved itself with this session's handshake."""
        self._use(established.protection, now)

    def _use(self, protection: Protection, now: float) -> None:
        self.protection = protection
        self._sealer = protection.seal_frame if self.layer2 else protection.seal
        self._opener = protection.open_frame if self.layer2 else protection.open
        self.keys_since = now
        self.sealed = 0

    def rekey(self, protection: Protection, now: float, *, confirmed: bool) -> None:
        """New keys from a new handshake: send with them now (``confirmed``, we sent the Hello)
        or once the peer has used them (we answered it)."""
        if confirmed:
            self._switch(protection, now)
        else:
            self.pending = protection

    def _switch(self, protection: Protection, now: float) -> None:
        self.previous, self.previous_until = self.protection, now + constants.KEEP_OLD_KEYS_S
        self.pending = None
        self._use(protection, now)

    def protections(self) -> list[Protection]:
        """Every set of keys that opens datagrams now (current, pending, previous)."""
        return [p for p in (self.protection, self.pending, self.previous) if p is not None]

    def seal(self, packets: list[bytes], now: float) -> list[LocalProtocolError]:
        """TunSelected: seal packets read from tun0 for the peer, in order, counted once.

        Returns:
            Why each packet that could not be sealed was not (too large for the format, or
            the keys' sequence space used up); the others are in the outbox.
        """
        sealer, peer, queue = self._sealer, self.peer, self.outbox.append
        refused: list[LocalProtocolError] = []
        sealed_bytes = 0
        for packet in packets:
            try:
                queue((sealer(packet), peer))
            except LocalProtocolError as exc:
                refused.append(exc)
                continue
            sealed_bytes += len(packet)
        sealed = len(packets) - len(refused)
        if sealed:
            self.sealed += sealed
            self.last_sent = now
            self.counters.packets_from_tun += sealed
            self.counters.bytes_from_tun += sealed_bytes
        return refused

    def open(self, datagram: bytes, now: float) -> tuple[Kind, bytes]:
        """SockSelected: open one datagram; raises RemoteProtocolError if it is bad."""
        if datagram == constants.NAT_KEEPALIVE:
            raise RemoteProtocolError(Drop.NAT_KEEPALIVE)
        try:
            kind, packet = self._opener(datagram)
        except RemoteProtocolError as exc:
            if exc.reason != Drop.UNKNOWN_SPI or (self.pending is None and self.previous is None):
                raise
            kind, packet = self._open_with_other_keys(datagram, now)
        self.last_received = now
        if kind is KIND_KEEPALIVE:
            self.counters.keepalives_received += 1
        return kind, packet

    def _open_with_other_keys(self, datagram: bytes, now: float) -> tuple[Kind, bytes]:
        """A datagram for the pending keys confirms them; one for the previous keys is late."""
        for protection in (self.pending, self.previous):
            if protection is None:
                continue
            opener = protection.open_frame if self.layer2 else protection.open
            try:
                opened = opener(datagram)
            except RemoteProtocolError as exc:
                if exc.reason == Drop.UNKNOWN_SPI:
                    continue
                raise
            if protection is self.pending:
                self._switch(protection, now)
            return opened
        raise RemoteProtocolError(Drop.UNKNOWN_SPI)

    def rekey_due(self, now: float) -> bool:
        """Time for new keys: ``rekey_s`` (120 s) with these, or half their sequence space."""
        return (
            now >= self.keys_since + self.timeouts.rekey_s
            or self.sealed >= constants.REKEY_AFTER_PACKETS
        )

    def next_timer(self) -> float:
        """The earliest of the keepalive, the liveness and the old keys' deadlines."""
        deadlines = [self.last_sent + self.timeouts.keepalive_s]
        if self.timeouts.liveness_s > 0:
            deadlines.append(self.last_received + self.timeouts.liveness_s)
        if self.previous is not None:
            deadlines.append(self.previous_until)
        return min(deadlines)

    def handle_timer(self, now: float) -> Close | None:
        """Send a keepalive if idle; forget old keys; say why the session must end, if it must.

        Returns:
            None while the session lives; "peer lost" once the peer has been silent for the
            liveness timeout (0: never), "keys exhausted" when nothing more can be sealed.
        """
        if self.previous is not None and now >= self.previous_until:
            self.previous = None
        if self.timeouts.liveness_s > 0 and now >= self.last_received + self.timeouts.liveness_s:
            return Close.PEER_LOST
        if now >= self.last_sent + self.timeouts.keepalive_s and not self.send_keepalive(now):
            return Close.KEYS_EXHAUSTED
        return None

    def send_keepalive(self, now: float) -> bool:
        """A keepalive now (when idle; after a rekey, to confirm the new keys at once).

        Returns:
            False if the keys cannot seal anything more.
        """
        try:
            self.outbox.append((self.protection.seal_keepalive(), self.peer))
        except LocalProtocolError:
            return False
        self.sealed += 1
        self.last_sent = now
        self.counters.keepalives_sent += 1
        return True

    def close(self) -> None:
        """CleanUp: tell the peer at once, so it need not wait for its liveness timeout."""
        with contextlib.suppress(LocalProtocolError):  # keys exhausted: the peer's timeout
            self.outbox.append((self.protection.seal_bye(), self.peer))
