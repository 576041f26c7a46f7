"""``vpnlab meltdown``: the TCP-meltdown sweep, UDP against TCP (``scripts/meltdown.sh``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vpnlab.cli.arguments import Subparsers, bounded
from vpnlab.core.errors import VpnlabError
from vpnlab.course.meltdown import (
    DEFAULT_PREFIX,
    FULL,
    QUICK,
    format_table,
    plot,
    plot_queues,
    queue_sweep,
    sweep,
)
from vpnlab.shell.queues import MIN_QUEUE_BYTES


def register(sub: Subparsers) -> None:
    """``vpnlab meltdown [--quick] ...``: the sweep, its table, JSON and chart."""
    p = sub.add_parser(
        "meltdown",
        help="TCP meltdown: the VPN over UDP and TCP (a lab of its own)",
        description="TCP meltdown, measured: the notes' reason for a UDP tunnel "
        '("to avoid TCP meltdown").',
    )
    p.add_argument("--quick", action="store_true", help="2 losses x 2 transports x 2 s")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--losses", type=float, nargs="+", help="percent, each way")
    p.add_argument("--delays", type=float, nargs="+", help="ms, r2 -> r1")
    p.add_argument("--seconds", type=bounded(float, 1.0, 60.0), help="per iperf3 run (1-60)")
    p.add_argument(
        "--samples", type=bounded(int, 1, 50), help="64 KB fetches per point (median; 1-50)"
    )
    p.add_argument("--out", type=Path, default=Path("meltdown-results"))
    p.add_argument("--rate", help="iperf3 -b: offered load (default: as fast as it goes)")
    p.add_argument(
        "--capture-loss", type=float, help="also capture tun0/eth0 at this loss, per transport"
    )
    p.add_argument(
        "--queues",
        type=int,
        nargs="+",
        metavar="BYTES",
        help="instead: latency under load, the VPN over UDP (fast path) with each --queue-bytes "
        "BYTES, a ping every 0.1 s during iperf3 (--seconds, default 4)",
    )
    p.set_defaults(func=cmd_meltdown)


def cmd_meltdown(args: argparse.Namespace) -> int:
    if args.queues:
        return cmd_queues(args)
    size = QUICK if args.quick else FULL  # each of its four, unless given on the command line
    results = sweep(
        args.prefix,
        losses=size["losses"] if args.losses is None else tuple(args.losses),
        delays=size["delays"] if args.delays is None else tuple(args.delays),
        seconds=size["seconds"] if args.seconds is None else args.seconds,
        samples=size["samples"] if args.samples is None else args.samples,
        capture_loss=args.capture_loss,
        capture_folder=args.out,
        rate=args.rate,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "meltdown.png")
    print(format_table(results))
    print(
        f"{len(results['points'])} points in {results['wall_s']} s; {args.out}/results.json, "
        f"{args.out}/meltdown.png"
    )
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    """``--queues``: the loaded ping per ``--queue-bytes`` (``meltdown.queue_sweep``)."""
    if min(args.queues) < MIN_QUEUE_BYTES:
        raise VpnlabError(f"--queues: each at least {MIN_QUEUE_BYTES} bytes")
    results = queue_sweep(args.prefix, args.queues, args.seconds or 4.0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot_queues(results, args.out / "queues.png")
    print(f"{args.out}/results.json, {args.out}/queues.png")
    return 0
