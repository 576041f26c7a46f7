"""Where ServerConnection forwards what it opened and what tun0 (or tap0) gave it, sans-IO: its
routing decisions in one place.

The server core opens a client's datagram and hands the packet to its :class:`Forwarder`; it
hands packets read from its device to the same forwarder. Two kinds, one interface:

    IpForwarder        ``--mode tun``: IP packets, routed by address (:class:`Router`): a
                       client's packet goes to tun0 if its source is the client's own; a
                       packet from tun0 goes to the client that owns its destination
    EthernetForwarder  ``--mode tap``: Ethernet frames, switched by MAC (``bridge.Switch``): the
                       server's tap0 and every client form one segment

Both count what they drop (the core's counters) and seal for a client through its Session.

:class:`Router` decides on addresses only, which the forwarders read from the packets
(``packet.py``). TunSelected asks :meth:`Router.route`: the client whose tunnel address (either
family, fd10:8::N beside 10.8.0.N) is the destination, or whose network is behind it (site to
site, as OpenVPN's ``iroute``: the most specific network first). SockSelected asks
:meth:`Router.owns_source`: a client may send from its own tunnel addresses and from its
networks, from nothing else. The server core keeps the table up to date (``add``, ``remove``,
``set_client_networks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Protocol

from vpnlab.core.bridge import LOCAL, Port, Switch, claimed_sender, frame_macs, is_group
from vpnlab.core.events import Event
from vpnlab.core.packet import (
    ETHERNET_HEADER_BYTES,
    destination_bytes,
    ip_destination,
    is_link_scope,
    source_bytes,
)
from vpnlab.core.reasons import Drop
from vpnlab.core.session import Counters, Session, drop, seal

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
ClientNetworks = Mapping[IPv4Address, Sequence[IPNetwork]]
"""Site to site: the networks behind each client, by its tunnel address."""


class Router:
    """The connected clients by tunnel address, and the networks behind them."""

    def __init__(self, client_networks: ClientNetworks | None = None) -> None:
        self.by_address: dict[IPAddress, Session] = {}  # both families
        self.by_bytes: dict[bytes, Session] = {}
        """The same clients by their addresses' packed bytes (4 or 16), as a packet carries
        them: TunSelected's lookup without building an address object (``route_bytes``)."""
        self.client_networks: list[tuple[IPNetwork, IPv4Address]] = []
        self.set_client_networks(client_networks or {})

    def add(self, session: Session) -> None:
        """A client's tunnel addresses (both families, or its IPv6-only one) now lead to
        ``session``."""
        if session.tunnel_address is not None:
            self.by_address[session.tunnel_address.ip] = session
            self.by_bytes[session.tunnel_address.ip.packed] = session
        self.by_address[session.tunnel_address6.ip] = session
        self.by_bytes[session.tunnel_address6.ip.packed] = session

    def remove(self, session: Session) -> None:
        if session.tunnel_address is not None:
            self.by_address.pop(session.tunnel_address.ip, None)
            self.by_bytes.pop(session.tunnel_address.ip.packed, None)
        self.by_address.pop(session.tunnel_address6.ip, None)
        self.by_bytes.pop(session.tunnel_address6.ip.packed, None)

    def set_client_networks(self, client_networks: ClientNetworks) -> None:
        """Site to site: the networks behind each client, by its tunnel address (at start,
        and whole again when ``peers.toml`` changes: a revoked peer's networks go with it)."""
        self.client_networks = sorted(  # most specific first
            ((net, client) for client, nets in client_networks.items() for net in nets),
            key=lambda route: -route[0].prefixlen,
        )

    def route(self, destination: IPAddress | None) -> Session | None:
        """The client a packet to ``destination`` goes to: its tunnel address, or its network."""
        if destination is None:
            return None
        return self.by_address.get(destination) or self.owner(destination)

    def route_bytes(self, destination: bytes) -> Session | None:
        """:meth:`route` for a destination field of 4 or 16 bytes (``packet.destination_bytes``):
        a client's own address by its bytes, a network behind one by its address."""
        return self.by_bytes.get(destination) or self.owner(ip_address(destination))

    def owner(self, address: IPAddress | None) -> Session | None:
        """The connected client whose network (site to site) holds ``address``."""
        if address is None:
            return None
        for network, client in self.client_networks:
            if address in network:
                return self.by_address.get(client)
        return None

    def owns_source(self, session: Session, source: bytes) -> bool:
        """The inner-source check of every packet from a client (``source``: the packet's
        source address as bytes, ``packet.source_bytes``; empty if it is not IP): the client's
        own address (IPv4 or its IPv6 twin, compared as bytes), or an address of its network
        (site to site)."""
        if source == session.source_bytes or source == session.source6_bytes:
            return True
        return source != b"" and self.owner(ip_address(source)) is session

    def speaks_for(self, session: Session, address: IPv4Address | None) -> bool:
        """Whether ``session`` may claim ``address`` (TAP mode's ARP and IPv4 senders): its
        tunnel address, or its network's."""
        own = session.tunnel_address
        return (own is not None and address == own.ip) or self.owner(address) is session


