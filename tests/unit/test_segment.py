"""segment.py (vpnlab/fast/segment.py): TSO super-packets split like the kernel would, and
GRO-style coalescing. The checksum and the MSS clamp (vpnlab/core/packet.py): test_packet.py.

scapy is the independent judge: every segment is re-parsed and its IP and TCP checksums are
recomputed by scapy and compared with ours.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.packet import fold, ones_sum
from vpnlab.fast.segment import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    NO_OFFLOAD,
    VNET_HDR,
    coalesce,
    complete_checksum,
    complete_checksums,
    payload_sums,
    split,
)

from .helpers import super_v4


def super_v6(payload: bytes, seq: int = 1000, flags: str = "PA") -> bytes:
    packet = IPv6(src="fd00::2", dst="fd00::1") / TCP(sport=1, dport=2, seq=seq, flags=flags)
    return bytes(packet / payload)


def partial(packet: bytes, v6: bool = False) -> bytes:
    """The packet as tun0 hands it over with NEEDS_CSUM: checksum field = pseudo-header sum."""
    out = bytearray(packet)
    ihl = 40 if v6 else (packet[0] & 15) * 4
    addresses = ones_sum(packet[8:40]) if v6 else ones_sum(packet[12:20])
    out[ihl + 16 : ihl + 18] = fold(addresses + 6 + len(packet) - ihl).to_bytes(2, "big")
    return bytes(out)


def tso_header(mss: int, v6: bool = False, ecn: bool = False) -> bytes:
    kind = (GSO_TCPV6 if v6 else GSO_TCPV4) | (GSO_ECN if ecn else 0)
    return VNET_HDR.pack(F_NEEDS_CSUM, kind, 0, mss, 40 if v6 else 20, 16)


def assert_checksums_valid(segment: bytes) -> None:
    ours = IP(segment) if segment[0] >> 4 == 4 else IPv6(segment)
    again = ours.copy()
    if isinstance(ours, IP):
        del again.chksum
    del again[TCP].chksum
    again = type(ours)(bytes(again))
    if isinstance(ours, IP):
        assert ours.chksum == again.chksum
    assert ours[TCP].chksum == again[TCP].chksum


def test_split_not_a_multiple_of_the_mss():
    payload = os.urandom(1360 * 3 + 17)
    segments = split(tso_header(1360), partial(super_v4(payload)))
    assert [len(IP(s)[TCP].payload) for s in segments] == [1360, 1360, 1360, 17]
    assert b"".join(bytes(IP(s)[TCP].payload) for s in segments) == payload
    for segment in segments:
        assert_checksums_valid(segment)


def test_split_sequence_number_and_ip_id_wrap():
    payload = os.urandom(1000 * 4)
    segments = split(tso_header(1000), partial(super_v4(payload, seq=2**32 - 1500, ip_id=65535)))
    packets = [IP(s) for s in segments]
    assert [p[TCP].seq for p in packets] == [2**32 - 1500, 2**32 - 500, 500, 1500]
    assert [p.id for p in packets] == [65535, 0, 1, 2]
    assert all(p.len == len(s) for p, s in zip(packets, segments, strict=True))
    for segment in segments:
        assert_checksums_valid(segment)


def test_split_fin_and_psh_only_on_the_last_cwr_only_on_the_first():
    payload = os.urandom(3000)
    raw = partial(super_v4(payload, flags="FPAC"))
    flags = [int(IP(s)[TCP].flags) for s in split(tso_header(1000, ecn=True), raw)]
    assert flags == [0x10 | 0x80, 0x10, 0x10 | 0x08 | 0x01]


def test_split_moves_the_urgent_pointer_and_drops_urg_once_passed():
    payload = os.urandom(3000)
    raw = partial(super_v4(payload, flags="UA", urgptr=1500))
    packets = [IP(s)[TCP] for s in split(tso_header(1000), raw)]
    assert [int(p.flags) for p in packets] == [0x30, 0x30, 0x10]
    assert [p.urgptr for p in packets] == [1500, 500, 0]
    for segment in split(tso_header(1000), raw):
        assert_checksums_valid(segment)


def test_split_ipv6():
    payload = os.urandom(2500)
    segments = split(tso_header(1200, v6=True), partial(super_v6(payload), v6=True))
    packets = [IPv6(s) for s in segments]
    assert [p.plen for p in packets] == [20 + 1200, 20 + 1200, 20 + 100]
    assert b"".join(bytes(p[TCP].payload) for p in packets) == payload
    for segment in segments:
        assert_checksums_valid(segment)


def test_split_passes_non_tcp_through_untouched():
    ping = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / ICMP() / (b"x" * 100))
    assert split(NO_OFFLOAD, ping) == [ping]
    datagram = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / UDP(sport=1, dport=2) / b"y")
    assert split(NO_OFFLOAD, datagram) == [datagram]


def test_split_leaves_partial_checksums_of_acks_and_small_packets_to_complete_checksums():
    """A single packet with NEEDS_CSUM comes back as a Partial (the packet and its offsets),
    and ``complete_checksums`` finishes it as scapy would."""
    ack = super_v4(b"", flags="A")
    header = VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 20, 16)
    assert split(header, partial(ack)) == (partial(ack), 20, 16)
    datagram = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / UDP(sport=1, dport=2) / b"hi")
    half = bytearray(datagram)
    half[26:28] = fold(ones_sum(datagram[12:20]) + 17 + 10).to_bytes(2, "big")
    udp = split(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 20, 6), bytes(half))
    assert isinstance(udp, tuple)
    outside = split(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 5000, 16), super_v4(b""))
    assert isinstance(outside, tuple)
    assert complete_checksums([split(header, partial(ack)), udp, outside]) == [ack, datagram, None]


def test_split_refuses_gso_types_it_never_enabled_and_malformed_super_packets():
    with pytest.raises(LocalProtocolError):
        split(VNET_HDR.pack(0, 3, 0, 1000, 20, 6), super_v4(b"x" * 100))  # UDP GSO
    ping = bytes(IP() / ICMP())
    with pytest.raises(LocalProtocolError):
        split(tso_header(1000), ping)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 9000),
    mss=st.integers(1, 1460),
    seq=st.integers(0, 2**32 - 1),
    ip_id=st.integers(0, 65535),
)
def test_split_then_coalesce_round_trip(size, mss, seq, ip_id):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    segments = split(tso_header(mss), partial(super_v4(payload, seq=seq, ip_id=ip_id)))
    assert len(segments) == max(1, -(-size // mss))
    assert b"".join(bytes(IP(s)[TCP].payload) for s in segments) == payload
    for segment in segments[:3] + segments[-1:]:
        assert_checksums_valid(segment)
    writes = coalesce(segments)
    rebuilt = [IP(b"".join(bytes(b) for b in write[1:])) for write in writes]
    assert b"".join(bytes(p[TCP].payload) for p in rebuilt) == payload


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=6000), mss=st.integers(1, 1460))
def test_payload_sums_match_rfc1071_for_odd_and_even_mss(data, mss):
    """Each chunk's sum (numpy for two or more full chunks, odd MSS padded) is the RFC 1071
    sum of that chunk alone: the lab's default MSS, 1,395, is odd."""
    count = -(-len(data) // mss)
    sums = payload_sums(memoryview(data), mss, count)
    expected = [ones_sum(data[at : at + mss]) for at in range(0, len(data), mss)]
    assert [fold(s) for s in sums] == [fold(e) for e in expected]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=1500), st.integers(0, 1600), st.sampled_from([6, 16, 3])
        ),
        min_size=1,
        max_size=12,
    )
)
def test_complete_checksums_match_one_at_a_time(partials):
    """A run of single packets' checksums (numpy when they add up to 4 KB) are what
    ``complete_checksum`` makes of each; offsets outside a packet give None, not an error."""
    expected = []
    for packet, start, offset in partials:
        try:
            expected.append(complete_checksum(packet, start, offset))
        except LocalProtocolError:
            expected.append(None)
    assert complete_checksums(partials) == expected


