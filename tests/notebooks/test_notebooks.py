"""Every notebook of the course executes headless, and its key outputs are what it teaches."""

from __future__ import annotations

from itertools import pairwise

import pytest

pytestmark = pytest.mark.lab


def graded(run) -> tuple[int, int]:
    """(live checks and observed behaviours right, fixed-fact sets all right) in a run of the
    instructor edition (its hidden tests included)."""
    text = run.text()
    return text.count("correct"), text.count(": all right")


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
    assert graded(run) == (2, 1)  # live checks right; the fixed facts


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
    assert "02:00:5e:00:53:99" in r["tap_neigh"] and "REACHABLE" in r["tap_neigh"]  # SEED 9
    assert r["tap_after_reply"][0] == "02:00:5e:00:53:99"  # the held-back ping, to our MAC
    assert "ICMP" in r["tap_after_reply"][1] and "echo-request" in r["tap_after_reply"][1]
    assert "02:00:5E:00:53:99" in r["arping"].upper() and "10.10.0.7" in r["arping"]  # arping
    assert "tun0" not in r["links_after_close"] and "tap0" not in r["links_after_close"]
    assert "tun0" in r["sysfs_virtual_net"]  # the notes' test, with the client running
    assert "/dev/net/tun" in r["client_fd_targets"]  # a character device's fd, not a socket
    assert any(t.startswith("socket:") for t in r["client_fd_targets"])  # the UDP socket
    assert r["dev_net_tun_is_char_device"] is True
    assert graded(run) == (1, 1)  # live checks right; the fixed facts


def test_02_handshake_timeouts(run_notebook):
    run = run_notebook("02_handshake_timeouts")
    r = run.results
    assert r["plain_first_kinds"] == ["HELLO", "WELCOME"]
    assert {"IP packet", "KEEPALIVE"} <= set(r["plain_kinds"])
    # a keepalive when nothing was sent for 2 s; the first one leaves right after the Welcome
    # (issue 27: it confirms the session's address), so the notebook's pings after it may
    # push the second one later: the gaps after that are the 2 s timer's alone
    first, *rest = r["keepalive_gaps"]
    assert 1.5 <= first <= 4.0 and all(1.5 <= g <= 2.6 for g in rest)
    assert r["stranger_drops"] == {"unknown peer": 1}  # nc's "hello": dropped and counted
    assert all(s.endswith("udpencap:isakmp") for s in r["esp_handshake_stacks"])
    assert r["esp_data_stack"].endswith("udpencap:esp")
    assert r["identity_hellos"] >= 2  # the first Hello and the rekey's
    assert r["esp_spis"] >= 4  # two SPIs per set of keys: the rekey changed them
    assert r["unreachable_rc"] == 3 and r["unreachable_msg"] is True
    assert 2.4 < r["unreachable_s"] < 5.0  # the 2.5 s connect timeout fired
    assert r["unreachable_hellos"] == 5
    kinds = r["session_kinds"]  # the sequence diagram's arrows, from the capture
    assert kinds[:2] == [[True, "HELLO"], [False, "WELCOME"]]
    assert [True, "KEEPALIVE"] in kinds and [False, "KEEPALIVE"] in kinds
    assert [True, "BYE"] in kinds[-2:]  # the client's CleanUp says goodbye
    # issue 27: under a junk burst, the Hello gets a cookie reply first, then is answered
    assert r["cookie_messages"] == ["Hello", "Cookie reply", "Hello", "Welcome"]
    assert r["junk_dropped"] >= 1000  # each for one hash: "bad mac1"
    assert run.images() >= 3  # the select-loop timeline, the sequence, the timeout timeline
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


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
    assert run.images() >= 1  # the longest-prefix picture
    assert graded(run) == (0, 1)  # live checks right; the fixed facts
    assert [a.item for a in run.attempts] == ["3.1", "3.2", "3.3", "3.4"]  # recorded, no verdict


