"""Every notebook of the course executes headless, and its key outputs are what it teaches."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab


def test_00_setup_topology(run_notebook):
    run = run_notebook("00_setup_topology")
    r = run.results
    assert [n.removeprefix(r["prefix"]) for n in r["namespaces"]] == ["isp", "r1", "r2", "web"]
    assert r["daemons"] == ["client-r1", "server", "whoami"]
    assert "tun0" in r["r1_interfaces"]
    assert r["verify_ok"] is True
    assert r["whoami"] == "you are 198.51.100.2"
    assert r["left_after_down"] == []
    assert run.images() >= 1  # the topology figure
    assert run.text().count("correct") == 3


def test_01_tun_device(run_notebook):
    run = run_notebook("01_tun_device")
    r = run.results
    assert r["ifreq_len"] == 40
    assert r["ifreq_flags_bytes"] == "0110"
    assert r["read_src_dst"] == ["10.8.0.2", "10.8.0.1"]
    assert "ICMP" in r["read_summary"] and "echo-request" in r["read_summary"]
    assert r["ping_rc"] == 0 and r["ping_received"] is True  # our written reply reached ping
    assert r["pi_proto"] == 0x0800
    assert "ARP" in r["tap_first"] and "10.10.0.1" in r["tap_first"]
    assert "tun0" not in r["links_after_close"] and "tap0" not in r["links_after_close"]
    assert run.text().count("correct") == 4


def test_02_handshake_timeouts(run_notebook):
    run = run_notebook("02_handshake_timeouts")
    r = run.results
    assert r["plain_first_kinds"] == ["HELLO", "WELCOME"]
    assert {"IP packet", "KEEPALIVE"} <= set(r["plain_kinds"])
    assert r["keepalive_gaps"] and all(1.5 <= g <= 2.6 for g in r["keepalive_gaps"])
    assert all(s.endswith("udpencap:isakmp") for s in r["esp_handshake_stacks"])
    assert r["esp_data_stack"].endswith("udpencap:esp")
    assert r["unreachable_rc"] == 3 and r["unreachable_msg"] is True
    assert 2.4 < r["unreachable_s"] < 5.0  # the 2.5 s connect timeout fired
    assert r["unreachable_hellos"] == 5
    assert run.images() >= 2  # the select-loop timeline and the timeout timeline
    assert run.text().count("correct") == 4


def test_03_routing(run_notebook):
    run = run_notebook("03_routing")
    r = run.results
    added = " | ".join(r["r1_added"])
    assert "0.0.0.0/1 dev tun0" in added and "128.0.0.0/1 dev tun0" in added
    assert "198.51.100.2 via 192.0.2.1 dev eth0" in added
    assert len(r["r1_added"]) == 4  # the two /1, the host route, tun0's own /24
    assert r["dev_web"] == "tun0" and r["dev_server"] == "eth0"
    assert r["dev_server_without_host_route"] == "tun0"
    assert r["loop_packets"] > 10  # the routing loop, seen in the client's counters
    assert r["r2_forward"] == "1" and r["r2_forward_after"] == "0"
    assert any("10.8.0.0/24 dev tun0" in x for x in r["r2_added"])
    assert r["r1_restored"] is True
    assert run.text().count("correct") == 4


def test_04_nat(run_notebook):
    run = run_notebook("04_nat")
    r = run.results
    assert r["whoami_before"] == "you are 192.0.2.2"
    assert r["whoami_after"] == "you are 198.51.100.2"  # the who-am-I change
    assert r["counter_delta_3_pings"] == 1
    assert r["conntrack"] == ["10.8.0.2", "203.0.113.10", "203.0.113.10", "198.51.100.2"]
    assert r["no_nat_rc"] != 0
    assert r["whoami_restored"] == "you are 198.51.100.2"
    assert run.text().count("correct") == 4


def test_06_liveness_cleanup(run_notebook):
    run = run_notebook("06_liveness_cleanup")
    r = run.results
    assert 4.5 < r["client_noticed_s"] < 9.5  # the 6 s liveness timeout, client side
    assert r["client_peer_lost"] is True
    assert 2 <= r["keepalives_after_kill"] <= 4
    assert r["nat_left_after_kill9"] is True and r["nat_after_stop_vpn"] is False
    assert 4.5 < r["server_dropped_s"] < 9.5  # the 6 s liveness timeout, server side
    assert r["bye_s"] < 1.5
    assert "tun0" not in r["r1_routes_after_sigterm"]
    assert "198.51.100.2" not in r["r1_routes_after_sigterm"]
    assert r["namespaces_left"] == []
    assert run.images() >= 1
    assert run.text().count("correct") == 4


def test_05_captures(run_notebook):
    run = run_notebook("05_captures")
    r = run.results
    assert r["ftp_ok"] is True
    assert r["eth_stacks"] == ["eth:ethertype:ip:udp:udpencap:esp"]  # the notes' eth stack
    assert "raw:ip:tcp:ftp" in r["tun_stacks"] and "raw:ip:icmp:data" in r["tun_stacks"]
    assert r["pyshark_stacks"] == ["raw:ip:tcp:ftp"]
    assert r["plain_ping_spi"] == "0x45000054"
    assert r["frame_len"] == {"plain": 126, "esp-null": 154, "esp-aes-gcm": 162}
    for cipher in ("esp-null", "esp-aes-gcm"):
        assert r["stacks_without_keys"][cipher] == "eth:ethertype:ip:udp:udpencap:esp"
        assert r["stacks_with_keys"][cipher] == "eth:ethertype:ip:udp:udpencap:esp:ip:icmp:data"
    assert ["esp", 16, 20] in r["esp_aes_gcm_overhead"]
    assert run.images() >= 3
    assert run.text().count("correct") == 4


def test_07_tcp_meltdown(run_notebook):
    run = run_notebook("07_tcp_meltdown")
    r = run.results
    assert 20 < r["ping_delayed_ms"] - r["ping_base_ms"] < 45  # --delay 30, once per round trip
    assert [(p["transport"], p["loss"]) for p in r["points"]] == [
        (t, loss) for t in ("udp", "tcp") for loss in (0, 3)]
    assert all(p["mbps"] > 0 and p["transfer_s"] for p in r["points"])
    assert r["captures"]["udp"]["eth0"] == 0  # ESP in UDP: no TCP on the wire to retransmit
    assert r["captures"]["udp"]["tun0"] > 0  # the inner TCP repairs the isp's losses
    assert r["captures"]["tcp"]["eth0"] > 0  # the outer TCP repairs them instead
    assert r["namespaces_left"] == []
    assert run.images() >= 1
    assert run.text().count("correct") == 4
