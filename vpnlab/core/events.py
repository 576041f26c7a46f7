"""What the sans-IO cores report back to the I/O shell (past tense, as h11's events)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface

from vpnlab.core.reasons import Close, DropLabel

Address = tuple[str, int]


class Event:
    """Base class of everything a core returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """The Hello exchange finished: ``peer`` now has ``tunnel_address`` (IPv6 only once the
    server's IPv4 pool is used up)."""

    peer: Address
    tunnel_address: IPv4Interface | IPv6Interface


@dataclass(frozen=True, slots=True)
class PacketReceived(Event):
    """SockSelected: an inner IP packet arrived and should be written to tun0."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class DatagramDropped(Event):
    """A datagram (or a packet from tun0) was refused; ``reason`` is its counter key (a
    ``Drop``, or ``Drop.X.detail(...)``); ``count``: this many of one peer's batch were, for
    the same reason (the server's batch screen of a flood: one event, not one per datagram)."""

    reason: DropLabel
    peer: Address | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class SessionClosed(Event):
    """A session ended: "peer lost" (liveness), "bye", "server unreachable", "closed"."""

    peer: Address
    reason: Close


@dataclass(frozen=True, slots=True)
class EndpointMoved(Event):
    """Roaming: an authentic datagram came from ``peer``, so the session's datagrams go
    there now instead of to ``old`` (WireGuard's endpoint follows the latest one)."""

    old: Address
    peer: Address
