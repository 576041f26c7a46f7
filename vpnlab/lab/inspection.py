"""Looking inside the lab: :func:`status` as plain data, and as lines a student can read.

``status`` reads what is there (namespaces, links, addresses, routes through pyroute2; daemons
from the record; the tunnel from the daemons' own status files) and changes nothing.
:func:`format_status` and :func:`format_verify` are what ``vpnlab lab status`` and
``vpnlab lab verify`` print.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vpnlab.lab.build import inspect_node
from vpnlab.lab.nodes import check_environment
from vpnlab.lab.records import LabRecord
from vpnlab.lab.state import (
    DEFAULT_PREFIX,
    alive,
    check_prefix,
    load,
    namespace,
    prefix_namespaces,
    state_dir,
    topology_of,
)


def read_status_file(path: str | Path) -> dict[str, Any] | None:
    """A daemon's JSON status file, or None if it is missing or half-written."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """Nodes (addresses, routes), daemons (PID alive?, log) and tunnel state, as plain data."""
    check_environment()
    check_prefix(prefix)
    loaded = load(prefix)
    record = loaded or LabRecord(prefix)
    topo = topology_of(prefix)
    known = {namespace(prefix, n.name) for n in topo.nodes}
    nodes = {}
    for node in topo.nodes:
        ns = namespace(prefix, node.name)
        nodes[node.name] = {"namespace": ns, "role": node.role, **inspect_node(ns)}
    daemons = {}
    for name, daemon in record.daemons.items():
        fields = {k: v for k, v in asdict(daemon).items() if v is not None}  # startup_s once known
        daemons[name] = {**fields, "alive": alive(daemon.pid)}
    folder = state_dir(prefix)
    return {
        "prefix": prefix,
        "state_dir": str(folder),
        "recorded": loaded is not None,
        "up": any(n["exists"] for n in nodes.values()),
        "cipher": record.cipher,
        "vpn": record.vpn,
        "nodes": nodes,
        "daemons": daemons,
        "tunnel": {
            "server": read_status_file(folder / "server.json"),
            "clients": {
                c: read_status_file(folder / f"client-{c}.json") for c in topo.tunnel.clients
            },
        },
        "web": f"http://{topo.web_ip}:{topo.web_port}/",
        "web6": f"http://[{topo.web_ip6}]:{topo.web_port}/" if topo.dual_stack else None,
        "leftovers": [n for n in prefix_namespaces(prefix) if n not in known],
    }


# --- as text --------------------------------------------------------------------------------------


def format_status(info: dict[str, Any]) -> str:
    """:func:`status` as a few lines a student can read."""
    if not info["up"] and not info["recorded"]:
        return f"lab {info['prefix']}: down"
    lines = [
        f"lab {info['prefix']}: {'up' if info['up'] else 'NOT up'}, cipher {info['cipher']}, "
        f"vpn {'on' if info['vpn'] else 'off'}  (state {info['state_dir']})"
    ]
    for name, node in info["nodes"].items():
        if not node["exists"]:
            lines.append(f"  {name:<5} [{node['role']}] {node['namespace']}: missing")
            continue
        itfs = "; ".join(
            f"{ifname} {' '.join(i['addresses'] + i.get('addresses6', [])) or '-'} "
            f"{str(i['state']).lower()}"
            for ifname, i in node["interfaces"].items()
            if ifname != "lo"
        )
        lines.append(f"  {name:<5} [{node['role']}] {node['namespace']}: {itfs}")
        for route in node["routes"]:
            lines.append(f"          route {route}")
    if info["daemons"]:
        lines.append("daemons:")
    for name, d in info["daemons"].items():
        running = "running" if d["alive"] else "DEAD"
        lines.append(f"  {name:<10} on {d['node']:<5} pid {d['pid']:<7} {running:<7} {d['log']}")
    tunnel = info["tunnel"]
    for role, st in [("server", tunnel["server"]), *tunnel["clients"].items()]:
        if st:
            lines.append(f"tunnel {role}: {_tunnel_text(st)}")
    lines.append(f"who-am-I: {info['web']}" + (f" and {info['web6']}" if info.get("web6") else ""))
    if info["leftovers"]:
        lines.append(f"leftover namespaces: {' '.join(info['leftovers'])} (vpnlab lab down)")
    return "\n".join(lines)


def _tunnel_text(st: dict[str, Any]) -> str:
    """One daemon status file as a line: state, address, peers, packet counters."""
    both = " ".join(a for a in (st.get("tunnel_address"), st.get("tunnel_address6")) if a)
    text = f"{st.get('state')} {both}".rstrip()
    if st.get("server"):
        text += f", server {st['server']}"
    if st.get("peer"):
        text += f", peer {st['peer']}"
    peers = [f"{c.get('peer')}={c.get('tunnel_address')}" for c in st.get("clients") or ()]
    if peers:
        text += f", clients {' '.join(peers)}"
    c = st.get("counters") or {}
    if c:
        drops = c.get("drops")
        dropped = sum(drops.values()) if isinstance(drops, dict) else drops
        text += (
            f"; tun0 in {c.get('packets_from_tun', 0)} out {c.get('packets_to_tun', 0)} pkts,"
            f" keepalives {c.get('keepalives_sent', 0)}/{c.get('keepalives_received', 0)},"
            f" drops {dropped or 0}"
        )
    return text


def format_verify(result: dict[str, Any]) -> str:
    """:func:`verify`'s result, one check a line."""
    lines = [
        f"  [{'ok' if c['ok'] else 'FAIL'}] {c['node']}: {c['name']}  ({c['detail']})"
        for c in result["checks"]
    ]
    head = "verify: all checks passed" if result["ok"] else "verify: some checks FAILED"
    return "\n".join([f"{head} (vpn {'on' if result['vpn'] else 'off'})", *lines])
