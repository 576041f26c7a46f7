"""``vpnlab lab ...``: build, inspect, enter, verify and remove the namespace lab.

    vpnlab lab up [--prefix P] [--cipher C] [--no-vpn] [--clients N] [--topology FILE.toml]
                  [--site-to-site] [--nat on|off] [--mode tun|tap]
    vpnlab lab down | status [--json] | verify [--json]
    vpnlab lab exec NODE [--] CMD...
    vpnlab lab start-vpn [--cipher C] [--static-keys] | stop-vpn
    vpnlab lab impair --loss PERCENT --delay MS --jitter MS | route-back [--remove]

Errors are LabError: ``vpnlab.cli.main`` prints them as one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.state import DEFAULT_PREFIX
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``lab`` and its subcommands to the ``vpnlab`` parser; each sets ``func``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--prefix",
        default=os.environ.get("VPNLAB_PREFIX", DEFAULT_PREFIX),
        help="namespace prefix: node r1 lives in {prefix}r1 (default: %(default)s)",
    )
    lab = subparsers.add_parser(
        "lab",
        help="the network-namespace lab (r1, isp, r2, web)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    p = sub.add_parser("up", parents=[common], help="build the lab and start the VPN")
    p.add_argument("--cipher", default=DEFAULT_CIPHER, choices=CIPHERS)
    p.add_argument("--no-vpn", dest="vpn", action="store_false", help="only build the lab")
    p.add_argument("--clients", type=int, default=1, help="number of VPN clients (r1, r3, ...)")
    p.add_argument("--topology", metavar="FILE.toml", help="topology description (TOML)")
    p.add_argument(
        "--site-to-site",
        action="store_true",
        help="a LAN behind each gateway: h1 behind r1, h2 behind r2, joined by the tunnel",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument(
        "--nat", choices=("on", "off"), default="on", help="the server's masquerade rule"
    )
    p.add_argument(
        "--mode", choices=("tun", "tap"), default="tun", help="tap: Ethernet frames on tap0"
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", parents=[common], help="stop everything, delete the namespaces")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", parents=[common], help="nodes, routes, daemons, tunnel")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("exec", parents=[common], help="run a command inside a node")
    p.add_argument("node", help="r1, isp, r2, web, ...")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command and its arguments")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("verify", parents=[common], help="ping and who-am-I from each client")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("start-vpn", parents=[common], help="(re)start the VPN server and clients")
    p.add_argument("--cipher", default=None, choices=CIPHERS)
    p.add_argument(
        "--static-keys", action="store_true", help="no handshake: SPIs and keys from a file"
    )
    p.add_argument("--nat", choices=("on", "off"), help="the masquerade rule (default: as built)")
    p.set_defaults(func=cmd_start_vpn)

    p = sub.add_parser(
        "route-back", parents=[common], help="without NAT: route the tunnel network via r2"
    )
    p.add_argument("--remove", action="store_true", help="remove the route again")
    p.set_defaults(func=cmd_route_back)

    p = sub.add_parser("stop-vpn", parents=[common], help="stop the VPN daemons only")
    p.set_defaults(func=cmd_stop_vpn)

    p = sub.add_parser(
        "impair", parents=[common], help="loss, delay, jitter on the r1-r2 path (isp)"
    )
    p.add_argument("--loss", type=float, default=0.0, help="percent dropped, both ways (0: none)")
    p.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="MS",
        help="added from r2 to r1, once per round trip (netem, or a userspace relay) (0: none)",
    )
    p.add_argument("--jitter", type=float, default=0.0, metavar="MS", help="+- on the delay")
    p.set_defaults(func=cmd_impair)
    return lab


def cmd_route_back(args: argparse.Namespace) -> int:
    from vpnlab.lab import route_back

    route = route_back(args.prefix, add=not args.remove)
    print(f"isp: {'removed' if args.remove else 'added'} route {route}")
    return 0


def cmd_impair(args: argparse.Namespace) -> int:
    from vpnlab.lab.impair import apply

    print(apply(args.prefix, loss=args.loss, delay_ms=args.delay, jitter_ms=args.jitter))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from vpnlab.lab import load_topology, make_topology, up

    if args.topology:
        topo = load_topology(args.topology)
    else:
        topo = make_topology(args.clients, site_to_site=args.site_to_site)
    nat = args.nat == "on"
    info = up(
        prefix=args.prefix,
        topology=topo,
        cipher=args.cipher,
        vpn=args.vpn,
        nat=nat,
        mode=args.mode,
    )
    print(json.dumps(info, indent=2) if args.json else format_status(info))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from vpnlab.lab import down

    done = down(args.prefix)
    print("\n".join(done) if done else f"lab {args.prefix}: nothing to remove")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vpnlab.lab import status

    info = status(args.prefix)
    print(json.dumps(info, indent=2) if args.json else format_status(info))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from vpnlab.lab import exec_in

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("usage: vpnlab lab exec NODE [--] CMD [ARGS...]")
    sys.stdout.flush()
    return exec_in(args.prefix, args.node, cmd).returncode


def cmd_verify(args: argparse.Namespace) -> int:
    from vpnlab.lab import verify

    result = verify(args.prefix, check=False)
    print(json.dumps(result, indent=2) if args.json else format_verify(result))
    if not result["ok"]:
        raise LabError("verify failed (see the checks above)")
    return 0


def cmd_start_vpn(args: argparse.Namespace) -> int:
    from vpnlab.lab import start_vpn, status

    nat = None if args.nat is None else args.nat == "on"
    start_vpn(args.prefix, args.cipher, static_keys=args.static_keys, nat=nat)
    print(format_status(status(args.prefix)))
    return 0


def cmd_stop_vpn(args: argparse.Namespace) -> int:
    from vpnlab.lab import stop_vpn

    done = stop_vpn(args.prefix)
    print("\n".join(done) if done else "no VPN daemon was running")
    return 0


# --- presentation (re-exported as vpnlab.lab.format_status / format_verify) ---------------------


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
            f"{ifname} {' '.join(i['addresses']) or '-'} {str(i['state']).lower()}"
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
    lines.append(f"who-am-I: {info['web']}")
    if info["leftovers"]:
        lines.append(f"leftover namespaces: {' '.join(info['leftovers'])} (vpnlab lab down)")
    return "\n".join(lines)


def _tunnel_text(st: dict[str, Any]) -> str:
    """One daemon status file as a line: state, address, peers, packet counters."""
    text = f"{st.get('state')} {st.get('tunnel_address') or ''}".rstrip()
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