def no_client(packet: bytes) -> Drop:
    """Why a packet from tun0 has nowhere to go: the kernel's own IPv6 link chatter (a fresh
    tun0's router solicitations, MLD reports), or a destination no client owns."""
    return Drop.TUN_LINK_SCOPE if is_link_scope(packet) else Drop.TUN_NO_CLIENT


class Forwarder(Protocol):
    """What the server core asks of its forwarder."""

    layer2: bool
    """Whether the sessions carry Ethernet frames (``Session``'s ``layer2``)."""

    def add(self, session: Session) -> None:
        """An authentic client joins (a Hello answered, a static-key datagram opened)."""

    def remove(self, session: Session) -> None:
        """A client leaves (or moves: removed, then added at its new address)."""

    def from_client(
        self, session: Session, packets: list[bytes], now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """SockSelected: ``session`` opened ``packets`` (a GRO batch's, or one), in order;
        what goes to tun0 is appended to ``to_tun``; the events are the drops."""
        ...

    def from_tun(self, packets: list[bytes], now: float) -> list[Event]:
        """TunSelected: packets read from the server's device, sealed for their clients."""
        ...

    def expire(self, now: float) -> None:
        """Once a round: forget what has grown old."""

    def status(self, now: float) -> dict[str, object]:
        """Fields of the status file."""
        ...


class IpForwarder:
    """``--mode tun``: IP packets routed by address."""

    layer2 = False

    def __init__(self, router: Router, counters: Counters, isolate_clients: bool) -> None:
        self.router = router
        self.counters = counters
        self.isolate_clients = isolate_clients

    def add(self, session: Session) -> None:
        pass  # the router holds the clients' addresses

    def remove(self, session: Session) -> None:
        pass

    def from_client(
        self, session: Session, packets: list[bytes], now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """A client's packet goes to tun0 if it comes from the client's own address (or its
        network); with ``isolate_clients`` not if it is for another client."""
        events: list[Event] = []
        router, counters = self.router, self.counters
        for packet in packets:
            if not router.owns_source(session, source_bytes(packet)):
                events += drop(counters, Drop.SPOOFED_SOURCE, session.peer)
                continue
            if self.isolate_clients:
                target = router.route(ip_destination(packet))
                if target is not None and target is not session:
                    events += drop(counters, Drop.CLIENT_TO_CLIENT_DENIED, session.peer)
                    continue
            to_tun.append(packet)
            counters.packets_to_tun += 1
            counters.bytes_to_tun += len(packet)
        return events

    def from_tun(self, packets: list[bytes], now: float) -> list[Event]:
        """One routing decision per run of packets to one destination (the fast path's
        segments of a super-packet share theirs), and one seal per run of packets to one
        client."""
        events: list[Event] = []
        routed_to, session = b"", None
        run: list[bytes] = []  # for ``session``, not yet sealed
        for packet in packets:
            destination = destination_bytes(packet)  # IPv4 or IPv6
            if destination != routed_to:
                if run:
                    assert session is not None  # a run is only made for a client
                    events += seal(session, run, now)
                    run = []
                routed_to = destination
                session = self.router.route_bytes(destination) if destination else None
            if session is None:
                events += drop(self.counters, no_client(packet) if destination else Drop.TUN_NOT_IP)
                continue
            run.append(packet)
        if run:
            assert session is not None
            events += seal(session, run, now)
        return events

    def expire(self, now: float) -> None:
        pass

    def status(self, now: float) -> dict[str, object]:
        return {}


class EthernetForwarder:
    """``--mode tap``: the server's tap0 (the port :data:`~vpnlab.core.bridge.LOCAL`) and every
    client (a port each, its UDP address) form one Ethernet segment, switched by MAC."""

    layer2 = True

    def __init__(self, router: Router, counters: Counters, isolate_clients: bool) -> None:
        self.router = router
        self.counters = counters
        self.isolate_clients = isolate_clients
        self.switch = Switch()
        self.switch.add_port(LOCAL)
        self.ports: dict[Port, Session] = {}

    def set_local_mac(self, mac: bytes) -> None:
        """Ifconfig, TAP mode: the MAC of the server's tap0, which no client may claim."""
        self.switch.add_static(mac, LOCAL)

    def add(self, session: Session) -> None:
        """Only an authentic client gets a port, so strangers add none."""
        self.ports[session.peer] = session
        self.switch.add_port(session.peer)

    def remove(self, session: Session) -> None:
        self.ports.pop(session.peer, None)
        self.switch.remove_port(session.peer)

    def from_client(
        self, session: Session, frames: list[bytes], now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """Each frame in turn (``_from_client``)."""
        events: list[Event] = []
        for frame in frames:
            events += self._from_client(session, frame, now, to_tun)
        return events

    def _from_client(
        self, session: Session, frame: bytes, now: float, to_tun: list[bytes]
    ) -> list[Event]:
        """Check what the frame claims, learn its source MAC, then forward it by its
        destination MAC: to tap0 (``to_tun``), to other clients (sealed), or both."""
        peer = session.peer
        claim = claimed_sender(frame)  # ARP's sender or IPv4's source: its own address only
        if claim is not None and not self.router.speaks_for(session, claim[1]):
            return drop(self.counters, claim[0], peer)
        destination, source = frame_macs(frame)
        if not self.switch.learn(source, peer, now):
            reason = Drop.BAD_SOURCE_MAC if is_group(source) else Drop.SPOOFED_SOURCE_MAC
            return drop(self.counters, reason, peer)
        if not self.switch.flood_allowed(destination, peer, now):
            return drop(self.counters, Drop.FLOOD_RATE_LIMIT, peer)
        events: list[Event] = []
        for port in self.switch.forward(destination, peer, now):
            if port == LOCAL:
                self.counters.packets_to_tun += 1
                self.counters.bytes_to_tun += len(frame)
                to_tun.append(frame)
            elif self.isolate_clients:
                if not is_group(destination):
                    events += drop(self.counters, Drop.CLIENT_TO_CLIENT_DENIED, peer)
            else:
                events += seal(self.ports[port], [frame], now, Drop.TAP)
        return events

    def from_tun(self, packets: list[bytes], now: float) -> list[Event]:
        """Frames from tap0, each switched by its destination MAC (flooded to every client if
        unknown)."""
        events: list[Event] = []
        for frame in packets:
            if len(frame) < ETHERNET_HEADER_BYTES:
                events += drop(self.counters, Drop.TAP_RUNT_FRAME)
                continue
            destination, source = frame_macs(frame)
            self.switch.learn(source, LOCAL, now, take_over=True)
            for port in self.switch.forward(destination, LOCAL, now):
                events += seal(self.ports[port], [frame], now, Drop.TAP)
        return events

    def expire(self, now: float) -> None:
        self.switch.expire(now)

    def status(self, now: float) -> dict[str, object]:
        return {"mac_table": self.switch.entries(now)}
