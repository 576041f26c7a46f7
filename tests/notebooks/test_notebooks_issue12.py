"""The course notebooks of issue 12 (08-11) execute headless; their key outputs are asserted."""

from __future__ import annotations

from itertools import pairwise

import pytest

pytestmark = pytest.mark.lab


def test_08_routing_without_nat(run_notebook):
    run = run_notebook("08_routing_without_nat")
    r = run.results
    assert r["ping_rc_without_nat"] != 0  # the failure first
    assert ["10.8.0.2", "203.0.113.10", "8"] in r["web_side"]  # requests leave, unNATed
    assert ["203.0.113.10", "10.8.0.2", "0"] in r["web_side"]  # web answers reach the isp
    assert r["r2_side_to_tunnel"] == []  # ... and die there
    assert "unreachable" in r["isp_route_get"].lower()
    assert r["ping_ok_with_route"] is True
    assert r["whoami_routed"] == "you are 10.8.0.2"  # no NAT: web sees the tunnel address
    assert r["conntrack_nat_entries"] == 0
    assert r["whoami_nat"] == "you are 198.51.100.2"  # with NAT: web sees the server
    assert run.seconds < 60
    assert run.text().count("correct") == 4


def test_09_site_to_site(run_notebook):
    run = run_notebook("09_site_to_site")
    r = run.results
    assert any(x.startswith("172.16.2.0/24 dev tun0") for x in r["r1_routes"])
    assert not any(x.startswith("0.0.0.0/1") for x in r["r1_routes"])
    assert any(x.startswith("172.16.1.0/24 dev tun0") for x in r["r2_routes"])
    assert r["ping_h1_h2"] is True and r["ping_h2_h1"] is True
    assert r["lan1_first"][:2] == ["172.16.1.10", "172.16.2.10"]  # unchanged on both LANs
    assert r["lan2_first"][:2] == ["172.16.1.10", "172.16.2.10"]
    assert r["wire_first"][:2] == ["192.0.2.2", "198.51.100.2"]
    assert r["wire_first"][2].endswith("udpencap:esp")  # the LAN addresses travel encrypted
    assert r["http_h1_to_h2"] == "you are 172.16.1.10"
    assert r["http_h2_to_h1"] == "you are 172.16.2.10"
    assert r["ftp_ok"] == {"passive": True, "active": True}
    assert "spoofed source" not in r["server_drops"]
    assert r["c2c_allowed"] is True
    assert r["c2c_isolated_rc_ok"] is True and r["c2c_to_server_ok"] is True
    assert r["c2c_denied_count"] >= 2
    assert run.seconds < 60
    assert run.text().count("correct") == 4


def test_10_tunnel_breaking(run_notebook):
    run = run_notebook("10_tunnel_breaking")
    r = run.results
    assert r["short_checksum_ok"] is True  # the 3 s pause: the download survives
    assert r["short_client_alive"] is True
    assert r["retransmissions"] >= 2  # TCP retransmitted during the pause...
    gaps = r["retransmission_gaps"]  # ... with exponential backoff: each gap about twice the last
    assert len(gaps) >= 2 and all(1.4 < b / a < 2.6 for a, b in pairwise(gaps)), gaps
    assert r["long_client_peer_lost"] is True  # the 8 s pause: the session ends
    assert r["long_client_alive"] is False
    assert r["long_server_dropped"] is True
    assert run.images() >= 1
    assert run.seconds < 60
    assert run.text().count("correct") == 4


def test_11_tun_in_depth(run_notebook):
    run = run_notebook("11_tun_in_depth")
    r = run.results
    assert r["template_names"] == ["smith0", "smith1"]  # the kernel filled in the number
    assert r["pi_off"] is True
    assert "15" in r["long_name_error"] and "vpnlab-tunnel-0001" in r["long_name_error"]
    assert r["unasked_versions"] == [6]  # the kernel's own IPv6 packets, unasked
    assert any("ICMPv6ND_RS" in k for k in r["unasked_kinds"])  # a router solicitation
    assert r["client_not_ipv4"] >= 1  # the daemon counted and dropped them
    assert r["verify_ok"] is True
    assert r["write_errno"] == "EINVAL" and r["rx_dropped_delta"] == 1
    assert r["dispatch_drops"] == {"tun write: Invalid argument": 1}
    assert run.seconds < 60
    assert run.text().count("correct") == 4
