"""Troubleshooting labs: a lab with one hidden fault, for a student to find and repair by hand.

``vpnlab lab up --fault NAME|random`` builds the lab, starts the VPN and then breaks one thing
with the tools a student repairs it with (``ip``, ``nft``, ``sysctl`` inside a node, or a key
file), as Kathara's checker and netlab's validate labs do. ``vpnlab check`` (course/check.py)
then says whether the lab works again, symptom by symptom, without naming the fault. The
student starts from a ticket: the symptom as a user reports it (:data:`FAULTS`; several faults
share each of the four).

    name          where  what is broken                          what a student sees
    forward-isp   isp    net.ipv4.ip_forward = 0                 r1 cannot reach r2 at all
    forward-r2    r2     net.ipv4.ip_forward = 0                 tunnel up, nothing beyond r2
    host-route    r1     the host route to the server deleted    the tunnel's datagrams go
                                                                 into tun0 (dropped, counted)
    nat-iface     r2     masquerade on oifname "eth1" (no such)  web answers 10.8.0.2: lost
    mtu-blackhole r1 r2  tun0 mtu 1500, the isp drops fragments  small packets pass, big die
    wrong-key     r1     r1.conf holds a key the server does     the server drops every Hello
                         not list (the client is restarted)      ("unknown peer key")
    udp-filter    isp    nftables drops UDP port 4500            no datagram crosses the isp
    client-routes r1     0/1 and 128/1 gone, a default via tun0  traffic bypasses the tunnel
                         with a worse metric than eth0's
    rp-filter     r1     rp_filter = 1; what tun0 brings is      web's replies reach tun0
                         marked, and marked lookups of web's     and are dropped there
                         network go via eth0 (a policy route)

What the lab runs differently, for every fault alike (so nothing there hints at one): the
daemons never give up (``--liveness-timeout 0`` on both, ``--reconnect`` on the client), so a
repair works without a restart, and the status says ``connected`` while the path is broken:
read the counters (keepalives sent and received, drops). A guard on r1 drops the tunnel's own
datagrams if they are ever routed into tun0 (counted as the client's send drops), so a missing
host route is a dead tunnel instead of a routing loop that burns a CPU.

The fault is recorded in the state folder as ``fault.json``: a salt, the SHA-256 of the salt and
the name, when it began and the VPN daemons' PIDs then (a restart hides most faults instead of
repairing them; ``vpnlab check`` notices one). :func:`identify` finds the name again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.keys import write_secret
from vpnlab.lab.build import start_daemon
from vpnlab.lab.control import up
from vpnlab.lab.inspection import status
from vpnlab.lab.nodes import run_in
from vpnlab.lab.state import record_of, save, state_dir, stop_daemons, topology_of
from vpnlab.lab.topology import Topology
from vpnlab.lab.vpn import start_vpn
from vpnlab.peers import client_config_text, read_client_config

FAULT_FILE = "fault.json"
DAEMON_ARGS = ["--liveness-timeout", "0"]
"""Both daemons, in a troubleshooting lab: a broken path never ends the session."""
GUARD_TABLE = "vpnlab_guard"
ISP_TABLE = "isp"
POLICY_TABLE = "100"
POLICY_MARK = "0x1"


@dataclass(frozen=True)
class Fault:
    """One fault: how it is injected, and the ticket a student starts from (the symptom as a
    user would report it; several faults share one)."""

    name: str
    ticket: str
    inject: Callable[[str, Topology], None]
    needs_identity: bool = False


def _router(topo: Topology) -> str:
    return next(n.name for n in topo.nodes if n.role == "router")


def _client(topo: Topology) -> str:
    return topo.tunnel.clients[0]


def _sh(prefix: str, node: str, *commands: str) -> None:
    """Each command (split on spaces) in ``node``; LabError if one fails."""
    for command in commands:
        run_in(prefix, node, command.split(), check=True)


def _nft(prefix: str, node: str, ruleset: str) -> None:
    run_in(prefix, node, ["nft", "-f", "-"], input=ruleset, check=True)


def _filter(table: str, hook: str, rule: str) -> str:
    """An nftables table with one chain (filter, ``hook``) holding ``rule``."""
    return (
        f"table inet {table} {{\n    chain {hook} {{\n"
        f"        type filter hook {hook} priority 0; policy accept;\n"
        f"        {rule}\n    }}\n}}\n"
    )


def _forward_off(node_of: Callable[[Topology], str]) -> Callable[[str, Topology], None]:
    def inject(prefix: str, topo: Topology) -> None:
        _sh(prefix, node_of(topo), "sysctl -qw net.ipv4.ip_forward=0")

    return inject


def _host_route(prefix: str, topo: Topology) -> None:
    _sh(prefix, _client(topo), f"ip route del {topo.server_ip}/32")


def _nat_iface(prefix: str, topo: Topology) -> None:
    network = topo.tunnel.network
    _nft(
        prefix,
        topo.tunnel.server,
        "flush chain ip vpnlab postrouting\n"
        f"add rule ip vpnlab postrouting ip saddr {network} ip daddr != {network}"
        ' oifname "eth1" counter masquerade\n',
    )


def _mtu(prefix: str, topo: Topology) -> None:
    for node in (_client(topo), topo.tunnel.server):
        _sh(prefix, node, "ip link set dev tun0 mtu 1500")
    _nft(prefix, _router(topo), _filter(ISP_TABLE, "forward", "ip frag-off & 0x3fff != 0 drop"))


def _udp_filter(prefix: str, topo: Topology) -> None:
    _nft(prefix, _router(topo), _filter(ISP_TABLE, "forward", "udp dport 4500 counter drop"))


def _routes(prefix: str, topo: Topology) -> None:
    _sh(
        prefix,
        _client(topo),
        "ip route del 0.0.0.0/1 dev tun0",
        "ip route del 128.0.0.0/1 dev tun0",
        "ip route add default dev tun0 metric 100",
    )


def _rp_filter(prefix: str, topo: Topology) -> None:
    """What arrives on tun0 is marked (as for accounting), ``src_valid_mark`` lets the
    reverse-path check see the mark, and marked lookups of web's network use table 100 (via
    eth0): web's replies came in on tun0, the check says eth0, rp_filter 1 drops them."""
    client = _client(topo)
    web_net = str(ipaddress.IPv4Interface(f"{topo.web_ip}/24").network)
    gateway = topo.node(client).gateway
    _sh(
        prefix,
        client,
        f"ip route add {web_net} via {gateway} dev eth0 table {POLICY_TABLE}",
        f"ip rule add pref 100 fwmark {POLICY_MARK} table {POLICY_TABLE}",
        "sysctl -qw net.ipv4.conf.all.src_valid_mark=1 net.ipv4.conf.all.rp_filter=1",
    )
    _nft(
        prefix,
        client,
        "table ip marks {\n    chain prerouting {\n"
        "        type filter hook prerouting priority mangle; policy accept;\n"
        f'        iifname "tun0" meta mark set {POLICY_MARK}\n    }}\n}}\n',
    )


