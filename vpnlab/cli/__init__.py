"""The ``vpnlab`` command: the daemons (server, client), keys and identities, the lab and its
services (whoami, ftp), captures, the course's experiments (bench, meltdown,
arp-experiment), its checks (check: troubleshooting labs, progress reports), and labs
without sudo (rootless: given by an ordinary user, the lab commands and the experiments run in
a holder the user owns, ``vpnlab/lab/rootless.py``).

Every command line of vpnlab is parsed in this package and nowhere else: one module per
sub-command, each with a ``register(subparsers)`` that sets ``func``; the modules below it
(protocol, daemons, lab, instruments, course) take plain arguments.

Only the module of the command given is imported (``COMMANDS``): a daemon started as
``python -m vpnlab server`` loads the daemons, not the lab, the course or tshark's decoders
(measured in a lab: the who-am-I service 37 -> 21 MB resident, each VPN daemon 49 -> 47 MB;
netlink by ``shell/rtnetlink.py`` instead of pyroute2 then 47 -> 33 MB). ``vpnlab --help``
and an unknown command load them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from vpnlab.cli.arguments import Parser
from vpnlab.cli.process import Stopped, stop_on, with_sbin
from vpnlab.core.errors import VpnlabError

COMMANDS = {
    "server": "daemons",
    "client": "daemons",
    "keys": "keys",
    "lab": "lab",
    "capture": "capture",
    "ftp": "ftp",
    "whoami": "whoami",
    "arp-experiment": "arp",
    "bench": "bench",
    "meltdown": "meltdown",
    "check": "check",
    "rootless": "rootless",
    "grader": "grader",
}
"""Each sub-command, and the module of ``vpnlab.cli`` that defines it (in --help order)."""
ROOTLESS_COMMANDS = ("lab", "capture", "check", "bench", "meltdown", "arp-experiment")
"""Given by an ordinary user, these run in a holder the user owns (``vpnlab/lab/rootless.py``)."""
BUILDING_COMMANDS = ("lab", "capture", "bench", "meltdown", "arp-experiment", "check")
"""These build something (a lab, a capture) and remove it when stopped: SIGTERM acts as Ctrl-C
(``vpnlab/cli/process.py``). The daemons and services handle their signals themselves."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone (its module is the only one imported), or of all."""
    parser = Parser(
        prog="vpnlab",
        description="A teaching UDP VPN (tun0 <-> UDP 4500) and the namespace lab it runs in.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    for name in dict.fromkeys(wanted):
        importlib.import_module(f"vpnlab.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; errors are one line on stderr and a non-zero exit."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    os.environ["PATH"] = with_sbin(os.environ.get("PATH", os.defpath))
    signals = (signal.SIGTERM,) if args.command in BUILDING_COMMANDS else ()
    try:
        with stop_on(*signals):
            return _run(args, argv)
    except VpnlabError as exc:
        print(f"vpnlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or a signal stop_on turned into one
        return 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    except BrokenPipeError:  # `vpnlab ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """The command: here, or (an ordinary user's lab command) in the user's rootless holder."""
    decoding = args.command == "capture" and args.target[:1] == ["decode"]  # a file only
    if args.command in ROOTLESS_COMMANDS and os.geteuid() != 0 and not decoding:
        from vpnlab.lab import rootless

        verb = getattr(args, "lab_command", None)
        return rootless.forward(args.command, argv, getattr(args, "prefix", None), verb)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
