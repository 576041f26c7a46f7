"""Impairment of the r1-r2 path (loss, delay, jitter) and the TCP-meltdown experiment, bounded.

The delay is measured (ping r1 -> r2 grows by about it), the loss counted (the nftables rule's
counter), and ``down`` removes both, relay included. The experiment runs in its reduced form:
2 loss points x 2 transports x 2 s, and must produce numbers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from vpnlab import lab
from vpnlab.course import meltdown
from vpnlab.lab import delay, impair, state

from .helpers import SERVER_IP

pytestmark = pytest.mark.lab


def ping_rtts_ms(prefix: str, count: int = 10, interval_s: float = 0.05) -> tuple[float, int]:
    """(average RTT in ms, replies) of a ping r1 -> r2, outside the tunnel."""
    argv = ["ping", "-c", str(count), "-i", str(interval_s), "-W", "2", "-q", SERVER_IP]
    out = lab.exec_in(prefix, "r1", argv, capture_output=True, text=True, timeout=30).stdout
    replies = int(out.split(" received")[0].rsplit(",", 1)[1]) if " received" in out else 0
    avg = float(out.split("=")[-1].split("/")[1]) if "min/avg/max" in out else float("nan")
    return avg, replies


def test_impairment_takes_effect_and_down_removes_it(prefix):
    lab.up(prefix=prefix, vpn=False)
    base_ms, _ = ping_rtts_ms(prefix)
    cli = [sys.executable, "-m", "vpnlab", "lab", "impair", "--prefix", prefix]
    done = subprocess.run(
        cli + ["--delay", "50", "--jitter", "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "50 ms delay +- 5 ms jitter" in done.stdout
    delayed_ms, replies = ping_rtts_ms(prefix)
    print(f"ping r1 -> r2: {base_ms:.2f} ms, with 50 +- 5 ms delay {delayed_ms:.1f} ms")
    assert replies == 10
    assert 40 < delayed_ms - base_ms < 70  # the delay is added once per round trip
    how = delay.describe(prefix)
    relay_pid = how["relay_pid"]
    assert how["netem"] or relay_pid  # netem where the kernel has it, else the relay

    impair.apply(prefix, loss=30, delay_ms=0)
    assert delay.describe(prefix)["relay_pid"] is None and not delay.describe(prefix)["rule"]
    _, replies = ping_rtts_ms(prefix, count=40, interval_s=0.02)
    assert impair.dropped(prefix) > 0 and replies < 40  # counted by the nftables rule
    # 30 % loss each way: 5 pings all lost 1 time in 30; 20 pings, 1 in a million
    assert abs(ping_rtts_ms(prefix, 20)[0] - base_ms) < 5  # no delay any more

    impair.apply(prefix, loss=1, delay_ms=20)  # left in place for down to remove
    relay_pid = delay.describe(prefix)["relay_pid"] or relay_pid
    isp = state.namespace(prefix, "isp")
    lab.down(prefix)
    assert not state.ns_exists(isp)
    if relay_pid:
        assert not state.alive(relay_pid), "the delay relay survived down"


def test_reduced_meltdown_experiment_produces_numbers(prefix, tmp_path):
    results = meltdown.sweep(prefix, losses=(0, 2), delays=(10,), seconds=2, samples=1)
    points = results["points"]
    assert [(p["transport"], p["loss"]) for p in points] == [
        ("udp", 0),
        ("udp", 2),
        ("tcp", 0),
        ("tcp", 2),
    ]
    for p in points:
        assert p["mbps"] > 0, p
        assert isinstance(p["inner_retrans"], int), p
        assert isinstance(p["outer_retrans"], int), p
        assert p["transfer_s"] is not None and p["transfer_s"] > 0.01, p  # >= 10 ms of delay
    table = meltdown.format_table(results)
    assert table.count("\n") == 3
    meltdown.plot(results, tmp_path / "meltdown.png")
    assert (tmp_path / "meltdown.png").stat().st_size > 10_000
    print(table)
