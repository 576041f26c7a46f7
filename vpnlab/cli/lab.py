"""``vpnlab lab ...``: build, inspect, enter, verify and remove the namespace lab.

    vpnlab lab up [--prefix P] [--cipher C] [--no-vpn] [--clients N] [--topology FILE.toml]
                  [--site-to-site] [--nat on|off] [--mode tun|tap] [--ipv6 on|off]
                  [--fault NAME|random [--seed N] | --fault grader]
    vpnlab lab down | status [--json] | verify [--json]
    vpnlab lab exec NODE [--] CMD...
    vpnlab lab start-vpn [--cipher C] [--static-keys] [--outer 4|6] | stop-vpn
    vpnlab lab impair --loss PERCENT --delay MS --jitter MS | route-back [--remove]

Errors are LabError: ``vpnlab.cli.main`` prints them as one line and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from vpnlab.cli.arguments import Parser, Subparsers
from vpnlab.core.errors import LabError
from vpnlab.lab.state import DEFAULT_PREFIX
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER

RELAY_DEVICE = "imp0"
"""``vpnlab/lab/delay.py``'s DEVICE (a test keeps the two equal): the relay's default device."""


class _FaultNames(argparse.HelpFormatter):
    """``lab up --help``: the fault names are loaded only when the help is printed (the
    faults module brings the whole lab, which a forwarded command does not need)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest != "fault":
            return action.help
        from vpnlab.lab import faults

        return f"{action.help}{', '.join(faults.FAULTS)}"


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``lab`` and its subcommands to the ``vpnlab`` parser; each sets ``func``."""
    common = Parser(add_help=False)
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
    for add in (_add_up, _add_down, _add_status, _add_exec, _add_verify, _add_start_vpn):
        add(sub, common)
    for add in (_add_route_back, _add_stop_vpn, _add_impair, _add_relay):
        add(sub, common)
    return lab


def _add_up(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser(
        "up", parents=[common], help="build the lab and start the VPN", formatter_class=_FaultNames
    )
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
    p.add_argument(
        "--ipv6", choices=("on", "off"), default="on", help="dual stack, or IPv6 off in every node"
    )
    _add_psk(p)
    p.add_argument(
        "--fault",
        metavar="NAME|random",
        help="a troubleshooting lab: one hidden fault to find and repair (vpnlab check); "
        "random, grader (on the hub: the grader draws it), or one of ",
    )
    p.add_argument("--seed", type=int, help="with --fault random: the same pick every time")
    p.add_argument(
        "--verify",
        action="store_true",
        help="then prove it works (as verify) in the same turn, no other command changing the "
        "lab in between, and print that instead of the status",
    )
    p.set_defaults(func=cmd_up)


def _add_psk(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--psk",
        action="store_true",
        default=None,
        help="the notes' simple case: one pre-shared key for every client, instead of a key "
        "of its own per client (identities, the default for the ESP ciphers)",
    )


def _add_down(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("down", parents=[common], help="stop everything, delete the namespaces")
    p.set_defaults(func=cmd_down)


def _add_status(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("status", parents=[common], help="nodes, routes, daemons, tunnel")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def _add_exec(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("exec", parents=[common], help="run a command inside a node")
    p.add_argument("node", help="r1, isp, r2, web, ...")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command and its arguments")
    p.set_defaults(func=cmd_exec)


def _add_verify(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("verify", parents=[common], help="ping and who-am-I from each client")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


def _add_start_vpn(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("start-vpn", parents=[common], help="(re)start the VPN server and clients")
    p.add_argument("--cipher", default=None, choices=CIPHERS)
    p.add_argument(
        "--static-keys", action="store_true", help="no handshake: SPIs and keys from a file"
    )
    p.add_argument("--nat", choices=("on", "off"), help="the masquerade rule (default: as built)")
    p.add_argument(
        "--outer", type=int, choices=(4, 6), help="UDP 4500 over IPv4 or IPv6 (default: as last)"
    )
    _add_psk(p)
    p.set_defaults(func=cmd_start_vpn)


def _add_route_back(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser(
        "route-back", parents=[common], help="without NAT: route the tunnel network via r2"
    )
    p.add_argument("--remove", action="store_true", help="remove the route again")
    p.set_defaults(func=cmd_route_back)


def _add_stop_vpn(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("stop-vpn", parents=[common], help="stop the VPN daemons only")
    p.set_defaults(func=cmd_stop_vpn)


def _add_impair(sub: Subparsers, common: Parser) -> None:
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


def _add_relay(sub: Subparsers, common: Parser) -> None:
    """The delay relay daemon, which ``impair`` starts in the isp (no ``help=``: not listed)."""
    p = sub.add_parser(
        "relay", description="The delay relay daemon (started by vpnlab lab impair in the isp)."
    )
    p.add_argument("--device", default=RELAY_DEVICE)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_relay)


def cmd_route_back(args: argparse.Namespace) -> int:
    from vpnlab.lab.vpn import route_back

    for route in route_back(args.prefix, add=not args.remove).splitlines():
        print(f"isp: {'removed' if args.remove else 'added'} route {route}")
    return 0


def cmd_impair(args: argparse.Namespace) -> int:
    from vpnlab.lab.impair import apply

    print(apply(args.prefix, loss=args.loss, delay_ms=args.delay, jitter_ms=args.jitter))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from vpnlab.lab import faults
    from vpnlab.lab.control import up
    from vpnlab.lab.inspection import format_status, status
    from vpnlab.lab.state import changing
    from vpnlab.lab.topology import load_topology, make_topology

    if args.topology:
        topo = load_topology(args.topology)
    else:
        topo = make_topology(args.clients, site_to_site=args.site_to_site)
    if args.ipv6 == "off":
        topo = dataclasses.replace(topo, ipv6=False)
    options = dict(topology=topo, cipher=args.cipher, nat=args.nat == "on", mode=args.mode)
    if args.fault and not args.vpn:
        raise LabError("--fault needs the VPN (leave out --no-vpn)")
    if args.fault and args.verify:
        raise LabError("--verify proves a lab works: a troubleshooting lab (--fault) does not")
    if args.fault == "grader":  # the hub: the grader draws and injects the fault
        from vpnlab.grader.client import ask

        faults.prepare(args.prefix, psk=bool(args.psk), **options)
        info = status(args.prefix)
        ticket = ask("fault", {"prefix": args.prefix})["ticket"]
        if not args.json:
            print("a fault is hidden in this lab: find and repair it (vpnlab grader check)")
            print(f"the ticket: {ticket}")
    elif args.fault:
        info = faults.start(args.prefix, args.fault, args.seed, psk=bool(args.psk), **options)
        if not args.json:
            print("a fault is hidden in this lab: find and repair it (vpnlab check)")
            print(f"the ticket: {info.pop('ticket')}")
    else:
        with changing(args.prefix):  # --verify proves this lab, not one built meanwhile
            info = up(prefix=args.prefix, vpn=args.vpn, psk=bool(args.psk), **options)
            if args.verify:
                return cmd_verify(args)
    print(json.dumps(info, indent=2) if args.json else format_status(info))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from vpnlab.lab.control import down

    done = down(args.prefix)
    print("\n".join(done) if done else f"lab {args.prefix}: nothing to remove")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vpnlab.lab.inspection import format_status, status

    info = status(args.prefix)
    print(json.dumps(info, indent=2) if args.json else format_status(info))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from vpnlab.lab.nodes import exec_in

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("usage: vpnlab lab exec NODE [--] CMD [ARGS...]")
    sys.stdout.flush()
    return exec_in(args.prefix, args.node, cmd).returncode


def cmd_verify(args: argparse.Namespace) -> int:
    from vpnlab.lab.control import verify
    from vpnlab.lab.inspection import format_verify

    result = verify(args.prefix, check=False)
    print(json.dumps(result, indent=2) if args.json else format_verify(result))
    if not result["ok"]:
        raise LabError("verify failed (see the checks above)")
    return 0


def cmd_start_vpn(args: argparse.Namespace) -> int:
    from vpnlab.lab.inspection import format_status, status
    from vpnlab.lab.vpn import start_vpn

    nat = None if args.nat is None else args.nat == "on"
    start_vpn(
        args.prefix,
        args.cipher,
        static_keys=args.static_keys,
        nat=nat,
        psk=args.psk,
        outer=args.outer,
    )
    print(format_status(status(args.prefix)))
    return 0


def cmd_stop_vpn(args: argparse.Namespace) -> int:
    from vpnlab.lab.vpn import stop_vpn

    done = stop_vpn(args.prefix)
    print("\n".join(done) if done else "no VPN daemon was running")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from vpnlab.lab.delay import run_relay

    return run_relay(args.device, args.delay_ms, args.jitter_ms)
