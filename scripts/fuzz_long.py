"""The long fuzz (issue 27): the walks of tests/unit/test_fuzz.py, a million steps and more.

A benchmark, not CI: ``scripts/fuzz.sh [--steps N] [--jobs J] [--seed S]``. Every scenario
(every wire format, TUN and TAP, handshake, identity, static keys; the identity mode's
Hellos, Welcomes, cookie replies and rekeys among them) walks in chunks of ``--chunk`` steps,
each chunk with its own seed, spread over ``--jobs`` processes. A crash or a miscounted drop
stops with the walk's seed and step (the same seed repeats it). Prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.test_fuzz import SCENARIOS, SEEN_DROPS, Crash, Fuzz  # noqa: E402


def walk(task: tuple[int, int, int]) -> tuple[int, int, float, str, Counter]:
    """One chunk: scenario ``index``, ``seed``, ``steps``; returns what it met."""
    index, seed, steps = task
    SEEN_DROPS.clear()
    started = time.process_time()
    try:
        Fuzz(SCENARIOS[index], seed).run(steps)
        crash = ""
    except Crash as exc:
        crash = f"seed {seed}: {exc}"
    return index, steps, time.process_time() - started, crash, Counter(SEEN_DROPS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_050_000, help="steps in all")
    parser.add_argument("--chunk", type=int, default=5_000, help="steps per seeded walk")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chunks = max(1, args.steps // args.chunk)
    tasks = [(i % len(SCENARIOS), args.seed * 1_000_003 + i, args.chunk) for i in range(chunks)]
    steps, cpu, drops = Counter(), Counter(), Counter()
    crashes: list[str] = []
    started = time.monotonic()
    with Pool(args.jobs) as pool:
        for index, done, seconds, crash, seen in pool.imap_unordered(walk, tasks):
            name = SCENARIOS[index].name
            steps[name] += done
            cpu[name] += seconds
            drops.update(seen)
            if crash:
                crashes.append(crash)
                pool.terminate()
                break
    wall = time.monotonic() - started
    print(f"{'scenario':<28} {'steps':>10} {'cpu s':>8} {'steps/s':>9}")
    for sc in SCENARIOS:
        if steps[sc.name]:
            rate = steps[sc.name] / cpu[sc.name] if cpu[sc.name] else 0.0
            print(f"{sc.name:<28} {steps[sc.name]:>10,} {cpu[sc.name]:>8.1f} {rate:>9,.0f}")
    total = sum(steps.values())
    print(
        f"{'all':<28} {total:>10,} {sum(cpu.values()):>8.1f}   wall {wall:.0f} s, {args.jobs} jobs"
    )
    print(f"drop reasons met: {len(drops)}; crashes: {len(crashes)}")
    for crash in crashes:
        print(crash, file=sys.stderr)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
