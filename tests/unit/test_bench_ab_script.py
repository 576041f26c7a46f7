"""``scripts/bench_ab.py``, the lab bench's A/B of two code trees: its rank test, the order it
turns every round, and its refusals (the runs themselves: tests/lab/test_bench_smoke.py)."""

from __future__ import annotations

import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from .helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_ab.py"
bench_ab = load_script("bench_ab")


def test_rank_test_gives_the_exact_p_of_textbook_cases():
    """Wholly apart, 3 against 3: 2 of the 20 orderings are as extreme, p = 0.1; 8 against 8:
    p = 2 / 12,870. Interleaved alike: p = 1."""
    assert bench_ab.rank_test([1, 2, 3], [4, 5, 6]) == (9, pytest.approx(0.1))
    assert bench_ab.rank_test([4, 5, 6], [1, 2, 3]) == (0, pytest.approx(0.1))
    u, p = bench_ab.rank_test(list(range(8)), list(range(10, 18)))
    assert (u, p) == (64, pytest.approx(2 / comb(16, 8)))
    assert bench_ab.rank_test([1, 3, 5, 7], [2, 4, 6, 8])[1] > 0.5
    assert bench_ab.rank_test([1, 2], [1, 2]) == (2, 1.0)


def test_rank_test_null_distribution_sums_to_every_ordering():
    for m, n in ((1, 1), (3, 4), (7, 7)):
        counts = [bench_ab._arrangements(u, m, n) for u in range(m * n + 1)]
        assert sum(counts) == comb(m + n, m)
        assert counts == counts[::-1]  # U and m*n - U are alike


def test_the_order_of_two_trees_turns_every_round():
    assert [bench_ab.round_order(["A", "B"], r) for r in range(3)] == [
        ["A", "B"],
        ["B", "A"],
        ["A", "B"],
    ]


def test_the_report_tests_each_daemons_us_per_packet_as_well_as_the_throughput():
    """Three runs a tree: the same throughputs, the server's us/packet wholly apart."""

    def run(mbps: float, client_us: float, server_us: float) -> dict[str, float]:
        return {"mbps": mbps, "rtt_load_ms": 3.0, "client_us": client_us, "server_us": server_us}

    runs = {
        "old": [run(900, 9.0, 8.0), run(1000, 9.2, 8.1), run(950, 9.1, 8.2)],
        "new": [run(1000, 9.1, 7.0), run(900, 9.0, 7.1), run(950, 9.2, 7.2)],
    }
    args = bench_ab.argparse.Namespace(
        case="vpnlab esp-aes-gcm fast", download=False, rounds=3, seconds=8, mtu=1400
    )
    lines = bench_ab.report(["old", "new"], runs, args).splitlines()
    assert "| old | 900-1,000 (950) | 3.00 | 9.00-9.20 (9.10) / 8.00-8.20 (8.10) |" in lines
    assert "Mbit/s: Mann-Whitney U = 4.5 of 9 pairs (new faster), p = 1.000" in lines
    assert "server us/packet: Mann-Whitney U = 0 of 9 pairs (new costlier), p = 0.100" in lines
    assert any(line.startswith("client us/packet: ") for line in lines)


@pytest.mark.parametrize(
    "arguments",
    [["/nonexistent", "."], [".", ".", "--rounds", "0"]],
    ids=["no-vpnlab-tree", "no-rounds"],
)
def test_bad_arguments_get_one_line_and_exit_2(arguments):
    arguments = [str(ROOT) if a == "." else a for a in arguments]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "bench_ab.py: error: " in done.stderr.strip().splitlines()[-1]