def _wrong_key(prefix: str, topo: Topology) -> None:
    """A fresh key in the client's config, which the server's peers.toml does not list; the
    client is restarted with it (same command line) and retries every few seconds."""
    client = _client(topo)
    record = record_of(prefix)
    daemon = record["daemons"].get(f"client-{client}")
    path = state_dir(prefix) / "identity" / f"{client}.conf"
    if daemon is None or not path.exists():
        raise LabError("the wrong-key fault needs a running identity-mode client")
    config = read_client_config(path)
    identity = replace(config.identity, private_key=os.urandom(32))
    write_secret(path, client_config_text(replace(config, identity=identity)))
    stop_daemons(record, [f"client-{client}"])
    start_daemon(prefix, record, f"client-{client}", client, daemon["argv"])


DOWN = "r1: the VPN is down, nothing crosses the tunnel"
NO_WEB = "r1: the VPN is up, but web cannot be reached through it"
BYPASS = "web: r1 reaches me, but from its own address, not through the VPN"
BIG = "r1: pings to web work, but large packets vanish"

FAULTS = {
    f.name: f
    for f in (
        Fault("forward-isp", DOWN, _forward_off(_router)),
        Fault("forward-r2", NO_WEB, _forward_off(lambda t: t.tunnel.server)),
        Fault("host-route", DOWN, _host_route),
        Fault("nat-iface", NO_WEB, _nat_iface),
        Fault("mtu-blackhole", BIG, _mtu),
        Fault("wrong-key", DOWN, _wrong_key, True),
        Fault("udp-filter", DOWN, _udp_filter),
        Fault("client-routes", BYPASS, _routes),
        Fault("rp-filter", NO_WEB, _rp_filter),
    )
}
"""Every fault, by name."""


