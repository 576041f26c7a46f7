"""The lab topology as data: nodes, links and the tunnel, never built here.

As mininet's ``Topo.build()`` only records hosts and links, this module only describes the lab;
``build.py`` applies a description to real namespaces. A course can change names and addresses by
building another :class:`Topology` (or loading one from TOML with :func:`load_topology`), and
:func:`make_topology` adds more VPN clients (r1, r3, r4, ...) behind a bridge in the isp node.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vpnlab.core.constants import SERVER_TUNNEL_ADDRESS, TUNNEL_NETWORK
from vpnlab.core.errors import LabError

_NODE_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
"""Node names: short, no dash (so a prefix's namespaces are ``{prefix}[a-z][a-z0-9]*``)."""
_IF_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")
"""Interface names: at most 15 characters (IFNAMSIZ - 1)."""


@dataclass(frozen=True)
class Interface:
    """One addressed interface of a node: ``eth0`` with ``192.0.2.2/24`` (and, dual stack,
    ``2001:db8:1::2/64``)."""

    name: str
    address: str
    """IPv4 address with prefix length (CIDR)."""
    address6: str | None = None
    """IPv6 address with prefix length, used when the topology has ``ipv6`` on."""

    @property
    def ip(self) -> str:
        """The address without its prefix length."""
        return str(ipaddress.IPv4Interface(self.address).ip)

    @property
    def ip6(self) -> str | None:
        """The IPv6 address without its prefix length (None: this interface has none)."""
        return str(ipaddress.IPv6Interface(self.address6).ip) if self.address6 else None


@dataclass(frozen=True)
class Node:
    """One namespace of the lab: its interfaces, default gateway, and whether it forwards."""

    name: str
    interfaces: tuple[Interface, ...]
    gateway: str | None = None
    forwarding: bool = False
    gateway6: str | None = None
    """The IPv6 default gateway (dual stack)."""
    bridges: tuple[str, ...] = ()
    """Interfaces of this node that are bridges: links ending on them become bridge ports."""
    role: str = "host"
    """What the node plays: "client", "router", "server" or "web" (informational)."""

    def interface(self, name: str) -> Interface | None:
        """The interface called ``name``, if the node has an address on it."""
        return next((i for i in self.interfaces if i.name == name), None)

    def address(self, name: str = "eth0") -> str:
        """The IP (no prefix length) on interface ``name``."""
        itf = self.interface(name)
        if itf is None:
            raise LabError(f"node {self.name} has no address on {name}")
        return itf.ip

    def address6(self, name: str = "eth0") -> str:
        """The IPv6 address (no prefix length) on interface ``name``."""
        itf = self.interface(name)
        if itf is None or itf.ip6 is None:
            raise LabError(f"node {self.name} has no IPv6 address on {name}")
        return itf.ip6


@dataclass(frozen=True)
class Link:
    """A veth pair: ``a`` and ``b`` are ``(node, interface)`` ends."""

    a: tuple[str, str]
    b: tuple[str, str]


@dataclass(frozen=True)
class Tunnel:
    """The VPN overlay: network, server address, and which nodes run server and clients."""

    network: str = TUNNEL_NETWORK
    server_address: str = SERVER_TUNNEL_ADDRESS
    server: str = "r2"
    external_interface: str = "eth0"
    """The server's interface towards the isp: where it listens and masquerades."""
    clients: tuple[str, ...] = ("r1",)
    lans: tuple[tuple[str, str], ...] = ()
    """Site to site: ``(gateway node, network)`` of each LAN the tunnel joins, e.g.
    ``(("r1", "172.16.1.0/24"), ("r2", "172.16.2.0/24"))``; empty: the notes' road warrior."""


@dataclass(frozen=True)
class Topology:
    """A whole lab: nodes, veth links, the tunnel, and where the who-am-I service runs."""

    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    tunnel: Tunnel = field(default_factory=Tunnel)
    web: str = "web"
    web_port: int = 80
    ipv6: bool = True
    """Dual stack (ISSUE #20): each link a /64 of 2001:db8::/32 beside its IPv4 /24, and the
    tunnel fd10:8::/64 beside 10.8.0.0/24. False: IPv6 is switched off in every node."""

    def __post_init__(self) -> None:
        validate(self)

    def node(self, name: str) -> Node:
        """The node called ``name``; LabError naming the valid ones otherwise."""
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise LabError(f"no node {name!r} in this lab (nodes: {names})")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def server_ip(self) -> str:
        """Public address of the VPN server (what clients dial, what NAT shows)."""
        return self.node(self.tunnel.server).address(self.tunnel.external_interface)

    @property
    def web_ip(self) -> str:
        return self.node(self.web).address("eth0")

    @property
    def dual_stack(self) -> bool:
        """IPv6 on, and the server and web have IPv6 addresses (a TOML lab may give none)."""
        ends = ((self.tunnel.server, self.tunnel.external_interface), (self.web, "eth0"))
        return self.ipv6 and all(
            (itf := self.node(node).interface(name)) is not None and itf.address6 is not None
            for node, name in ends
        )

    @property
    def server_ip6(self) -> str:
        """The VPN server's public IPv6 address (``--listen``/``--server`` for outer IPv6)."""
        return self.node(self.tunnel.server).address6(self.tunnel.external_interface)

    @property
    def web_ip6(self) -> str:
        return self.node(self.web).address6("eth0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (recorded in the state folder, read back by :func:`from_dict`)."""
        return asdict(self)


def validate(topo: Topology) -> None:
    """Raise LabError if names are bad, links dangle, or the tunnel names unknown nodes."""
    names = [n.name for n in topo.nodes]
    if len(set(names)) != len(names):
        raise LabError(f"duplicate node names in {names}")
    for node in topo.nodes:
        if not _NODE_NAME.match(node.name):
            raise LabError(f"bad node name {node.name!r}: use [a-z][a-z0-9]*, at most 10 chars")
        for itf in node.interfaces:
            if not _IF_NAME.match(itf.name):
                raise LabError(f"bad interface name {itf.name!r} on {node.name}")
            try:
                ipaddress.IPv4Interface(itf.address)
                if itf.address6 is not None:
                    ipaddress.IPv6Interface(itf.address6)
            except ValueError as exc:
                raise LabError(f"bad address {itf.address!r} on {node.name}: {exc}") from None
    known = set(names)
    for link in topo.links:
        for end in (link.a, link.b):
            if end[0] not in known:
                raise LabError(f"link end {end} names an unknown node")
            if not _IF_NAME.match(end[1]):
                raise LabError(f"bad interface name {end[1]!r} in link {link}")
    lan_gateways = [gateway for gateway, _ in topo.tunnel.lans]
    for name in (topo.tunnel.server, topo.web, *topo.tunnel.clients, *lan_gateways):
        if name not in known:
            raise LabError(f"tunnel/web names unknown node {name!r}")
    for gateway, network in topo.tunnel.lans:
        if gateway not in (topo.tunnel.server, *topo.tunnel.clients):
            raise LabError(f"LAN {network} is behind {gateway}, which is no tunnel end")
        ipaddress.ip_network(network)  # IPv4, or IPv6 (dual stack)
    ipaddress.IPv4Network(topo.tunnel.network)
    ipaddress.IPv4Interface(topo.tunnel.server_address)


def from_dict(data: dict[str, Any]) -> Topology:
    """Inverse of :meth:`Topology.to_dict` (also the shape of a TOML topology file)."""
    try:
        nodes = tuple(
            Node(
                name=n["name"],
                interfaces=tuple(_interfaces(n.get("interfaces", ()))),
                gateway=n.get("gateway"),
                forwarding=bool(n.get("forwarding", False)),
                gateway6=n.get("gateway6"),
                bridges=tuple(n.get("bridges", ())),
                role=n.get("role", "host"),
            )
            for n in data["nodes"]
        )
        links = tuple(Link(a=_end(link["a"]), b=_end(link["b"])) for link in data.get("links", ()))
        tunnel = data.get("tunnel", {})
        tunnel = Tunnel(
            **{
                **tunnel,
                "clients": tuple(tunnel.get("clients", ("r1",))),
                "lans": tuple(tuple(lan) for lan in tunnel.get("lans", ())),
            }
        )
        return Topology(
            nodes=nodes,
            links=links,
            tunnel=tunnel,
            web=data.get("web", "web"),
            web_port=int(data.get("web_port", 80)),
            ipv6=bool(data.get("ipv6", True)),
        )
    except KeyError as exc:
        raise LabError(f"bad topology description: no {exc.args[0]!r}") from None
    except TypeError as exc:
        raise LabError(f"bad topology description: {exc}") from None


def _interfaces(raw: Any) -> list[Interface]:
    if isinstance(raw, dict):  # TOML: interfaces = { eth0 = "192.0.2.2/24" }
        return [Interface(name, addr) for name, addr in raw.items()]
    return [Interface(i["name"], i["address"], i.get("address6")) for i in raw]


def _end(raw: Any) -> tuple[str, str]:
    if isinstance(raw, str):  # TOML: a = "isp:eth0"
        node, _, ifname = raw.partition(":")
        return (node, ifname or "eth0")
    return (raw[0], raw[1])


def load_topology(path: str | Path) -> Topology:
    """Read a topology from a TOML file (same keys as :meth:`Topology.to_dict`).

    Example::

        web = "web"
        [tunnel]
        server = "r2"
        clients = ["r1"]
        [[nodes]]
        name = "r1"
        gateway = "192.0.2.1"
        interfaces = { eth0 = "192.0.2.2/24" }
        [[links]]
        a = "isp:eth0"
        b = "r1:eth0"
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise LabError("reading a TOML topology needs Python 3.11+ or tomli") from None
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise LabError(f"cannot read topology {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LabError(f"cannot read topology {path}: not text") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError: where the TOML is wrong
        raise LabError(f"cannot read topology {path}: {exc}") from None
    return from_dict(data)


def make_topology(clients: int = 1, site_to_site: bool = False) -> Topology:
    """The default lab of DESIGN §3, with ``clients`` VPN clients (r1, then r3, r4, ...).

    One client: a plain veth isp:eth0 -- r1:eth0. More clients: isp's eth0 becomes a bridge
    (still 192.0.2.1/24) and each client's veth end in the isp is a port of it, so every client
    sits on 192.0.2.0/24 at 192.0.2.2, .3, ...

    Dual stack: each /24 has its /64, and the last group repeats the IPv4 host's digits:
    192.0.2.0/24 is 2001:db8:1::/64 (r1 2001:db8:1::2), 198.51.100.0/24 is 2001:db8:2::/64
    (r2 2001:db8:2::2), 203.0.113.0/24 is 2001:db8:3::/64 (web 2001:db8:3::10); the isp is
    ::1 on each.

    ``site_to_site``: a private LAN behind each gateway, joined by the tunnel (no NAT):
    h1 172.16.1.10 behind r1 (eth1 172.16.1.1), h2 172.16.2.10 behind r2 (eth1 172.16.2.1).
    """
    if not 1 <= clients <= 200:
        raise LabError("clients must be between 1 and 200")
    names = ["r1"] + [f"r{i}" for i in range(3, clients + 2)]
    client_nodes = tuple(
        Node(
            name=name,
            interfaces=(Interface("eth0", f"192.0.2.{2 + i}/24", f"2001:db8:1::{2 + i}/64"),),
            gateway="192.0.2.1",
            gateway6="2001:db8:1::1",
            role="client",
        )
        for i, name in enumerate(names)
    )
    isp, r2, web = _isp(bridge=clients > 1), _r2(), _web()
    links = tuple(Link(("isp", "eth0"), (name, "eth0")) for name in names) + (
        Link(("isp", "eth1"), ("r2", "eth0")),
        Link(("isp", "eth2"), ("web", "eth0")),
    )
    if not site_to_site:
        return Topology(
            nodes=(*client_nodes, isp, r2, web),
            links=links,
            tunnel=Tunnel(clients=tuple(names)),
        )
    if clients != 1:
        raise LabError("the site-to-site lab has one client gateway (r1)")
    return _site_to_site(client_nodes[0], isp, r2, web, links)


def _isp(bridge: bool) -> Node:
    """The router between the clients, the server and web (the lab's internet)."""
    return Node(
        name="isp",
        interfaces=(
            Interface("eth0", "192.0.2.1/24", "2001:db8:1::1/64"),
            Interface("eth1", "198.51.100.1/24", "2001:db8:2::1/64"),
            Interface("eth2", "203.0.113.1/24", "2001:db8:3::1/64"),
        ),
        forwarding=True,
        bridges=("eth0",) if bridge else (),
        role="router",
    )


def _r2() -> Node:
    return Node(
        name="r2",
        interfaces=(Interface("eth0", "198.51.100.2/24", "2001:db8:2::2/64"),),
        gateway="198.51.100.1",
        gateway6="2001:db8:2::1",
        role="server",
    )


def _web() -> Node:
    return Node(
        name="web",
        interfaces=(Interface("eth0", "203.0.113.10/24", "2001:db8:3::10/64"),),
        gateway="203.0.113.1",
        gateway6="2001:db8:3::1",
        role="web",
    )


def _site_to_site(r1: Node, isp: Node, r2: Node, web: Node, links: tuple[Link, ...]) -> Topology:
    """The default lab plus a LAN behind each gateway: h1 behind r1, h2 behind r2 (dual stack:
    172.16.1.0/24 and fd16:1::/64, 172.16.2.0/24 and fd16:2::/64)."""
    lan1, lan2 = "172.16.1", "172.16.2"
    r1 = replace(r1, interfaces=(*r1.interfaces, Interface("eth1", f"{lan1}.1/24", "fd16:1::1/64")))
    r2 = replace(r2, interfaces=(*r2.interfaces, Interface("eth1", f"{lan2}.1/24", "fd16:2::1/64")))
    h1 = Node(
        "h1",
        (Interface("eth0", f"{lan1}.10/24", "fd16:1::10/64"),),
        f"{lan1}.1",
        False,
        "fd16:1::1",
        role="host",
    )
    h2 = Node(
        "h2",
        (Interface("eth0", f"{lan2}.10/24", "fd16:2::10/64"),),
        f"{lan2}.1",
        False,
        "fd16:2::1",
        role="host",
    )
    lans = (
        ("r1", f"{lan1}.0/24"),
        ("r2", f"{lan2}.0/24"),
        ("r1", "fd16:1::/64"),
        ("r2", "fd16:2::/64"),
    )
    return Topology(
        nodes=(r1, isp, r2, web, h1, h2),
        links=(*links, Link(("r1", "eth1"), ("h1", "eth0")), Link(("r2", "eth1"), ("h2", "eth0"))),
        tunnel=Tunnel(clients=("r1",), lans=lans),
    )


DEFAULT_TOPOLOGY = make_topology(1)
"""DESIGN §3: r1 (client) -- isp -- r2 (server), web behind the isp; tunnel 10.8.0.0/24."""
