"""Apply a :class:`~vpnlab.lab.topology.Topology` to real namespaces (pyroute2), start daemons.

Nothing here touches the root namespace: namespaces are created empty, each veth is created
inside one lab namespace with its peer placed directly in the other (``net_ns_fd``), and
forwarding is switched on with ``sysctl`` run *inside* the router's namespace (/proc/sys/net is
per namespace of the process that opens it). Every namespace is written to the record before it
is created, so a crash half way leaves nothing that ``down`` cannot find.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.nodes import namespace_of, popen_in, run_in
from vpnlab.lab.records import DaemonRecord, LabRecord
from vpnlab.lab.state import NETNS_DIR, namespace, ns_exists, register_child, save, state_dir
from vpnlab.lab.topology import Link, Node, Topology

NODAD = 0x02
"""IFA_F_NODAD (linux/if_addr.h): an IPv6 address without duplicate address detection."""


def _ipr(ns: str) -> Any:
    """An IPRoute bound to namespace ``ns``; flags=0 so a typo never creates a namespace."""
    from pyroute2 import IPRoute

    return IPRoute(netns=ns, flags=0)


def build(prefix: str, topo: Topology, record: LabRecord) -> None:
    """Create every namespace, veth, address, route and sysctl of ``topo``.

    Args:
        prefix: namespace prefix (``vpnlab-``): node ``r1`` lives in ``vpnlab-r1``.
        topo: the description to apply.
        record: the state record; namespaces are added (and saved) before they exist.
    Raises:
        LabError: a namespace already exists, or the kernel refused a step.
    """
    from pyroute2 import netns
    from pyroute2.netlink.exceptions import NetlinkError

    # pyroute2 forks a child per namespace operation, and each child that has no libc yet runs
    # ctypes' find_library, that is `ldconfig -p` (27 processes a lab up): load it once here,
    # the children inherit it
    netns._get_libc()
    try:
        for node in topo.nodes:
            ns = namespace(prefix, node.name)
            if ns_exists(ns):
                raise LabError(f"namespace {ns} already exists (run: vpnlab lab down)")
            record.namespaces.append(ns)
            save(record)
            netns.create(ns)
            if not topo.ipv6:
                off = "net.ipv6.conf.{}.disable_ipv6=1"
                sysctl = ["sysctl", "-qw", off.format("all"), off.format("default")]
                run_in(prefix, node.name, sysctl)
        for node in topo.nodes:
            ns = namespace(prefix, node.name)
            with _ipr(ns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                for bridge in node.bridges:
                    ipr.link("add", ifname=bridge, kind="bridge")
        for link in topo.links:
            _add_link(prefix, topo, link)
        for node in topo.nodes:
            _configure(prefix, node, topo.ipv6)
            _udp_segmentation_off(namespace(prefix, node.name), _veth_names(topo, node.name))
    except (NetlinkError, OSError) as exc:
        raise LabError(f"building the lab failed: {exc}") from None


def _end_name(topo: Topology, end: tuple[str, str], peer: tuple[str, str]) -> tuple[str, str]:
    """Interface name for one veth end, and the bridge it joins ('' if none)."""
    node, ifname = end
    if ifname in topo.node(node).bridges:
        return f"{ifname}-{peer[0]}"[:15], ifname
    return ifname, ""


def _add_link(prefix: str, topo: Topology, link: Link) -> None:
    """One veth pair, made in ``a``'s namespace with the peer created straight in ``b``'s."""
    a_name, a_bridge = _end_name(topo, link.a, link.b)
    b_name, b_bridge = _end_name(topo, link.b, link.a)
    ns_a = namespace(prefix, link.a[0])
    ns_b = namespace(prefix, link.b[0])
    with _ipr(ns_a) as ipr:
        ipr.link(
            "add",
            ifname=a_name,
            kind="veth",
            peer={"ifname": b_name, "net_ns_fd": str(NETNS_DIR / ns_b)},
        )
    for ns, name, bridge in ((ns_a, a_name, a_bridge), (ns_b, b_name, b_bridge)):
        if bridge:
            with _ipr(ns) as ipr:
                ipr.link(
                    "set",
                    index=ipr.link_lookup(ifname=name)[0],
                    master=ipr.link_lookup(ifname=bridge)[0],
                )


def _link_ends(topo: Topology) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Every veth end with the end it is paired with, both ways round."""
    return [(link.a, link.b) for link in topo.links] + [(link.b, link.a) for link in topo.links]


