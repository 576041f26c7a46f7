"""``vpnlab arp-experiment``: the classic TAP experiment, in the node it is run in."""

from __future__ import annotations

import argparse
import json

from vpnlab.cli.arguments import Subparsers
from vpnlab.course.arp import arp_experiment


def register(sub: Subparsers) -> None:
    """``vpnlab arp-experiment [--name tap9] ...``: run it, print the result as JSON."""
    p = sub.add_parser(
        "arp-experiment",
        help="TAP by hand: answer the kernel's ARP request (in a node)",
        description="The classic TAP experiment: play the other end of the wire, and make the "
        "kernel believe us (vpnlab lab exec web vpnlab arp-experiment).",
    )
    p.add_argument("--name", default="tap9")
    p.add_argument("--address", default="10.9.0.1/24")
    p.add_argument("--neighbour", default="10.9.0.99")
    p.add_argument("--mac", default="02:00:5e:00:53:99")
    p.set_defaults(func=cmd_arp_experiment)


def cmd_arp_experiment(args: argparse.Namespace) -> int:
    result = arp_experiment(args.name, args.address, args.neighbour, args.mac)
    print(json.dumps(result, indent=2))
    return 0
