"""SetRouting(1) for the client, SetRouting(0) for the server, and the NAT rule.

Both daemons run inside a lab namespace (``ip netns exec``), so every route, sysctl and nftables
table they touch belongs to that namespace. As a safety net they refuse to start anywhere but in
a named namespace (one of ``/run/netns``) unless told that the host is really meant.

Client (SetRouting(1)):
    1. host route to the server's public address via r1's own gateway, so the tunnel's own
       datagrams never enter the tunnel (without it: a routing loop);
    2. 0.0.0.0/1 and 128.0.0.0/1 via tun0: together they cover everything and, being more
       specific than the default route, win without deleting it.
    CleanUp deletes exactly these routes again.

Server (SetRouting(0)):
    1. net.ipv4.ip_forward = 1 (the previous value is restored on exit);
    2. the route to the tunnel network via tun0 comes from Ifconfig's address;
    3. the NAT rule of the notes, as an nftables ruleset file applied with ``nft -f``: source in
       the tunnel network, destination outside it, leaving through the external interface:
       masquerade.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from .constants import NAT_TABLE
from .errors import SetupError

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


NAMED_NETNS_DIR = Path("/run/netns")


def in_named_netns() -> bool:
    """True when this process runs in a namespace made with ``ip netns add`` (a lab node).

    Fails closed: if the namespaces cannot be inspected, the answer is False.
    """
    try:
        ours = os.stat("/proc/self/ns/net").st_ino
        named = {entry.stat().st_ino for entry in NAMED_NETNS_DIR.iterdir()}
    except OSError:
        return False
    return ours in named


def refuse_host_changes(allow_host: bool) -> None:
    """Raise unless we run inside a named namespace (or the user insisted)."""
    if not allow_host and not in_named_netns():
        raise SetupError(
            "refusing to change the host's own routes: run the daemon inside a lab node "
            "(vpnlab lab exec r1 ...), or pass --allow-host-changes if you really mean it"
        )


@dataclass
class ClientRouting:
    """SetRouting(1): everything through tun0 except the way to the server."""

    server: IPv4Address
    tun_name: str
    added: list[dict[str, object]] = field(default_factory=list)

    def apply(self) -> None:
        """SetRouting(1): add the host route and the two halves of the address space."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            with IPRoute() as ipr:
                (path,) = ipr.route("get", dst=str(self.server))[:1]
                gateway = path.get("RTA_GATEWAY")
                host_route: dict[str, object] = {
                    "dst": f"{self.server}/32",
                    "oif": path.get("RTA_OIF"),
                }
                if gateway:
                    host_route["gateway"] = gateway
                (tun_index,) = ipr.link_lookup(ifname=self.tun_name)
                for route in (
                    host_route,
                    {"dst": "0.0.0.0/1", "oif": tun_index},
                    {"dst": "128.0.0.0/1", "oif": tun_index},
                ):
                    ipr.route("replace", **route)
                    self.added.append(route)
        except (NetlinkError, ValueError) as exc:
            self.restore()
            raise SetupError(f"SetRouting(1) failed: {exc}") from None

    def restore(self) -> None:
        """CleanUp: delete the routes apply() added, newest first; gone ones are fine."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            for route in reversed(self.added):
                # tun0 may be closed already, and its routes gone with it
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", **route)
        self.added.clear()


def nat_ruleset(network: IPv4Network, external_interface: str) -> str:
    """The NAT rule of the design notes as an nftables ruleset (re-applying it is safe)."""
    return f"""\
# vpnlab: the NAT rule of the design notes (SetRouting(0) on the server).
# Traffic from the tunnel network to anywhere else leaves {external_interface} masqueraded
# as the server's own address, so replies come back to the server.
table ip {NAT_TABLE}
delete table ip {NAT_TABLE}
table ip {NAT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {network} ip daddr != {network} oifname "{external_interface}" counter masquerade
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
    """SetRouting(0): forwarding on and the masquerade rule for the tunnel network."""

    network: IPv4Network
    external_interface: str | None
    ruleset_file: Path
    previous_forward: str | None = None
    nat_applied: bool = False

    def apply(self) -> None:
        """SetRouting(0): ip_forward=1, then ``nft -f`` the NAT ruleset file."""
        try:
            self.previous_forward = IP_FORWARD.read_text().strip()
            IP_FORWARD.write_text("1\n")
        except OSError as exc:
            raise SetupError(f"cannot turn on ip_forward: {exc.strerror}") from None
        if self.external_interface:
            self.ruleset_file.parent.mkdir(parents=True, exist_ok=True)
            self.ruleset_file.write_text(nat_ruleset(self.network, self.external_interface))
            run_nft("-f", str(self.ruleset_file))
            self.nat_applied = True

    def restore(self) -> None:
        """CleanUp: remove our nftables table and put ip_forward back as it was."""
        if self.nat_applied:
            # already gone if someone ran `nft flush ruleset`
            with contextlib.suppress(SetupError):
                run_nft("delete", "table", "ip", NAT_TABLE)
            self.nat_applied = False
        if self.previous_forward is not None:
            with contextlib.suppress(OSError):
                IP_FORWARD.write_text(self.previous_forward + "\n")
            self.previous_forward = None
