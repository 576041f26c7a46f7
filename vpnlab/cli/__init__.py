"""The ``vpnlab`` command: the daemons (server, client), keys and identities, the lab and its
services (whoami, ftp), captures, and the course's experiments (bench, meltdown,
arp-experiment).

Every command line of vpnlab is parsed in this package and nowhere else: one module per
sub-command, each with a ``register(subparsers)`` that sets ``func``; the modules below it
(protocol, daemons, lab, instruments, course) take plain arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing

from vpnlab.cli import arp, bench, capture, daemons, ftp, keys, lab, meltdown, whoami
from vpnlab.core.errors import VpnlabError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a hint), not the whole usage text."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vpnlab",
        description="A teaching UDP VPN (tun0 <-> UDP 4500) and the namespace lab it runs in.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (daemons, keys, lab, capture, ftp, whoami, arp, bench, meltdown):
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; errors are one line on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VpnlabError as exc:
        print(f"vpnlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vpnlab ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