def applicable(prefix: str) -> list[str]:
    """The faults this lab can have (wrong-key needs the identity mode)."""
    identity = record_of(prefix).get("keying") == "identity"
    return [n for n, f in FAULTS.items() if identity or not f.needs_identity]


def choose(names: list[str], seed: int | None = None) -> str:
    """One of ``names`` at random (reproducible with ``seed``)."""
    return random.Random(seed).choice(sorted(names))


def start(prefix: str, fault: str, seed: int | None = None, **up_kwargs: Any) -> dict[str, Any]:
    """``vpnlab lab up --fault``: the lab as :func:`~vpnlab.lab.control.up` builds it, the VPN
    started the troubleshooting way (module docstring), the guard, and one fault.

    ``fault`` is a name of :data:`FAULTS` or ``"random"``. Returns the lab's status.
    Raises LabError for an unknown fault or one this lab cannot have; the lab is left up.
    """
    if fault != "random" and fault not in FAULTS:
        raise LabError(f"unknown fault {fault!r} (choose from random, {', '.join(FAULTS)})")
    topology = up_kwargs.get("topology")
    if up_kwargs.get("mode", "tun") != "tun" or up_kwargs.get("nat") is False:
        raise LabError("troubleshooting labs run in tun mode with NAT (no --mode tap, --nat off)")
    if topology is not None and topology.tunnel.lans:
        raise LabError("troubleshooting labs are not site to site")
    up_kwargs.pop("vpn", None)
    up(prefix, vpn=False, **up_kwargs)
    start_vpn(
        prefix,
        up_kwargs.get("cipher"),
        reconnect=True,
        server_args=DAEMON_ARGS,
        client_args=DAEMON_ARGS,
        psk=up_kwargs.get("psk", False),
    )
    topo = topology_of(prefix)
    rule = f'oifname "tun0" ip daddr {topo.server_ip} udp dport 4500 counter drop'
    _nft(prefix, _client(topo), _filter(GUARD_TABLE, "output", rule))
    record = record_of(prefix)
    record["troubleshooting"] = True
    save(record)
    inject(prefix, choose(applicable(prefix), seed) if fault == "random" else fault)
    return status(prefix)


def inject(prefix: str, name: str) -> None:
    """Break ``name`` in a running troubleshooting lab and record it (``fault.json``).

    Only in a lab :func:`start` made: elsewhere the daemons give up, and a missing host route
    would be a routing loop.
    """
    if not record_of(prefix).get("troubleshooting"):
        raise LabError("faults go into troubleshooting labs only (vpnlab lab up --fault ...)")
    if name not in applicable(prefix):
        raise LabError(f"fault {name!r} does not fit this lab (it can have: {applicable(prefix)})")
    FAULTS[name].inject(prefix, topology_of(prefix))
    salt = os.urandom(8).hex()
    record = record_of(prefix)
    daemons = {n: d["pid"] for n, d in record["daemons"].items() if n == "server" or "client-" in n}
    note = {"salt": salt, "digest": _digest(salt, name), "started": time.time(), "pids": daemons}
    path = state_dir(prefix) / FAULT_FILE
    path.write_text(json.dumps(note, indent=2) + "\n")
    record["files"] = sorted(set(record["files"]) | {str(path)})
    save(record)


def _digest(salt: str, name: str) -> str:
    return hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()


def recorded(prefix: str) -> dict[str, Any] | None:
    """The lab's ``fault.json``, or None for a lab without a fault."""
    try:
        data = json.loads((state_dir(prefix) / FAULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ticket(prefix: str) -> str:
    """The ticket of the lab's fault (the symptom, never the name); "" without a fault."""
    name = identify(prefix)
    return FAULTS[name].ticket if name else ""


def identify(prefix: str) -> str | None:
    """The name of the lab's fault (from the salted digest), or None."""
    note = recorded(prefix) or {}
    for name in FAULTS:
        if note.get("digest") == _digest(str(note.get("salt")), name):
            return name
    return None