def _veth_names(topo: Topology, node: str) -> list[str]:
    """The names of ``node``'s veth ends (a bridge port's included)."""
    return [_end_name(topo, end, peer)[0] for end, peer in _link_ends(topo) if end[0] == node]


def _udp_segmentation_off(ns: str, names: list[str]) -> None:
    """``ethtool -K NAME tx-udp-segmentation off`` on each veth of ``ns``: the kernel then cuts
    a daemon's UDP GSO batch into datagrams before the veth, as a NIC would, so a capture shows
    one ESP datagram per frame instead of one 64 KB frame per batch. A kernel without the
    feature has no UDP GSO to cut."""
    _set_features(ns, names, lambda feature: False if feature == "tx-udp-segmentation" else None)


def receive_like_a_nic(prefix: str, topo: Topology) -> None:
    """GRO on each VPN node's outer veth end, and no TCP segmentation on the end facing it, so
    that the veth hands what it receives to GRO, as a NIC's NAPI does: the fast data path's
    UDP_GRO socket then takes a burst of one client's datagrams in one ``recvmsg``.

    A veth runs GRO only with its NAPI on (GRO on) and only for a packet that its sender could
    not have segmented itself (the sender without TSO, Linux's ``veth_skb_is_eligible_for_gro``);
    the routers' ends never send TCP of their own, so nothing is segmented for them. A capture
    on such an end sees what GRO joined (one frame for a burst of ESP datagrams), so the
    teaching lab keeps it off; ``vpnlab bench`` turns it on in its own lab.
    """
    vpn_nodes = {topo.tunnel.server, *topo.tunnel.clients}
    for end, peer in _link_ends(topo):
        if end[0] in vpn_nodes:
            _set_features(namespace(prefix, end[0]), [_end_name(topo, end, peer)[0]], _gro_on)
            _set_features(namespace(prefix, peer[0]), [_end_name(topo, peer, end)[0]], _tso_off)


def _gro_on(feature: str) -> bool | None:
    """GRO (``ethtool``'s generic-receive-offload, the kernel's rx-gro)."""
    return True if feature == "rx-gro" else None


def _tso_off(feature: str) -> bool | None:
    """Every TCP segmentation feature (NETIF_F_ALL_TSO: tx-tcp-segmentation, -ecn-, -mangleid-,
    tx-tcp6-, and what a newer kernel adds)."""
    return False if feature.startswith("tx-tcp") and feature.endswith("segmentation") else None


def _set_features(ns: str, names: list[str], wanted: Callable[[str], bool | None]) -> None:
    """``ethtool -K`` through pyroute2 (SIOCETHTOOL, on a socket made in ``ns``): each feature
    of each device in ``names`` that ``wanted`` gives a value (None: left as it is). A device
    without ethtool features is left alone."""
    from pyroute2 import netns
    from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError

    ethtool = IoctlEthtool()
    ethtool.sock.close()
    ethtool.sock = netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    try:
        for name in names:
            ethtool.change_ifname(name)
            try:
                features = ethtool.get_features()
            except NotSupportedError:  # a device without ethtool features
                continue
            names_here = features.keys()  # pyroute2's list iterates (name, value, ...) tuples
            changes = {f: v for f in names_here if (v := wanted(f)) is not None}
            if changes:
                for feature, value in changes.items():
                    features[feature] = value
                ethtool.set_features(features)
    finally:
        ethtool.close()