def test_a_udp_run_gets_valid_checksums_from_one_numpy_call():
    datagrams = [
        partial_udp(
            bytes(
                IP(src="203.0.113.10", dst="10.8.0.2")
                / UDP(sport=5201, dport=40000)
                / os.urandom(1300)
            )
        )
        for _ in range(8)
    ]
    headers = [VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 20, 6) for _ in datagrams]
    reads = [split(h, d) for d, h in zip(datagrams, headers, strict=True)]
    partials = [read for read in reads if isinstance(read, tuple)]
    assert len(partials) == len(datagrams)
    for done in complete_checksums(partials):
        again = IP(done)
        del again[UDP].chksum
        assert IP(bytes(again))[UDP].chksum == IP(done)[UDP].chksum


def partial_udp(packet: bytes) -> bytes:
    """A UDP datagram as tun0 hands it over with NEEDS_CSUM: the field holds the pseudo-header
    sum (addresses, protocol 17, UDP length)."""
    out = bytearray(packet)
    length = len(packet) - 20
    out[26:28] = fold(ones_sum(packet[12:20]) + 17 + length).to_bytes(2, "big")
    return bytes(out)


def test_payload_sums_of_the_labs_default_mss():
    data = os.urandom(1395 * 46 + 7)
    sums = payload_sums(memoryview(data), 1395, 47)
    assert [fold(s) for s in sums] == [
        fold(ones_sum(data[a : a + 1395])) for a in range(0, len(data), 1395)
    ]


