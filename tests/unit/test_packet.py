"""packet.py (vpnlab/core/packet.py): the Internet checksum and the MSS clamp of TCP SYNs (which
both cores apply to what they read from tun0).

scapy is the independent judge: it recomputes the checksum of every packet we change.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from vpnlab.core.events import PacketReceived
from vpnlab.core.packet import clamp_mss, fold, internet_checksum, ones_sum
from vpnlab.wire.plain import PLAIN

from .helpers import CorePair, super_v4

TCP_OPT_NOP = 1


def test_checksum_known_answer_rfc1071():
    """RFC 1071 section 3's example words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d)."""
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fold(ones_sum(data)) == 0xDDF2
    assert internet_checksum(data) == 0x220D
    assert internet_checksum(b"\x01") == 0xFEFF  # odd length: padded with a zero byte


def test_clamp_mss_lowers_only_larger_syn_options():
    syn = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / TCP(flags="S", options=[("MSS", 1460)]))
    clamped = IP(clamp_mss(syn, 1360))
    assert dict(clamped[TCP].options)["MSS"] == 1360
    fixed = clamped.copy()
    del fixed[TCP].chksum
    assert IP(bytes(fixed))[TCP].chksum == clamped[TCP].chksum
    small = bytes(IP() / TCP(flags="S", options=[("NOP", None), ("MSS", 1200)]))
    assert clamp_mss(small, 1360) == small
    data = super_v4(b"x" * 100)
    assert clamp_mss(data, 536) == data


def test_clamp_mss_survives_options_claimed_past_the_end():
    """A 44-byte SYN whose data offset (15 words) claims 40 bytes of options it does not have."""
    syn = bytearray(bytes(IP(src="10.8.0.2", dst="203.0.113.10") / TCP(flags="S")))
    syn[32] = 0xF0  # data offset 15: options up to byte 80
    syn += bytes((TCP_OPT_NOP, TCP_OPT_NOP, TCP_OPT_NOP, 2))  # an MSS kind as the last byte
    assert clamp_mss(bytes(syn), 1360) == bytes(syn)


@settings(max_examples=2000, deadline=None)
@given(
    tcp=st.binary(min_size=20, max_size=80),
    ihl=st.integers(0, 15),
    cut=st.integers(0, 100),
)
def test_clamp_mss_never_raises(tcp: bytes, ihl: int, cut: int):
    """Any bytes with an IPv4/TCP start (SYN set or not, any IHL, any length) come back bytes."""
    header = bytearray(20 + 4 * max(0, ihl - 5))
    header[0] = 0x40 | ihl
    header[9] = 6
    packet = (bytes(header) + tcp)[: 44 + cut]
    assert isinstance(clamp_mss(packet, 1360), bytes)
    assert isinstance(clamp_mss(packet[: cut % 60], 1360), bytes)


def test_both_cores_clamp_the_mss_of_syns_they_seal():
    """The clamp is the cores' (``mss_clamp``, tun0's MTU - 40): a SYN read from tun0 leaves
    the tunnel with its MSS lowered, on the client and on the server, whichever data path
    read it; without ``mss_clamp`` (TAP mode) it is left alone."""
    pair = CorePair(PLAIN, mss_clamp=1360)
    pair.client.mss_clamp = 1360
    pair.connect()
    pair.client.tunnel_up(pair.now)
    pair.client_to_server()
    client, server = str(pair.client.session.tunnel_address.ip), "203.0.113.10"
    out = bytes(IP(src=client, dst=server) / TCP(flags="S", options=[("MSS", 1460)]))
    assert pair.client.send_packets([out], pair.now) == []
    pair.client_to_server()
    back = bytes(IP(src=server, dst=client) / TCP(flags="SA", options=[("MSS", 1460)]))
    assert pair.server.send_packets([back], pair.now) == []
    pair.server_to_client()
    arrived = [
        e.packet for e in pair.server_events + pair.client_events if type(e) is PacketReceived
    ]
    assert [dict(IP(p)[TCP].options)["MSS"] for p in arrived] == [1360, 1360]
    pair.client.mss_clamp = None
    pair.client.send_packets([out], pair.now)
    pair.client_to_server()
    assert pair.server_events[-1].packet == out
