"""The lab bench's A/B: two code trees through the same case, rounds alternated, a rank test.

Each round runs ``vpnlab bench --runs 1`` once per tree (a lab of its own each time, prefix
``vab-`` unless ``--prefix``), the daemons from that tree (``PYTHONPATH``: the lab starts them
with the same Python and environment). The order turns every round (A B, B A, A B, ...): on the
2-core VMs whichever tree ran first in a round did better (``docs/performance.md``, *A stream
of single packets*), so a fixed order is a bias of its own. Prints, per tree, Mbit/s (range
and median), the loaded ping (median) and the daemons' CPU us/packet (range and median), then
the Mann-Whitney U and its exact two-sided p of the throughputs and of each daemon's us/packet:
on a VM whose rounds vary by 20-40 %, a difference counts when p is small, not when the medians
differ. The us/packet moves less than the throughput between rounds, so a lever that saves a
few per cent of a daemon's CPU shows there first::

    mkdir /tmp/before && git archive HEAD~3 vpnlab | tar -x -C /tmp/before
    sudo .venv/bin/python scripts/bench_ab.py /tmp/before . --rounds 8 --download

Root (the lab), and nothing else on the machine meanwhile: about 25 s per run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from math import ceil, comb
from pathlib import Path

from vpnlab.course.bench import round_order

Run = dict[str, float]
"""One run of one tree: mbps, rtt_load_ms, client_us, server_us."""


@functools.cache
def _arrangements(u: int, m: int, n: int) -> int:
    """How many orderings of m values of one sample among n of the other give U == u (the
    pairs in which the second sample's value is the larger)."""
    if u < 0:
        return 0
    if m == 0 or n == 0:
        return 1 if u == 0 else 0
    # the largest value belongs to the first sample (it beats no one) or to the second (it
    # beats all m of the first)
    return _arrangements(u, m - 1, n) + _arrangements(u - m, m, n - 1)


def rank_test(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mann-Whitney: U (the pairs in which ``b``'s value is larger, a tie counting one half)
    and the exact two-sided p of so uneven a U if both came from one distribution (a half U
    from ties is rounded towards the middle, so p errs high)."""
    m, n = len(a), len(b)
    u = sum((y > x) + 0.5 * (y == x) for x in a for y in b)
    total = comb(m + n, m)
    below = sum(_arrangements(k, m, n) for k in range(ceil(min(u, m * n - u)) + 1))
    return u, min(1.0, 2 * below / total)


def run_once(tree: Path, args: argparse.Namespace, out: Path) -> Run:
    """One ``vpnlab bench --runs 1`` of ``args.case`` with the daemons of ``tree``."""
    command = [sys.executable, "-P", "-m", "vpnlab", "bench", "--cases", args.case]
    command += ["--runs", "1", "--seconds", str(args.seconds), "--mtu", str(args.mtu)]
    command += ["--prefix", args.prefix, "--out", str(out)]
    command += ["--download"] if args.download else []
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_ab: the bench of {tree} failed: {last}")
    run = json.loads((out / "results.json").read_text())["runs"][0]
    if "error" in run:
        raise SystemExit(f"bench_ab: the bench of {tree} failed: {run['error']}")
    us = run.get("cpu_us_per_packet", {})
    return {
        "mbps": run["mbps"],
        "rtt_load_ms": run.get("rtt_load_ms") or float("nan"),
        "client_us": us.get("client", float("nan")),
        "server_us": us.get("server", float("nan")),
    }


def report(names: list[str], runs: dict[str, list[Run]], args: argparse.Namespace) -> str:
    """The table: one row per tree, then the rank tests of the second tree against the first:
    the throughput, and each daemon's us/packet."""
    way = "download (web -> r1)" if args.download else "upload (r1 -> web)"
    lines = [
        f"{args.case}, {way}, {args.rounds} rounds of {args.seconds:g} s, tun MTU {args.mtu},"
        " the order turned every round",
        "",
        "| tree | Mbit/s (median) | loaded ping ms | CPU us/packet client / server |",
        "|---|---|---:|---|",
    ]
    for name in names:
        rows = runs[name]
        mbps = spread([r["mbps"] for r in rows], ",.0f")
        us = [spread([r[daemon] for r in rows], ".2f") for daemon in ("client_us", "server_us")]
        ping = statistics.median(r["rtt_load_ms"] for r in rows)
        lines.append(f"| {name} | {mbps} | {ping:.2f} | {us[0]} / {us[1]} |")
    lines.append("")
    pairs = len(runs[names[0]]) * len(runs[names[1]])
    for key, what, larger in (
        ("mbps", "Mbit/s", "faster"),
        ("client_us", "client us/packet", "costlier"),
        ("server_us", "server us/packet", "costlier"),
    ):
        u, p = rank_test([r[key] for r in runs[names[0]]], [r[key] for r in runs[names[1]]])
        lines.append(
            f"{what}: Mann-Whitney U = {u:g} of {pairs} pairs ({names[1]} {larger}), p = {p:.3f}"
        )
    return "\n".join(lines)


def spread(values: list[float], style: str) -> str:
    """ "low-high (median)" of one tree's runs."""
    low, high, middle = min(values), max(values), statistics.median(values)
    return f"{low:{style}}-{high:{style}} ({middle:{style}})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two folders, each holding vpnlab/")
    parser.add_argument("--case", default="vpnlab esp-aes-gcm fast", help="a bench case")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    parser.add_argument("--seconds", type=float, default=10, help="per run (default 10)")
    parser.add_argument("--mtu", type=int, default=1400, help="tun MTU (default 1400)")
    parser.add_argument("--download", action="store_true", help="iperf3 -R: web -> r1")
    parser.add_argument("--prefix", default="vab-", help="the labs' namespace prefix (vab-)")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "vpnlab" / "__init__.py").is_file():
            parser.error(f"{tree} holds no vpnlab/ (make one with git archive REV vpnlab)")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    names = [str(tree) for tree in args.trees] if trees[0] != trees[1] else ["A", "B"]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    by_name = dict(zip(names, trees, strict=True))
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        for round_ in range(args.rounds):
            for name in round_order(names, round_):  # two trees: A B, B A, A B, ...
                out = Path(scratch) / f"{len(runs[name])}-{names.index(name)}"
                runs[name].append(run_once(by_name[name], args, out))
                mbps = runs[name][-1]["mbps"]
                print(f"[ab] round {round_ + 1}: {name}: {mbps:,.0f} Mbit/s", file=sys.stderr)
    print(report(names, runs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
