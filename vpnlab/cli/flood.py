"""``python -m vpnlab.cli.flood``: the command line of one bounded Hello flood
(``instruments/flood.py``), which ``vpnlab bench --flood`` starts inside the lab's isp node."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from ipaddress import IPv4Address

from vpnlab.core.errors import VpnlabError
from vpnlab.instruments.flood import MAX_RATE, MAX_SECONDS, FloodPlan, check_plan, flood
from vpnlab.shell.routing import in_named_netns


def parse(argv: list[str], in_lab: bool | None = None) -> FloodPlan:
    """The plan of ``argv``; exits with a one-line error if it is not a bounded lab flood."""
    p = argparse.ArgumentParser(description="a bounded Hello flood inside a lab namespace")
    p.add_argument("--kind", choices=("junk", "mac1"), required=True)
    p.add_argument("--server", type=IPv4Address, required=True)
    p.add_argument("--rate", type=int, required=True, help=f"per second, at most {MAX_RATE}")
    p.add_argument("--seconds", type=float, required=True, help=f"at most {MAX_SECONDS:g}")
    p.add_argument("--sources", type=IPv4Address, required=True, help="the first source")
    p.add_argument("--count", type=int, default=1, help="sources, upwards from --sources")
    p.add_argument("--server-key", default="", help="mac1: the server's public key, base64")
    p.add_argument("--seed", type=int, default=27)
    args = p.parse_args(argv)
    plan = FloodPlan(
        args.kind,
        args.server,
        args.rate,
        args.seconds,
        args.sources,
        args.count,
        base64.b64decode(args.server_key),
        args.seed,
    )
    try:
        check_plan(plan, in_named_netns() if in_lab is None else in_lab)
    except VpnlabError as exc:
        p.error(str(exc))
    return plan


if __name__ == "__main__":
    print(json.dumps(flood(parse(sys.argv[1:]))))
