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

import enum
from collections import Counter
from dataclasses import dataclass, field

from vpnlab.core import constants
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import Address, DatagramDropped, Event
from vpnlab.core.formats import Established, Kind, Protection


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


DEFAULT_TIMEOUTS = Timeouts()


class CoreBase:
    """What ClientCore and ServerCore share: their counters, and how they drop and seal."""

    counters: Counters

    def _drop(self, reason: str, peer: Address | None = None) -> list[Event]:
        """Count a refused datagram or packet by ``reason``; the event is for the log."""
        self.counters.drops[reason] += 1
        return [DatagramDropped(reason, peer)]

    def _seal(self, session: Session, packet: bytes, now: float, where: str = "tun") -> list[Event]:
        """TunSelected: ``session`` seals one packet (or frame); one it cannot is dropped."""
        try:
            session.send_packet(packet, now)
        except LocalProtocolError as exc:
            return self._drop(f"{where}: {exc}")
        return []


class Session:
    """One established peer: TunSelected and SockSelected for its packets, and its timers.

    Args:
        peer: the peer's UDP address.
        established: keys and tunnel address from the handshake (or a static key file).
        now: the time the session starts; both timers start from it.
        counters: where to count (the core's, shared by all its sessions).
        layer2: ``--mode tap``: the "packets" are Ethernet frames (``seal_frame``/``open_frame``).
    """

    def __init__(
        self,
        peer: Address,
        established: Established,
        now: float,
        counters: Counters,
        timeouts: Timeouts,
        layer2: bool = False,
    ) -> None:
        self.peer = peer
        self.protection: Protection = established.protection
        self.layer2 = layer2
        self._seal = self.protection.seal_frame if layer2 else self.protection.seal
        self._open = self.protection.open_frame if layer2 else self.protection.open
        self.tunnel_address = established.client_address
        self.source_bytes = self.tunnel_address.ip.packed  # the per-packet check compares bytes
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
        self.outbox.append(self._seal(packet))
        self.last_sent = now
        self.counters.packets_from_tun += 1
        self.counters.bytes_from_tun += len(packet)

    def receive_datagram(self, datagram: bytes, now: float) -> tuple[Kind, bytes]:
        """SockSelected: open one datagram; raises RemoteProtocolError if it is bad."""
        if datagram == constants.NAT_KEEPALIVE:
            raise RemoteProtocolError("nat keepalive")
        kind, packet = self._open(datagram)
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