def test_03_wrong_and_copied_answers_fail(run_notebook):
    """The student edition's cells answered wrongly: the other /1, True for 1, a copied
    expression that is not the answer, the wrong type. Fixed facts get no verdict in the
    student's process (the instructor's hidden tests grade them as a set: test_nbgrader.py);
    only the wrong type is refused at once. Every answer is recorded."""
    wrong = {
        "answer_3_1": '"0.0.0.0/1"',
        "answer_3_2": "len(r1_after - r1_before)",  # 4 routes added: a count, not /32
        "answer_3_3": 'route_dev("r1", "198.51.100.2")',  # eth0: with the host route back
        "answer_3_4": "1",  # True == 1 in Python, not here
    }
    run = run_notebook("03_routing", answers=wrong)
    failed = [
        o
        for c in run.notebook.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert len(failed) == 1, run.text()
    assert failed[0]["ename"] == "AssertionError" and "is not a bool" in failed[0]["evalue"]
    assert run.text().count("graded by your instructor") == 3
    assert [(a.item, a.passed) for a in run.attempts] == [(f"3.{i}", False) for i in (1, 2, 3)]
    assert run.results["r1_restored"] is True  # the rest of the notebook ran


def test_04_nat(run_notebook):
    run = run_notebook("04_nat")
    r = run.results
    assert r["whoami_before"] == "you are 192.0.2.2"
    assert r["whoami_after"] == "you are 198.51.100.2"  # the who-am-I change
    assert r["counter_delta_3_pings"] == 1
    assert r["conntrack"] == ["10.8.0.2", "203.0.113.10", "203.0.113.10", "198.51.100.2"]
    assert r["no_nat_rc"] != 0
    assert r["whoami_restored"] == "you are 198.51.100.2"
    assert run.images() >= 1  # the ping's path
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


def test_06_liveness_cleanup(run_notebook):
    run = run_notebook("06_liveness_cleanup")
    r = run.results
    assert 4.5 < r["client_noticed_s"] < 9.5  # the 6 s liveness timeout, client side
    assert r["client_peer_lost"] is True
    assert 5.5 < r["client_silence_s"] < 7.0  # the 6 s count from the server's last datagram
    assert 3.5 < r["client_peer_lost_s"] <= r["client_noticed_s"]  # 4-6 s after the kill
    assert 2 <= r["keepalives_after_kill"] <= 4
    assert r["nat_left_after_kill9"] is True and r["nat_after_stop_vpn"] is False
    assert 3.5 < r["server_dropped_s"] < 9.5  # 6 s from the client's last datagram (0-2 s before)
    assert r["bye_s"] < 1.5
    assert "tun0" not in r["r1_routes_after_sigterm"]
    assert "198.51.100.2" not in r["r1_routes_after_sigterm"]
    # issue 27: --fail-closed leaves the redirected networks unreachable, the seed's does not
    assert "unreachable 0.0.0.0/1" in r["fail_closed_routes"]
    assert r["leak_after_seed_cleanup"] is True and r["leak_after_fail_closed"] is False
    assert r["namespaces_left"] == []
    assert run.images() >= 1
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


def test_05_captures(run_notebook):
    run = run_notebook("05_captures")
    r = run.results
    assert r["ftp_ok"] is True
    assert r["eth_stacks"] == ["eth:ethertype:ip:udp:udpencap:esp"]  # the notes' eth stack
    assert "raw:ip:tcp:ftp" in r["tun_stacks"] and "raw:ip:icmp:data" in r["tun_stacks"]
    assert r["pyshark_stacks"] == ["raw:ip:tcp:ftp"]
    assert r["plain_ping_spi"] == "0x45000054"
    assert r["frame_len"] == {"plain": 126, "esp-null": 154, "esp-aes-gcm": 162}
    assert r["tunnel_added"] == {"plain": 28, "esp-null": 56, "esp-aes-gcm": 64}  # no Ethernet
    assert r["tun_mtu"] == {"plain": 1472, "esp-null": 1443, "esp-aes-gcm": 1435}
    public = ["192.0.2.2", "198.51.100.2"]  # on eth0 the outer header has the public addresses
    assert r["eth_outer_addresses"] == [public, public[::-1]]
    for cipher in ("esp-null", "esp-aes-gcm"):
        assert r["stacks_without_keys"][cipher] == "eth:ethertype:ip:udp:udpencap:esp"
        assert r["stacks_with_keys"][cipher] == "eth:ethertype:ip:udp:udpencap:esp:ip:icmp:data"
    assert ["esp", 16, 20] in r["esp_aes_gcm_overhead"]
    assert run.images() >= 3
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


def test_07_tcp_meltdown(run_notebook):
    run = run_notebook("07_tcp_meltdown")
    r = run.results
    assert 20 < r["ping_delayed_ms"] - r["ping_base_ms"] < 45  # --delay 30, once per round trip
    assert [(p["transport"], p["loss"]) for p in r["points"]] == [
        (t, loss) for t in ("udp", "tcp") for loss in (0, 3)
    ]
    assert all(p["mbps"] > 0 and p["transfer_s"] for p in r["points"])
    assert len(r["repeats"]) == 3  # the quick sweep three times: medians and spread plotted
    assert all(len(points) == 4 for points in r["repeats"])
    assert r["captures"]["udp"]["eth0"] == 0  # ESP in UDP: no TCP on the wire to retransmit
    assert r["captures"]["udp"]["tun0"] > 0  # the inner TCP repairs the isp's losses
    assert r["captures"]["tcp"]["eth0"] > 0  # the outer TCP repairs them instead
    assert [q["queue_bytes"] for q in r["queues"]] == [4 * 1024 * 1024, 256 * 1024]
    assert all(q["median_ms"] and q["mbps"] > 0 for q in r["queues"])  # the tunnel carried
    assert r["namespaces_left"] == []
    assert run.images() >= 2  # the meltdown sweep, the loaded ping per queue
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


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
    assert run.images() >= 1  # the topology, with the isp's interface names
    assert run.seconds < 60
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


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
    assert run.images() >= 1  # one ping's path, LAN to LAN
    assert run.seconds < 60
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


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
    # SEED task 6: client killed and restarted, the inner TCP session goes on
    assert r["task6"]["late_echo"] == "typed while down\n"  # typed during the break
    assert r["task6"]["after_echo"] == "after\n"
    assert r["task6"]["address"] == "10.8.0.2"  # the freed address back at the front
    assert r["task6"]["gap_segments"] == []  # no source address, nothing sent in the gap
    assert {"10.5:predict", "10.5:explain"} <= {a.item for a in run.attempts}
    assert run.images() >= 1
    assert run.seconds < 90
    assert graded(run) == (1, 1)  # live checks right; the fixed facts


def test_11_tun_in_depth(run_notebook):
    run = run_notebook("11_tun_in_depth")
    r = run.results
    template = r["template"]  # made of the user name the notebook runs as (root here)
    assert template.endswith("%d") and template != "smith%d"
    assert r["template_names"] == [template.replace("%d", "0"), template.replace("%d", "1")]
    assert r["pi_off"] is True
    assert "15" in r["long_name_error"] and "vpnlab-tunnel-0001" in r["long_name_error"]
    assert r["unasked_versions"] == [6]  # the kernel's own IPv6 packets, unasked
    assert any("ICMPv6ND_RS" in k for k in r["unasked_kinds"])  # a router solicitation
    assert r["client_not_ipv4"] >= 1  # the daemon counted and dropped them
    assert r["verify_ok"] is True
    assert r["write_errno"] == "EINVAL" and r["rx_dropped_delta"] == 1
    assert r["tun_write_drops"] == {"tun write: Invalid argument": 1}
    assert run.images() >= 1  # what one read returns from TUN and TAP
    passed = {a.item for a in run.attempts if a.passed}
    assert {"11.5", "11.6"} <= passed  # SEED 2.d and 9, the student's code, observed
    assert run.seconds < 90
    assert graded(run) == (2, 1)  # the two observed exercises; the fixed facts (11.1 with them)


def test_12_write_your_tunnel(run_notebook):
    run = run_notebook("12_write_your_tunnel")
    r = run.results
    assert r["one_way_received"] == 3  # Task 4: each echo request one datagram at r2
    assert r["my_tunnel"]["ping_rc"] == 0  # Task 5: ping and HTTP through the student's loop
    assert r["my_tunnel"]["whoami"] == "you are 10.8.0.2"
    assert r["my_tunnel"]["out"] >= 3 and r["my_tunnel_back"] >= 3  # seen on r1's eth0
    assert r["my_tunnel_spoofed_through"] == []  # the attack: no forged packet reached web
    assert run.images() >= 1  # the loop as a ping's path
    passed = {a.item for a in run.attempts if a.passed}
    assert {"12.1", "12.2"} <= passed
    assert "vpnlab/shell/tunnel.py" in str(run.notebook.cells)  # the side-by-side table
    assert run.seconds < 90
    assert graded(run) == (2, 1)  # live checks right; the fixed facts


def test_12_an_empty_loop_fails(run_notebook):
    """The student edition as handed out (the loops' bodies empty): both behavioural checks
    fail, with what was not observed, and are recorded as failed."""
    run = run_notebook("12_write_your_tunnel", answers={})
    errors = [
        o["evalue"]
        for c in run.notebook.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert any(e.startswith("Exercise 12.1: not yet: r2 received the 3 echo") for e in errors)
    assert any("Exercise 12.2: not yet: a ping r1 -> web answered" in e for e in errors)
    failed = {a.item for a in run.attempts if not a.passed}
    assert {"12.1", "12.2"} <= failed


def test_13_mtu(run_notebook):
    run = run_notebook("13_mtu")
    r = run.results
    assert r["mtu_table"] == {
        "plain": [0, 1472, 1472],
        "esp-null": [29, 1443, 1446],
        "esp-aes-gcm": [37, 1435, 1438],
    }
    assert r["probes"] == {"outside": [True, False], "inside": [True, False]}
    assert r["fragments"] >= 4  # one ping of 1500 bytes: two fragments out, two back
    assert r["black_hole"] == {"small": 1000, "big": 0}  # small passes, big vanishes
    assert r["largest_ping_payload"] == 1410  # inner 1438: ESP padding 0, 1500 exactly
    assert r["big_fixed"] == 200_000  # the derived MTU: nothing fragmented, nothing dropped
    web = {flags: mss for _, flags, mss in r["mss"]["web eth0"]}
    r1 = {flags: mss for _, flags, mss in r["mss"]["r1 tun0"]}
    synack = next(f for f in web if "A" in f)
    assert web[synack] == "1460" and r1[synack] == "1395"  # clamped by r2's daemon
    assert run.images() >= 1
    assert graded(run) == (0, 1)  # live checks right; the fixed facts


def test_14_ipv6(run_notebook):
    run = run_notebook("14_ipv6")
    r = run.results
    assert r["tunnel_address6"] == "fd10:8::2/64"  # the twin of 10.8.0.2/24
    assert r["v6_halves"] is True  # ::/1 and 8000::/1 via tun0
    assert r["ping6_ok"] is True and r["nat66_rule"] is True
    assert r["whoami6_nat"] == "you are 2001:db8:2::2"  # NAT66
    assert r["link_scope_drops"] >= 1  # tun0's own router solicitations, dropped and counted
    assert "raw:ipv6:tcp" in r["tun_stacks"]
    assert set(r["eth_stacks"]) == {"eth:ethertype:ip:udp:udpencap:esp"}  # outside: IPv4
    assert "eth:ethertype:ip:udp:udpencap:esp:ipv6:tcp" in r["eth_decrypted"]
    assert r["mtu_outer6"] == 1415
    assert set(r["eth6_stacks"]) == {"eth:ethertype:ipv6:udp:udpencap:esp"}
    assert "eth:ethertype:ipv6:udp:udpencap:esp:ip:icmp:data" in r["eth6_decrypted"]
    assert r["whoami6_routed"] == "you are fd10:8::2"  # no NAT66: the tunnel address
    assert run.images() >= 1  # the IPv6 ping's path
    assert run.seconds < 60
    assert graded(run) == (1, 1)  # live checks right; the fixed facts


def test_15_kernel_dataplane(run_notebook):
    """On this kernel (no ESP) the notebook says so in one line and shows the saved VM run."""
    run = run_notebook("15_kernel_dataplane")
    r = run.results
    line = "this kernel has ESP" if r["kernel_has_esp"] else "this kernel has no ESP ("
    assert line in run.text()
    assert r["xfrm_states"] == {"python": 0, "kernel": 2}  # the kernel's SAs only when asked
    assert r["decrypted_pings"] == {"python": 6, "kernel": 6}  # the same esp_sa rows open both
    assert r["mbit_s"]["kernel"] > r["mbit_s"]["python"] > 0
    assert run.images() == 1
    assert graded(run) == (0, 1)  # no live check; the fixed facts
