"""IPv6 without root (ISSUE #20): the parsers, the MSS clamp, the twin addresses, both cores
carrying, routing and checking IPv6, every decoder fed IPv6, the NAT66 ruleset, the CLI's
MTU for an IPv6 outer path, IPv6 endpoints, and the dual-stack lab description.

scapy builds the packets and judges the checksums, as in test_packet.py.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6ND_RS, IPv6, IPv6ExtHdrHopByHop

from vpnlab.core.bridge import claimed_sender
from vpnlab.core.constants import OUTER_HEADERS_BYTES, OUTER_HEADERS_BYTES_V6, tun_mtu
from vpnlab.core.events import DatagramDropped, PacketReceived
from vpnlab.core.formats import Kind
from vpnlab.core.packet import (
    IPV6_EXTRA_BYTES,
    clamp_mss,
    destination_bytes,
    ip_destination,
    ip_source,
    ip_version,
    is_link_scope,
    tcp_offset,
)
from vpnlab.core.pool import tunnel_address6
from vpnlab.fast import segment
from vpnlab.wire.esp import generate_static_keys
from vpnlab.wire.plain import PlainProtection

from .helpers import CorePair, ipv4_packet, ipv6_packet, seeded_random

CLIENT6 = "fd10:8::2"
SERVER6 = "fd10:8::1"
WEB6 = "2001:db8:3::10"


def test_ip_helpers_read_both_families():
    packet4 = ipv4_packet("10.8.0.2", "203.0.113.10")
    packet6 = ipv6_packet(CLIENT6, WEB6)
    assert (ip_version(packet4), ip_version(packet6)) == (4, 6)
    assert ip_source(packet4) == IPv4Address("10.8.0.2")
    assert ip_destination(packet4) == IPv4Address("203.0.113.10")
    assert ip_source(packet6) == IPv6Address(CLIENT6)
    assert ip_destination(packet6) == IPv6Address(WEB6)
    assert destination_bytes(packet6) == IPv6Address(WEB6).packed
    for short in (b"", b"\x45" * 19, packet6[:39], b"\x50" + bytes(60)):
        assert ip_version(short) == 0
        assert ip_source(short) is None and ip_destination(short) is None
        assert destination_bytes(short) == b""


def test_tcp_offset_needs_tcp_right_after_the_header():
    assert tcp_offset(bytes(IP() / TCP())) == 20
    assert tcp_offset(bytes(IP(options=b"\x01" * 4) / TCP())) == 24
    assert tcp_offset(bytes(IPv6() / TCP())) == 40
    assert tcp_offset(bytes(IPv6() / IPv6ExtHdrHopByHop() / TCP())) is None  # not walked
    assert tcp_offset(ipv6_packet(CLIENT6, WEB6)) is None


def test_link_scope_is_the_kernels_own_chatter():
    rs = bytes(IPv6(src="::", dst="ff02::2") / ICMPv6ND_RS())
    assert is_link_scope(rs)
    assert is_link_scope(ipv6_packet("fe80::1", WEB6))
    assert is_link_scope(ipv6_packet(CLIENT6, "ff02::16"))  # MLDv2 reports
    assert not is_link_scope(ipv6_packet(CLIENT6, WEB6))
    assert not is_link_scope(ipv6_packet(CLIENT6, "ff05::1"))  # site-scope multicast is routed
    assert not is_link_scope(ipv4_packet("10.8.0.2", "224.0.0.1"))


def test_clamp_mss_ipv6_is_20_bytes_smaller_and_keeps_the_checksum_valid():
    syn = bytes(IPv6(src=CLIENT6, dst=WEB6) / TCP(flags="S", options=[("MSS", 1440)]))
    clamped = IPv6(clamp_mss(syn, 1360))  # the IPv4 clamp of a 1400-byte tun0
    assert dict(clamped[TCP].options)["MSS"] == 1360 - IPV6_EXTRA_BYTES == 1340
    fixed = clamped.copy()
    del fixed[TCP].chksum  # scapy recomputes it over the IPv6 pseudo-header
    assert IPv6(bytes(fixed))[TCP].chksum == clamped[TCP].chksum
    small = bytes(IPv6() / TCP(flags="S", options=[("MSS", 1220)]))
    assert clamp_mss(small, 1360) == small
    ack = bytes(IPv6() / TCP(flags="A", options=[("MSS", 1440)]))
    assert clamp_mss(ack, 1360) == ack
    hop = bytes(IPv6() / IPv6ExtHdrHopByHop() / TCP(flags="S", options=[("MSS", 1440)]))
    assert clamp_mss(hop, 1360) == hop  # extension headers: left alone, never misread
    for cut in range(len(syn)):
        clamp_mss(syn[:cut], 1360)  # never raises


def test_tunnel_address6_is_the_twin_with_the_same_host_part():
    assert tunnel_address6(IPv4Interface("10.8.0.1/24")) == IPv6Interface("fd10:8::1/64")
    assert tunnel_address6(IPv4Interface("10.8.0.254/24")) == IPv6Interface("fd10:8::fe/64")
    assert tunnel_address6(IPv4Interface("10.8.3.7/16")) == IPv6Interface("fd10:8::307/64")
    other = IPv6Network("fd00:1::/64")
    assert tunnel_address6(IPv4Interface("10.9.0.5/24"), other) == IPv6Interface("fd00:1::5/64")


def test_tun_mtu_over_an_ipv6_path_is_20_bytes_smaller():
    assert OUTER_HEADERS_BYTES_V6 - OUTER_HEADERS_BYTES == IPV6_EXTRA_BYTES == 20
    assert tun_mtu(37) == 1435
    assert tun_mtu(37, outer_ipv6=True) == 1415
    assert tun_mtu(0, outer_ipv6=True) == 1452


def test_cores_carry_ipv6_both_ways(fmt):
    pair = CorePair(fmt)
    pair.connect()
    session = next(iter(pair.server.sessions.values()))
    assert session.tunnel_address6 == IPv6Interface("fd10:8::2/64")
    out = ipv6_packet(CLIENT6, WEB6)
    assert pair.client.send_packets([out], pair.now) == []
    pair.client_to_server()
    assert pair.server_events[-1] == PacketReceived(out)
    back = ipv6_packet(WEB6, CLIENT6)
    assert pair.server.send_packets([back], pair.now) == []
    pair.server_to_client()
    assert pair.client_events[-1] == PacketReceived(back)
    assert pair.server.counters.packets_to_tun == pair.client.counters.packets_to_tun == 1


def test_server_checks_ipv6_sources_and_drops_what_no_client_owns(fmt):
    pair = CorePair(fmt)
    pair.connect()
    for spoof in ("fd10:8::3", SERVER6, "2001:db8:1::2", "::"):
        pair.client.send_packets(
            [ipv6_packet(spoof, WEB6)], pair.now
        )  # bypasses nothing: real seal
    pair.client_to_server()
    assert pair.server.counters.drops["spoofed source"] == 3  # "::" never left the client
    assert pair.client.counters.drops["tun: ipv6 link scope"] == 1
    assert pair.server.counters.packets_to_tun == 0
    assert pair.server.send_packets([ipv6_packet(WEB6, "fd10:8::9")], pair.now) == [
        DatagramDropped("tun: no client for destination")
    ]
    rs = bytes(IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS())  # the server's tun0
    assert pair.server.send_packets([rs], pair.now) == [DatagramDropped("tun: ipv6 link scope")]
    assert pair.server.send_packets([b"\x60" + bytes(30)], pair.now) == [
        DatagramDropped("tun: not ip")
    ]


@pytest.mark.parametrize("isolate", [False, True])
def test_client_to_client_over_ipv6_allowed_or_isolated(fmt, isolate):
    from .test_server_core import second_client

    pair = CorePair(fmt, isolate_clients=isolate)
    pair.connect()
    second_client(pair, fmt)
    pair.client.send_packets([ipv6_packet(CLIENT6, "fd10:8::3")], pair.now)
    pair.client.send_packets([ipv6_packet(CLIENT6, SERVER6)], pair.now)
    pair.client_to_server()
    assert pair.server.counters.drops["client to client denied"] == (1 if isolate else 0)
    assert pair.server.counters.packets_to_tun == (1 if isolate else 2)


def test_every_decoder_takes_ipv6():
    """No IPv4-only assumption left in the parsers: one IPv6 TCP SYN through each of them."""
    syn = bytes(IPv6(src=CLIENT6, dst=WEB6) / TCP(flags="S", options=[("MSS", 1440)]))
    keys = generate_static_keys("esp-aes-gcm", seeded_random(4))
    client, server = keys.client().protection, keys.server()
    assert server.open(client.seal(syn)) == (Kind.PACKET, syn)  # next header 41, checked
    assert PlainProtection().open(syn) == (Kind.PACKET, syn)
    frame = bytes(6) + bytes.fromhex("020000000002") + b"\x86\xdd" + syn
    assert claimed_sender(frame) is None  # TAP: IPv6 claims no IPv4 address
    ((_, written),) = segment.coalesce([syn])  # the fast path's receive side: passed whole
    assert written == syn
    assert ip_source(syn) == IPv6Address(CLIENT6) and tcp_offset(syn) == 40
    assert len(clamp_mss(syn, 1360)) == len(syn)


def test_nat66_is_the_same_rule_in_an_ip6_table():
    from vpnlab.shell.routing import nat_ruleset

    v4_only = nat_ruleset(IPv4Network("10.8.0.0/24"), "eth0")
    both = nat_ruleset(IPv4Network("10.8.0.0/24"), "eth0", IPv6Network("fd10:8::/64"))
    assert both.startswith(v4_only) and "table ip6" not in v4_only
    assert "table ip6 vpnlab {" in both and "delete table ip6 vpnlab" in both
    rule = 'ip6 saddr fd10:8::/64 ip6 daddr != fd10:8::/64 oifname "eth0" counter masquerade'
    assert rule in both


@pytest.mark.parametrize(
    "argv, mtu",
    [
        (["client", "--server", "198.51.100.2", "--cipher", "plain"], 1472),
        (["client", "--server", "2001:db8:2::2", "--cipher", "plain"], 1452),
        (["server", "--listen", "2001:db8:2::2", "--cipher", "plain"], 1452),
        (["server", "--listen", "::", "--cipher", "plain"], 1452),
    ],
)
def test_the_cli_derives_a_20_bytes_smaller_mtu_for_an_ipv6_outer_path(argv, mtu):
    from vpnlab.cli import build_parser
    from vpnlab.cli.daemons import mtu_of, wire

    args = build_parser().parse_args(argv)
    assert mtu_of(args, *wire(args)) == mtu


@pytest.mark.parametrize(
    "text, endpoint",
    [
        ("198.51.100.2", ("198.51.100.2", 4500)),
        ("198.51.100.2:4600", ("198.51.100.2", 4600)),
        ("2001:db8:2::2", ("2001:db8:2::2", 4500)),
        ("[2001:db8:2::2]:4600", ("2001:db8:2::2", 4600)),
    ],
)
def test_client_configs_take_ipv6_endpoints(text, endpoint):
    from vpnlab.shell.peers import format_endpoint, parse_endpoint

    host, port = parse_endpoint(text)
    assert (str(host), port) == endpoint
    assert parse_endpoint(format_endpoint(host, port)) == (host, port)
    for bad in ("", "[2001:db8::1]", "not-an-address", "198.51.100.2:x"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_the_default_lab_is_dual_stack_and_survives_its_record():
    from vpnlab.lab.topology import DEFAULT_TOPOLOGY, from_dict, make_topology

    topo = DEFAULT_TOPOLOGY
    assert topo.ipv6 and topo.dual_stack
    assert (topo.server_ip6, topo.web_ip6) == ("2001:db8:2::2", "2001:db8:3::10")
    assert topo.node("r1").address6() == "2001:db8:1::2" and topo.node("r1").gateway6
    assert make_topology(3).node("r4").address6() == "2001:db8:1::4"
    assert from_dict(topo.to_dict()) == topo  # the state record keeps the IPv6 addresses
    off = replace(topo, ipv6=False)
    assert not off.dual_stack and from_dict(off.to_dict()) == off
    site = make_topology(site_to_site=True)
    assert ("r1", "fd16:1::/64") in site.tunnel.lans and site.node("h2").address6() == "fd16:2::10"
