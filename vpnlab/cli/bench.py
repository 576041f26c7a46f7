"""``vpnlab bench``: the benchmark against OpenVPN (what ``scripts/bench.sh`` runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vpnlab.cli.arguments import Subparsers, bounded
from vpnlab.core.errors import VpnlabError
from vpnlab.course.bench import ALL_CASES, MTU, QUICK_CASES, run_bench
from vpnlab.course.bench_report import format_table
from vpnlab.course.classload import (
    CLASS_PREFIX,
    DEFAULT_CLIENTS,
    MAX_CLIENTS,
    class_load,
    format_class_load,
)
from vpnlab.course.flood import CLIENTS as FLOOD_CLIENTS
from vpnlab.course.flood import FLOOD_PREFIX, FLOOD_S, FLOODS, flood_bench, format_flood
from vpnlab.course.footprint import FOOTPRINT_PREFIX, IDLE_S, footprint, format_footprint

MAX_STUDENTS = 200
"""``--class-hub``: at most this many Unix users are made (the benchmark removes them all)."""

MAX_IDLE_S = 300.0
MAX_FLOOD_S = 60.0
MAX_STAGGER_S = 600.0
MAX_RUNS = 20
MAX_RUN_S = 300.0
"""``--runs`` and ``--seconds``: every benchmark stops by itself (at most 20 x 300 s a case)."""


def idle_seconds(text: str) -> float:
    """``--idle-seconds``: more than 0, at most MAX_IDLE_S (the footprint stays bounded)."""
    value = float(text)
    if not 0 < value <= MAX_IDLE_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_IDLE_S:g}")
    return value


def register(sub: Subparsers) -> None:
    """``vpnlab bench [--quick] [--runs N] [--seconds S] [--cases CASE ...] [--download]
    [--out DIR]``,
    ``vpnlab bench --footprint [--idle-seconds S] [--datapath fast|simple]``,
    ``vpnlab bench --clients [N]``."""
    p = sub.add_parser(
        "bench",
        help="the benchmark against OpenVPN (a lab of its own)",
        description="The benchmark: single-stream TCP through every data path, side by side "
        "with OpenVPN.",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s, 4 cases")
    _add_footprint(p)
    p.add_argument(
        "--clients",
        type=bounded(int, 1, MAX_CLIENTS),
        nargs="?",
        const=DEFAULT_CLIENTS,
        metavar="N",
        help=f"instead: one server, a class of N load clients (default N {DEFAULT_CLIENTS}, "
        f"at most {MAX_CLIENTS}; past 252 IPv6 only): handshake latency one after another and "
        "all at once, RSS per client, idle CPU, echoes",
    )
    _add_flood(p)
    _add_class_hub(p)
    p.add_argument(
        "--idle-seconds",
        type=idle_seconds,
        default=IDLE_S,
        help="--footprint, --clients: how long the idle CPU is measured (default %(default)s)",
    )
    _add_throughput(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for results.json and bench.png (default %(default)s)",
    )
    p.add_argument(
        "--prefix",
        help=f"lab prefix (default vbench-, --footprint {FOOTPRINT_PREFIX}, "
        f"--clients {CLASS_PREFIX})",
    )
    p.set_defaults(func=cmd_bench)


def _add_throughput(p: argparse.ArgumentParser) -> None:
    """The default benchmark's options: TCP through every tunnel, side by side with OpenVPN."""
    p.add_argument(
        "--runs", type=bounded(int, 1, MAX_RUNS), default=3, help="rounds (default %(default)s)"
    )
    p.add_argument(
        "--seconds",
        type=bounded(float, 1.0, MAX_RUN_S),
        default=10,
        help="per run (default %(default)s)",
    )
    p.add_argument(
        "--cases",
        nargs="+",
        choices=ALL_CASES,
        metavar="CASE",
        help=f"subset of: {', '.join(ALL_CASES)}",
    )
    p.add_argument("--mtu", type=int, default=MTU, help="tun MTU of every tunnel")
    p.add_argument(
        "--download",
        action="store_true",
        help="the data flows web -> r1 (iperf3 -R: a student's download) instead of r1 -> web",
    )


