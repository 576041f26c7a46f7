"""instruments/flood.py and course/flood.py's pure parts: the flood's datagrams and bounds,
the ping summary. The flood itself runs in ``vpnlab bench --flood`` (a benchmark, not CI)."""

from __future__ import annotations

import random

import pytest

from vpnlab.cli.flood import parse
from vpnlab.core.cookie import CookieChecker
from vpnlab.course.flood import ping_summary, ping_windows
from vpnlab.instruments import flood
from vpnlab.wire.identity import HELLO_BYTES
from vpnlab.wire.noise import public_key

from .helpers import seeded_random

KEY = public_key(bytes(range(32)))


def test_flood_hellos_have_the_size_and_the_mac1_of_their_kind():
    checker = CookieChecker(KEY, seeded_random(1))
    rng = random.Random(1)
    junk = flood.hello(rng, None)
    valid = flood.hello(rng, checker.keys.mac1)
    assert len(junk) == len(valid) == HELLO_BYTES
    assert not checker.check_mac1(junk) and checker.check_mac1(valid)
    assert valid[-16:] == bytes(16)  # no cookie


@pytest.mark.parametrize(
    "argv",
    [
        ["--server", "8.8.8.8", "--sources", "192.0.2.9"],  # a real public address
        ["--server", "198.51.100.2", "--sources", "10.0.0.1"],
        ["--server", "198.51.100.2", "--sources", "203.0.113.250", "--count", "20"],  # runs out
        ["--server", "198.51.100.2", "--sources", "192.0.2.9", "--rate", "1000000"],
        ["--server", "198.51.100.2", "--sources", "192.0.2.9", "--seconds", "3600"],
        ["--server", "198.51.100.2", "--sources", "192.0.2.9", "--kind", "mac1"],  # no key
    ],
)
def test_flood_refuses_what_is_not_a_bounded_lab_flood(argv, capsys):
    base = {"--kind": "junk", "--rate": "100", "--seconds": "1"}
    for flag, value in base.items():
        if flag not in argv:
            argv = [*argv, flag, value]
    with pytest.raises(SystemExit):
        parse(argv, in_lab=True)
    assert "error:" in capsys.readouterr().err


def test_flood_runs_only_in_a_lab_namespace(capsys):
    argv = ["--kind", "junk", "--server", "198.51.100.2", "--sources", "192.0.2.9"]
    with pytest.raises(SystemExit):
        parse([*argv, "--rate", "10", "--seconds", "1"], in_lab=False)
    assert "inside a lab node" in capsys.readouterr().err
    assert parse([*argv, "--rate", "10", "--seconds", "1"], in_lab=True).rate == 10


def test_ping_summary_reads_loss_and_percentiles():
    output = "\n".join(
        f"64 bytes from 10.8.0.1: icmp_seq={i} ttl=64 time={i}.0 ms" for i in (1, 2, 3)
    )
    output += "\n4 packets transmitted, 3 received, 25% packet loss, time 3003ms\n"
    summary = ping_summary(output)
    assert summary["loss_percent"] == 25.0 and summary["rtt_ms"]["median"] == 2.0


def test_ping_windows_split_the_pings_sent_while_the_clients_connect_from_the_others():
    """Issue 27 item 6: the phase's p99 mixed the 250 connects into the flood's figure."""
    rtts_ms = {1: 1.0, 2: 30.0, 3: 40.0, 5: 2.0, 6: 1.0}  # seq 4 and 7 are lost
    lines = [
        f"[{100.0 + seq * 0.02 + rtt / 1e3:.6f}] 64 bytes from 10.8.0.1: icmp_seq={seq} ttl=64 "
        f"time={rtt} ms"
        for seq, rtt in rtts_ms.items()
    ]
    output = "\n".join(lines) + "\n7 packets transmitted, 5 received, 28% packet loss\n"
    windows = ping_windows(output, (100.03, 100.07))  # seq 2, 3 (and the lost 4) were sent then
    assert windows["connects"]["sent"] == 3 and windows["connects"]["lost"] == 1
    assert windows["connects"]["rtt_ms"] == {"median": 35.0, "p99": 40.0}
    assert windows["flood_only"]["sent"] == 4 and windows["flood_only"]["lost"] == 1
    assert windows["flood_only"]["rtt_ms"] == {"median": 1.0, "p99": 2.0}
