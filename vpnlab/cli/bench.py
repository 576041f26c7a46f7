"""``vpnlab bench``: the benchmark against OpenVPN (what ``scripts/bench.sh`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpnlab.course.bench import ALL_CASES, MTU, QUICK_CASES, format_table, run_bench


def register(sub: argparse._SubParsersAction) -> None:
    """``vpnlab bench [--quick] [--runs N] [--seconds S] [--cases CASE ...] [--out DIR]``."""
    p = sub.add_parser(
        "bench",
        help="the benchmark against OpenVPN (a lab of its own)",
        description="The benchmark: single-stream TCP through every data path, side by side "
        "with OpenVPN.",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s, 4 cases")
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
    p.add_argument("--prefix", default="vbench-", help="lab prefix (default %(default)s)")
    p.add_argument("--mtu", type=int, default=MTU, help="tun MTU of every tunnel")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.quick:
        runs, seconds, cases = 1, 2.0, QUICK_CASES
    else:
        runs, seconds, cases = args.runs, args.seconds, ALL_CASES
    cases = args.cases or cases
    document = run_bench(cases, runs, seconds, args.out, args.prefix, args.mtu)
    print(format_table(document))
    print(f"\nraw runs: {args.out / 'results.json'}   chart: {args.out / 'bench.png'}")
    return 0 if all(row["mbps"] > 0 for row in document["summary"]) else 1