def _add_footprint(p: argparse.ArgumentParser) -> None:
    """``--footprint`` and ``--datapath``."""
    p.add_argument(
        "--footprint",
        action="store_true",
        help="instead: what a lab costs (seconds of lab up/down, RSS, CPU of the idle lab)",
    )
    p.add_argument(
        "--datapath",
        choices=("fast", "simple"),
        default="fast",
        help="--footprint: the daemons' data path (default %(default)s)",
    )


def _add_flood(p: argparse.ArgumentParser) -> None:
    """``--flood`` and ``--flood-seconds``."""
    p.add_argument(
        "--flood",
        action="store_true",
        help="instead: the server under a Hello flood (12,000 junk Hellos/s from one source, "
        "4,000/s with a valid mac1 from 250 spoofed ones; a lab of its own): the tunnel's ping "
        "loss and p99, how long N load clients (--clients, default 250) take to connect",
    )
    p.add_argument(
        "--flood-seconds",
        type=bounded(float, 5.0, MAX_FLOOD_S),
        default=FLOOD_S,
        help="--flood: how long each flood lasts (default %(default)s)",
    )


def _add_class_hub(p: argparse.ArgumentParser) -> None:
    """``--class-hub [N] [--python PY] [--proxy PATH] [--stagger-seconds S]``."""
    p.add_argument(
        "--class-hub",
        type=bounded(int, 1, MAX_STUDENTS),
        nargs="?",
        const=40,
        metavar="N",
        help="instead: a class of N (default 40) real Unix users on a real JupyterHub, each "
        "logging in and running notebook 00's first lab cell (vpnlab/course/classhub.py)",
    )
    p.add_argument(
        "--python",
        type=Path,
        default=Path("/opt/vpnlab-bench/bin/python"),
        help="--class-hub: the Python of the hub and the students, with vpnlab[course,hub], "
        "outside any 0700 home (default %(default)s)",
    )
    p.add_argument(
        "--proxy", help="--class-hub: configurable-http-proxy (default: beside --python)"
    )
    p.add_argument(
        "--stagger-seconds",
        type=bounded(float, 0.0, MAX_STAGGER_S),
        default=60.0,
        help="--class-hub: the logins are spread over this many seconds (default %(default)s)",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Only the module of the benchmark asked for is imported."""
    if args.class_hub:
        from vpnlab.course.classhub import class_hub, format_class_hub

        document = class_hub(args.class_hub, args.python, args.stagger_seconds, args.proxy)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "class-hub.json").write_text(json.dumps(document, indent=2, default=str))
        print(format_class_hub(document))
        print(f"\nraw results: {args.out / 'class-hub.json'}")
        return 0 if all(r["failure"] is None for r in document["results"]) else 1
    if args.flood:
        count = args.clients or FLOOD_CLIENTS
        if count > FLOOD_CLIENTS:  # each load client a peer with an address of the /24
            raise VpnlabError(f"--flood takes at most {FLOOD_CLIENTS} clients (--clients)")
        document = flood_bench(args.prefix or FLOOD_PREFIX, count, args.flood_seconds)
        print(format_flood(document))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "flood.json").write_text(json.dumps(document, indent=1))
        return 0 if all(document[k]["clients"]["connected"] == count for k in FLOODS) else 1
    if args.clients:
        document = class_load(args.clients, args.prefix or CLASS_PREFIX, args.idle_seconds)
        print(format_class_load(document))
        return 0 if document["sequential"]["answered"] == args.clients else 1
    if args.footprint:
        prefix = args.prefix or FOOTPRINT_PREFIX
        document = footprint(prefix, args.idle_seconds, datapath=args.datapath)
        print(format_footprint(document))
        return 0
    if args.quick:
        runs, seconds, cases = 1, 2.0, QUICK_CASES
    else:
        runs, seconds, cases = args.runs, args.seconds, ALL_CASES
    cases = args.cases or cases
    document = run_bench(
        cases, runs, seconds, args.out, args.prefix or "vbench-", args.mtu, download=args.download
    )
    print(format_table(document))
    print(f"\nraw runs: {args.out / 'results.json'}   chart: {args.out / 'bench.png'}")
    return 0 if all(row["mbps"] > 0 for row in document["summary"]) else 1
