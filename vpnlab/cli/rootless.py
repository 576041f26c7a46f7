"""``vpnlab rootless ...``: labs without sudo (see ``vpnlab/lab/rootless.py``).

    vpnlab rootless check            can an ordinary user run labs here? (if not: why, the fix)
    vpnlab rootless run [--] CMD...  CMD in a holder of its own (JupyterLab, a hub's server):
                                     it may build labs; they all go when CMD ends

An ordinary user needs neither for the lab itself: ``vpnlab lab ...`` and ``vpnlab capture``
enter the lab's holder by themselves.
"""

from __future__ import annotations

import argparse

from vpnlab.cli.arguments import Subparsers
from vpnlab.core.errors import LabError
from vpnlab.lab import rootless


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "rootless",
        help="labs without sudo: check the host, run a command in a holder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="rootless_command", required=True, metavar="ROOTLESS_COMMAND")
    check = sub.add_parser("check", help="can an ordinary user run labs here?")
    check.set_defaults(func=cmd_check)
    run = sub.add_parser("run", help="run CMD in a holder of its own (removed when CMD ends)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="command and its arguments")
    run.set_defaults(func=cmd_run)
    return p


def cmd_check(args: argparse.Namespace) -> int:
    """Start a holder and remove it again; then the TUN device. One line per finding."""
    name = "check"
    rootless.start_holder(name)
    rootless.stop_holder(name)
    print("user namespaces: an ordinary user can build labs here")
    rootless.check_tun()
    print("TUN device: open to you (the VPN can run)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("usage: vpnlab rootless run [--] CMD [ARGS...]")
    return rootless.run(cmd)
