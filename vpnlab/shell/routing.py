"""SetRouting(1) for the client, SetRouting(0) for the server, and the NAT rule.

Both daemons run inside a lab namespace (``ip netns exec``), so every route, sysctl and nftables
table they touch belongs to that namespace. As a safety net they refuse to start anywhere but in
a named namespace (one of ``/run/netns``) unless told that the host is really meant.

Client (SetRouting(1)):
    1. host route to the server's public address via r1's own gateway, so the tunnel's own
       datagrams never enter the tunnel (without it: a routing loop);
    2. 0.0.0.0/1 and 128.0.0.0/1 via tun0: together they cover everything and, being more
       specific than the default route, win without deleting it; dual stack: ::/1 and
       8000::/1 too (the host route of step 1 is a /128 when the server is reached over IPv6).
    CleanUp deletes exactly these routes again. Site to site (``--route NET``): only NET goes
    through tun0, and the client forwards for the LAN behind it (ip_forward=1, restored).

Server (SetRouting(0)):
    1. net.ipv4.ip_forward = 1 (the previous value is restored on exit); dual stack:
       net.ipv6.conf.all.forwarding = 1 too;
    2. the route to the tunnel network via tun0 comes from Ifconfig's address (and the one to
       fd10:8::/64 from its IPv6 address);
    3. the NAT rule of the notes, as an nftables ruleset file applied with ``nft -f``: source in
       the tunnel network, destination outside it, leaving through the external interface:
       masquerade. Dual stack: the same rule for the ULA in an ``ip6`` table (NAT66). Without
       NAT (no external interface), the far side must route both networks to the server.
    Site to site (``--client-network``): the networks behind clients are routed into tun0.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Protocol

from vpnlab.core.constants import NAT_TABLE
from vpnlab.core.errors import SetupError
from vpnlab.core.packet import IPV6_MIN_MTU
from vpnlab.shell.rtnetlink import NetlinkError, Route, Rtnetlink, link_index

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
IP6_FORWARD = Path("/proc/sys/net/ipv6/conf/all/forwarding")
IPV6_DISABLED = Path("/proc/sys/net/ipv6/conf/default/disable_ipv6")


def ipv6_enabled() -> bool:
    """Whether a new device in our namespace gets IPv6 (the lab can switch it off per node)."""
    try:
        return IPV6_DISABLED.read_text().strip() == "0"
    except OSError:  # no IPv6 in this kernel at all
        return False


NAMED_NETNS_DIR = Path("/run/netns")


def in_named_netns() -> bool:
    """True when this process runs in a namespace made with ``ip netns add`` (a lab node).

    Fails closed: if our namespace or the named ones cannot be inspected, the answer is False.
    A name removed while we look (another lab's ``down``) is passed over, not taken for a no:
    with three labs built and removed at once a client refused to start, once in CI.
    """
    try:
        ours = os.stat("/proc/self/ns/net")
        names = list(NAMED_NETNS_DIR.iterdir())
    except OSError:
        return False
    for name in names:
        try:
            named = name.stat()
        except OSError:  # gone (or unmounted) since iterdir()
            continue
        if (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino):
            return True
    return False


def refuse_host_changes(allow_host: bool) -> None:
    """Raise unless we run inside a named namespace (or the user insisted)."""
    if not allow_host and not in_named_netns():
        raise SetupError(
            "refusing to change the host's own routes: run the daemon inside a lab node "
            "(vpnlab lab exec r1 ...), or pass --allow-host-changes if you really mean it"
        )


def carries_ipv6(mode: str, mtu: int) -> bool:
    """Dual stack inside the tunnel: tun mode (TAP carries any frame anyway), IPv6 on in this
    namespace, and a tun0 of at least 1280 bytes (below it Linux keeps IPv6 off the device)."""
    return mode == "tun" and mtu >= IPV6_MIN_MTU and ipv6_enabled()


def set_forwarding(on: bool, path: Path = IP_FORWARD) -> str:
    """net.ipv4.ip_forward (or ``path``: IPv6's) in our own namespace; returns the old value.

    Raises:
        SetupError: /proc refused (not root).
    """
    try:
        previous = path.read_text().strip()
        path.write_text("1\n" if on else "0\n")
    except OSError as exc:
        raise SetupError(f"cannot set {path.name}: {exc.strerror}") from None
    return previous


def restore_forwarding(previous: str | None, path: Path = IP_FORWARD) -> None:
    if previous is not None:
        with contextlib.suppress(OSError):
            path.write_text(previous + "\n")


def add_routes(routes: list[Route], added: list[Route]) -> None:
    """``ip route replace`` each route, remembering it in ``added`` for CleanUp."""
    with Rtnetlink() as netlink:
        for route in routes:
            netlink.replace_route(route)
            added.append(route)


def delete_routes(added: list[Route]) -> None:
    """CleanUp: delete the routes we added, newest first; routes already gone are fine."""
    with Rtnetlink() as netlink:
        for route in reversed(added):
            # tun0 may be closed already, and its routes gone with it
            with contextlib.suppress(NetlinkError):
                netlink.delete_route(route)
    added.clear()


class Routing(Protocol):
    """SetRouting: what a daemon applies after Ifconfig and CleanUp restores."""

    def apply(self) -> None: ...

    def restore(self) -> None: ...


@dataclass
class ClientRouting:
    """SetRouting(1): everything through tun0 except the way to the server.

    With ``networks`` (site to site) only those networks go through tun0, and the client
    forwards for the LAN behind it. With ``gateway`` (``--mode tap``: tap0 is an Ethernet
    segment, so a route needs a next hop whose MAC ARP can find) the routes go via the
    server's tunnel address instead of straight out of the device. With ``ipv6`` (dual stack)
    IPv6 goes through tun0 too: ::/1 and 8000::/1, and IPv6 forwarding for a LAN.

    CleanUp restores the routes as they were (the notes' CleanUp): once the tunnel is down
    the redirected traffic leaves unencrypted by the default route. With ``fail_closed``
    (``--fail-closed``) CleanUp leaves an ``unreachable`` route for each redirected network
    instead, and the host route to the server, so nothing leaves in the clear while the
    tunnel is down, and the next run can still reach the server (its SetRouting replaces
    them); ``ip route del unreachable 0.0.0.0/1`` (and 128.0.0.0/1) opens the way again.
    """

    server: IPv4Address | IPv6Address
    tun_name: str
    networks: tuple[IPv4Network | IPv6Network, ...] = ()
    added: list[Route] = field(default_factory=list)
    previous_forward: str | None = None
    gateway: IPv4Address | None = None
    ipv6: bool = False
    previous_forward6: str | None = None
    fail_closed: bool = False

    def apply(self) -> None:
        """SetRouting(1): the host route and the two halves of the address space (or the
        site-to-site networks) via tun0, for each family the tunnel carries."""
        try:
            tun = link_index(self.tun_name)
            if self.networks:
                self.previous_forward = set_forwarding(True)
                if self.ipv6:
                    self.previous_forward6 = set_forwarding(True, IP6_FORWARD)
                nets = [Route(net, tun, self.gateway) for net in self.networks]
                add_routes(nets, self.added)
                return
            halves = ["0.0.0.0/1", "128.0.0.0/1"] + (["::/1", "8000::/1"] if self.ipv6 else [])
            everything = [Route(ip_network(half), tun, self.gateway) for half in halves]
            add_routes([self._host_route(), *everything], self.added)
        except NetlinkError as exc:
            self.restore()
            raise SetupError(f"SetRouting(1) failed: {exc}") from None

    def _host_route(self) -> Route:
        """The server's address (/32, or /128 over IPv6) the way it is reached now."""
        with Rtnetlink() as netlink:
            path = netlink.get_route(self.server)
        return Route(ip_network(self.server), path.oif, path.gateway)

    def restore(self) -> None:
        """CleanUp: delete the routes apply() added (fail closed: each redirected network
        becomes unreachable, the server's host route stays); forwarding as it was."""
        if self.fail_closed and self.added:
            host = ip_network(self.server)
            redirected = [route for route in self.added if route.dst != host]
            closed = [Route(route.dst, kind="unreachable") for route in redirected]
            add_routes(closed, [])  # replaces each tun0 route: never a moment in the clear
            self.added.clear()  # kept on purpose: the host route and the unreachable ones
        delete_routes(self.added)
        restore_forwarding(self.previous_forward)
        restore_forwarding(self.previous_forward6, IP6_FORWARD)
        self.previous_forward = self.previous_forward6 = None


IFNAMSIZ = 16
"""Linux's limit for an interface name, with its NUL: 15 characters at most."""


def check_interface_name(name: str) -> str:
    """``name`` if Linux could call an interface that (``dev_valid_name``) and it is safe inside
    an nft string: 1-15 characters, not ``.`` or ``..``, no ``/``, ``:``, whitespace or control
    character, no ``"`` or ``\\``.

    Raises:
        SetupError: anything else, in one line.
    """
    bad = set('/:"\\')
    if (
        not 0 < len(name) < IFNAMSIZ
        or name in (".", "..")
        or any(c in bad or c.isspace() or not c.isprintable() for c in name)
    ):
        raise SetupError(
            f"bad external interface name {name!r}: want 1-15 characters, not . or .., "
            'without / : " \\ or whitespace'
        )
    return name


def nat_ruleset(
    network: IPv4Network, external_interface: str, network6: IPv6Network | None = None
) -> str:
    """The NAT rule of the design notes as an nftables ruleset (re-applying it is safe); with
    ``network6`` (dual stack) the same rule for IPv6 (NAT66) in an ``ip6`` table.

    Raises:
        SetupError: ``external_interface`` is no interface name (it goes into the file).
    """
    check_interface_name(external_interface)
    return _nat_table("ip", network, external_interface) + (
        _nat_table("ip6", network6, external_interface) if network6 else ""
    )


def _nat_table(family: str, network: IPv4Network | IPv6Network, external_interface: str) -> str:
    """One family's masquerade table (``ip`` or ``ip6``: the same rule, its own addresses)."""
    title = "the NAT rule of the design notes" if family == "ip" else "NAT66, the same for IPv6"
    return f"""\
# vpnlab: {title} (SetRouting(0) on the server).
# Traffic from the tunnel network to anywhere else leaves {external_interface} masqueraded
# as the server's own address, so replies come back to the server.
table {family} {NAT_TABLE}
delete table {family} {NAT_TABLE}
table {family} {NAT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        {family} saddr {network} {family} daddr != {network} oifname "{external_interface}" \
counter masquerade
    }}
}}
"""


def run_nft(*args: str) -> None:
    """Run ``nft`` and turn a failure into a one-line SetupError."""
    try:
        subprocess.run(["nft", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SetupError("nft not found: install the nftables package") from None
    except subprocess.CalledProcessError as exc:
        raise SetupError(f"nft {' '.join(args)}: {exc.stderr.strip()}") from None


@dataclass
class ServerRouting:
    """SetRouting(0): forwarding on and the masquerade rule for the tunnel network.

    With ``client_networks`` (site to site) the networks behind the clients are routed into
    tun0 (``tun_name``) too. With ``network6`` (dual stack: the tunnel's ULA) IPv6 is
    forwarded too, and masqueraded (NAT66) with an external interface.
    """

    network: IPv4Network
    external_interface: str | None
    ruleset_file: Path
    tun_name: str = "tun0"
    client_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    previous_forward: str | None = None
    nat_applied: bool = False
    added: list[Route] = field(default_factory=list)
    network6: IPv6Network | None = None
    previous_forward6: str | None = None

    def apply(self) -> None:
        """SetRouting(0): ip_forward=1, routes to client networks, ``nft -f`` the NAT file."""
        if self.external_interface:
            check_interface_name(self.external_interface)  # before anything is changed
        self.previous_forward = set_forwarding(True)
        if self.network6 is not None:
            self.previous_forward6 = set_forwarding(True, IP6_FORWARD)
        if self.client_networks:
            try:
                tun = link_index(self.tun_name)
                add_routes([Route(n, tun) for n in self.client_networks], self.added)
            except NetlinkError as exc:
                raise SetupError(f"SetRouting(0) failed: {exc}") from None
        if self.external_interface:
            self.ruleset_file.parent.mkdir(parents=True, exist_ok=True)
            ruleset = nat_ruleset(self.network, self.external_interface, self.network6)
            self.ruleset_file.write_text(ruleset)
            run_nft("-f", str(self.ruleset_file))
            self.nat_applied = True

    def set_client_networks(self, networks: tuple[IPv4Network | IPv6Network, ...]) -> None:
        """``peers.toml`` changed: route exactly ``networks`` into tun0 from now on (a
        revoked peer's routes deleted, a new peer's added)."""
        wanted = set(networks)
        delete_routes([route for route in self.added if route.dst not in wanted])
        self.added = [route for route in self.added if route.dst in wanted]
        have = {route.dst for route in self.added}
        if wanted - have:
            tun = link_index(self.tun_name)
            add_routes([Route(dst, tun) for dst in sorted(wanted - have, key=str)], self.added)
        self.client_networks = networks

    def restore(self) -> None:
        """CleanUp: remove our nftables table and routes, put ip_forward back as it was."""
        if self.nat_applied:
            # already gone if someone ran `nft flush ruleset`
            for family in ("ip", "ip6") if self.network6 else ("ip",):
                with contextlib.suppress(SetupError):
                    run_nft("delete", "table", family, NAT_TABLE)
            self.nat_applied = False
        delete_routes(self.added)
        restore_forwarding(self.previous_forward)
        restore_forwarding(self.previous_forward6, IP6_FORWARD)
        self.previous_forward = self.previous_forward6 = None
