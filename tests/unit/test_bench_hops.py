"""``bench.hop_times``: where an idle ping waits, read from tcpdump's lines in r1 and r2.

The lines (tests/data/tcpdump-idle-ping-r1.txt, -r2.txt) are tcpdump's own (``tcpdump -i any
-n -tt -l -q "udp or icmp"``), captured in the bench's lab on 2026-12-06 during two pings
through ``vpnlab esp-aes-gcm simple``.
"""

from __future__ import annotations

from pathlib import Path

from vpnlab.course.bench import HOPS, hop_times
from vpnlab.course.bench_report import format_table, summarize

DATA = Path(__file__).resolve().parents[1] / "data"
R1 = (DATA / "tcpdump-idle-ping-r1.txt").read_text().splitlines()
R2 = (DATA / "tcpdump-idle-ping-r2.txt").read_text().splitlines()  # with tcpdump's banner


def test_each_hop_is_the_time_between_the_inner_and_the_outer_packet():
    # the second ping: request on r1's tun0 at .065702, its datagram on r1's eth0 at .065850,
    # on r2's eth0 at .065860, the request on r2's tun0 at .065989; the reply on r2's tun0
    # at .066007, its datagram on r2's eth0 at .066060, on r1's eth0 at .066062, on r1's
    # tun0 at .066151
    assert hop_times(R1, R2, skip=1) == {
        "client out": 148,
        "server in": 129,
        "server out": 53,
        "client in": 89,
    }


def test_the_median_of_the_pings_and_the_first_ones_skipped():
    both = hop_times(R1, R2)
    assert list(both) == list(HOPS)
    assert both["server out"] == 60  # (67 + 53) / 2
    assert hop_times(R1, R2, skip=2) == {}


def test_a_ping_with_a_packet_missing_is_left_out():
    lost = [line for line in R1 if not line.startswith("1796530033.066062")]  # seq 2 reply
    assert hop_times(lost, R2, skip=1) == {}
    assert hop_times(lost, R2)["client in"] == 70  # seq 1 only: .013429 - .013359


def test_the_bench_table_shows_the_hops_per_tunnel():
    runs = [
        {"case": "routed", "mbps": 2000.0, "idle_hops_us": {}},
        {"case": "openvpn", "mbps": 1400.0, "idle_hops_us": hop_times(R1, R2, skip=1)},
    ]
    document = {
        "summary": summarize(["routed", "openvpn"], runs),
        "date": "2026-12-06 04:00",
        "machine": {"cpus": 2, "kernel": "6.1", "python": "3.11", "openvpn": "OpenVPN 2.6"},
        "settings": {"runs": 1, "seconds": 1.0, "tun_mtu": 1400},
    }
    table = format_table(document).splitlines()
    header = next(line for line in table if line.startswith("| case | client out"))
    assert header == "| case | client out | server in | server out | client in | sum |"
    assert "| openvpn | 148 | 129 | 53 | 89 | 419 |" in table
    assert not any(line.startswith("| routed | ") and line.count("|") == 7 for line in table)


def test_the_bench_table_says_which_way_the_data_flowed():
    runs = [{"case": "routed", "mbps": 2000.0, "idle_hops_us": {}}]
    document = {
        "summary": summarize(["routed"], runs),
        "date": "2026-12-07 16:00",
        "machine": {"cpus": 2, "kernel": "6.1", "python": "3.11", "openvpn": None},
        "settings": {"runs": 1, "seconds": 1.0, "tun_mtu": 1400, "path": "web -> r1"},
    }
    assert format_table(document).splitlines()[-1].endswith("iperf3 web -> r1")
    document["settings"]["path"] = "r1 -> web"
    assert format_table(document).splitlines()[-1].endswith("iperf3 r1 -> web")