def _configure(prefix: str, node: Node, ipv6: bool = True) -> None:
    """Ifconfig for one node: addresses, links up, default route, forwarding; with ``ipv6``
    its IPv6 addresses (no DAD: usable at once, the lab chose them), default and forwarding."""
    with _ipr(namespace(prefix, node.name)) as ipr:
        for link in ipr.get_links():
            if link.get("ifname") != "lo":
                ipr.link("set", index=link["index"], state="up")
        for itf in node.interfaces:
            idx = ipr.link_lookup(ifname=itf.name)
            if not idx:
                raise LabError(f"{node.name} has an address on {itf.name} but no such link")
            ip, _, plen = itf.address.partition("/")
            ipr.addr("add", index=idx[0], address=ip, prefixlen=int(plen or 32))
            if ipv6 and itf.address6:
                ip, _, plen = itf.address6.partition("/")
                ipr.addr("add", index=idx[0], address=ip, prefixlen=int(plen), IFA_FLAGS=NODAD)
        if node.gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=node.gateway)
        if ipv6 and node.gateway6:
            ipr.route("add", dst="::/0", gateway=node.gateway6)
    if node.forwarding:
        sysctl = ["sysctl", "-qw", "net.ipv4.ip_forward=1"]
        run_in(prefix, node.name, sysctl + ["net.ipv6.conf.all.forwarding=1"] * ipv6, check=True)


def start_daemon(prefix: str, record: LabRecord, name: str, node: str, argv: list[str]) -> int:
    """Start a long-running ``argv`` inside ``node``; log to ``{state}/logs/{name}.log``.

    The PID (``ip netns exec`` execs the program, so it is the daemon's own) is recorded with
    argv and log path before this returns. Returns the PID.
    """
    namespace_of(prefix, node)  # LabError before anything is written for a lab that is down
    log_path = daemon_log(prefix, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = popen_in(
            prefix,
            node,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    register_child(proc)
    record.daemons[name] = DaemonRecord(node, argv, proc.pid, str(log_path), time.time())
    save(record)
    return proc.pid


def daemon_log(prefix: str, name: str) -> Path:
    """Where :func:`start_daemon` logs daemon ``name``: each start appends to it (a header
    line, then the daemon's output), so the lines of an earlier start stay there."""
    return state_dir(prefix) / "logs" / f"{name}.log"


def log_tail(path: str | Path, lines: int = 8) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(tail) or "(empty log)"


def listening(pid: int, port: int) -> bool:
    """True if some TCP socket in PID's namespace listens on ``port`` (/proc/PID/net/tcp and,
    for IPv6 sockets, tcp6)."""
    lines = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines += Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
            return True
    return False


def inspect_node(ns: str) -> dict[str, Any]:
    """Links (state, IPv4 and global IPv6 addresses) and IPv4 main-table routes of one namespace,
    as plain data."""
    from pyroute2.netlink.exceptions import NetlinkError

    if not ns_exists(ns):
        return {"exists": False, "interfaces": {}, "routes": []}
    try:
        with _ipr(ns) as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            interfaces = {
                link.get("ifname"): {
                    "state": link.get("state"),
                    "mtu": link.get("mtu"),
                    "addresses": [],
                    "addresses6": [],
                }
                for link in ipr.get_links()
            }
            for addr in ipr.get_addr():  # IPv4, and IPv6 beyond the link (not fe80::, ::1)
                name = names.get(addr["index"])
                key = "addresses" if addr["family"] == socket.AF_INET else "addresses6"
                if name in interfaces and (key == "addresses" or addr["scope"] == 0):
                    cidr = f"{addr.get('address')}/{addr['prefixlen']}"
                    interfaces[name][key].append(cidr)
            routes = [
                _route_text(route, names)
                for route in ipr.get_routes(family=socket.AF_INET, table=254)
            ]
    except (NetlinkError, OSError) as exc:
        return {"exists": ns_exists(ns), "error": str(exc), "interfaces": {}, "routes": []}
    return {"exists": True, "interfaces": interfaces, "routes": routes}


def _route_text(route: Any, names: dict[int, str]) -> str:
    """``ip route``-like one-liner for a route message."""
    dst = route.get("dst")
    text = f"{dst}/{route['dst_len']}" if dst else "default"
    if route.get("gateway"):
        text += f" via {route.get('gateway')}"
    if route.get("oif") in names:
        text += f" dev {names[route.get('oif')]}"
    if route.get("prefsrc"):
        text += f" src {route.get('prefsrc')}"
    return text
