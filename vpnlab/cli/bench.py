"""``vpnlab bench``: the benchmark against OpenVPN (what ``scripts/bench.sh`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpnlab.course.bench import ALL_CASES, MTU, QUICK_CASES, format_table, run_bench
from vpnlab.course.footprint import FOOTPRINT_PREFIX, IDLE_S, footprint, format_footprint

MAX_IDLE_S = 300.0


def idle_seconds(text: str) -> float:
    """``--idle-seconds``: more than 0, at most MAX_IDLE_S (the footprint stays bounded)."""
    value = float(text)
    if not 0 < value <= MAX_IDLE_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_IDLE_S:g}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """``vpnlab bench [--quick] [--runs N] [--seconds S] [--cases CASE ...] [--out DIR]``,
    ``vpnlab bench --footprint [--idle-seconds S]``."""
    p = sub.add_parser(
        "bench",
        help="the benchmark against OpenVPN (a lab of its own)",
        description="The benchmark: single-stream TCP through every data path, side by side "
        "with OpenVPN.",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s, 4 cases")
    p.add_argument(
        "--footprint",
        action="store_true",
        help="instead: what a lab costs (seconds of lab up/down, RSS, CPU of the idle lab)",
    )
    p.add_argument(
        "--idle-seconds",
        type=idle_seconds,
        default=IDLE_S,
        help="--footprint: how long the idle lab's CPU is measured (default %(default)s)",
    )
    p.add_argument("--runs", type=int, default=3, help="rounds (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10, help="per run (default %(default)s)")
    p.add_argument(
        "--cases",
        nargs="+",
        choices=ALL_CASES,
        metavar="CASE",
        help=f"subset of: {', '.join(ALL_CASES)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for results.json and bench.png (default %(default)s)",
    )
    p.add_argument(
        "--prefix", help=f"lab prefix (default vbench-, with --footprint {FOOTPRINT_PREFIX})"
    )
    p.add_argument("--mtu", type=int, default=MTU, help="tun MTU of every tunnel")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.footprint:
        document = footprint(args.prefix or FOOTPRINT_PREFIX, args.idle_seconds)
        print(format_footprint(document))
        return 0
    if args.quick:
        runs, seconds, cases = 1, 2.0, QUICK_CASES
    else:
        runs, seconds, cases = args.runs, args.seconds, ALL_CASES
    cases = args.cases or cases
    document = run_bench(cases, runs, seconds, args.out, args.prefix or "vbench-", args.mtu)
    print(format_table(document))
    print(f"\nraw runs: {args.out / 'results.json'}   chart: {args.out / 'bench.png'}")
    return 0 if all(row["mbps"] > 0 for row in document["summary"]) else 1
