"""ServerConnection's routing decisions in one place, sans-IO: which client a packet goes to,
and whether a client may send from an address: on addresses only, which the forwarders read
from the packets (``packet.py``).

TunSelected asks :meth:`Router.route`: the client whose tunnel address (either family, fd10:8::N
beside 10.8.0.N) is the destination, or whose network is behind it (site to site, as OpenVPN's
``iroute``: the most specific network first). SockSelected asks :meth:`Router.owns_source`:
a client may send from its own tunnel addresses and from its networks, from nothing else. The
server core keeps the table up to date (``add``, ``remove``, ``set_client_networks``); the
forwarders (``forwarding.py``) ask it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from vpnlab.core.session import Session

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