def test_coalesce_joins_a_run_into_one_gso_write():
    payload = os.urandom(1360 * 5 + 40)
    segments = split(tso_header(1360), partial(super_v4(payload)))
    (write,) = coalesce(segments)
    flags, kind, hdr_len, gso_size, start, offset = VNET_HDR.unpack(write[0])
    assert (flags, kind, hdr_len, gso_size, start, offset) == (1, GSO_TCPV4, 52, 1360, 20, 16)
    joined = b"".join(bytes(b) for b in write[1:])
    packet = IP(joined)
    assert packet.len == len(joined) and bytes(packet[TCP].payload) == payload
    assert int(packet[TCP].flags) == 0x18
    assert joined[36:38] == partial(joined)[36:38]  # the pseudo-header sum, for the kernel
    fixed = packet.copy()
    del fixed.chksum
    assert IP(bytes(fixed)).chksum == packet.chksum


def test_coalesce_joins_an_ipv6_run_into_one_gso_tcpv6_write():
    payload = os.urandom(1340 * 4 + 99)
    segments = split(tso_header(1340, v6=True), partial(super_v6(payload), v6=True))
    (write,) = coalesce(segments)
    flags, kind, hdr_len, gso_size, start, offset = VNET_HDR.unpack(write[0])
    assert (flags, kind, hdr_len, gso_size, start, offset) == (1, GSO_TCPV6, 60, 1340, 40, 16)
    joined = b"".join(bytes(b) for b in write[1:])
    packet = IPv6(joined)
    assert packet.plen == len(joined) - 40 and bytes(packet[TCP].payload) == payload
    assert int(packet[TCP].flags) == 0x18  # PSH of the last segment kept
    assert joined[56:58] == partial(joined, v6=True)[56:58]  # the pseudo-header sum


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 9000), mss=st.integers(1, 1440), seq=st.integers(0, 2**32 - 1))
def test_split_then_coalesce_round_trip_ipv6(size, mss, seq):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    segments = split(tso_header(mss, v6=True), partial(super_v6(payload, seq=seq), v6=True))
    writes = coalesce(segments)
    rebuilt = [IPv6(b"".join(bytes(b) for b in write[1:])) for write in writes]
    assert b"".join(bytes(p[TCP].payload) for p in rebuilt) == payload
    assert len(writes) <= len(segments)


def test_coalesce_gro_batch_with_a_short_last_datagram_ends_the_run():
    first = split(tso_header(1000), partial(super_v4(os.urandom(2500), flags="A")))
    after = split(tso_header(1000), partial(super_v4(os.urandom(1000), seq=3500, flags="A")))
    writes = coalesce(first + after)
    assert len(writes) == 2  # the 500-byte segment closed the first run
    assert VNET_HDR.unpack(writes[0][0])[3] == 1000
    assert writes[1][0] == NO_OFFLOAD and len(writes[1]) == 2


def test_coalesce_keeps_other_flows_acks_and_gaps_apart():
    data = split(tso_header(1000), partial(super_v4(os.urandom(3000), flags="A")))
    ack = super_v4(b"", flags="A")
    ping = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / ICMP())
    other = bytes(IP(src="10.8.0.3", dst="203.0.113.10") / TCP(flags="A", seq=2000) / (b"z" * 1000))
    writes = coalesce([data[0], ack, data[1], ping, data[2], other])
    assert len(writes) == 6 and all(w[0] == NO_OFFLOAD for w in writes)
    gap = coalesce([data[0], data[2]])
    assert len(gap) == 2  # sequence numbers not consecutive
    assert [b"".join(w[1:]) for w in gap] == [data[0], data[2]]
