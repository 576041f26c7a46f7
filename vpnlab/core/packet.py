"""IPv4, TCP and Ethernet field helpers that both data paths and the cores use.

Pure functions on bytes: where a field sits, and the one's complement checksum of RFC 1071.
Checksums use one trick: a byte string read as one big integer is a sum of 16-bit words times
powers of 2**16, and 2**16 = 1 (mod 0xFFFF), so ``int.from_bytes(data) % 0xFFFF`` is the one's
complement sum, computed in C.
"""

from __future__ import annotations

from ipaddress import IPv4Address

IPV4_HEADER_BYTES = 20
"""An IPv4 header without options."""
TCP_HEADER_BYTES = 20
"""A TCP header without options."""
TCP_IP_HEADERS_BYTES = IPV4_HEADER_BYTES + TCP_HEADER_BYTES
"""The MSS clamp is the tun MTU less these (40)."""
ETHERNET_HEADER_BYTES = 14
"""Destination MAC, source MAC, EtherType: what a frame adds to the IP packet it carries."""

PROTO_TCP = 6
PROTO_UDP = 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
TCP_OPT_MSS = 2


def is_ipv4(packet: bytes) -> bool:
    """Whether ``packet`` starts like an IPv4 packet (version 4, room for a header)."""
    return len(packet) >= IPV4_HEADER_BYTES and packet[0] >> 4 == 4


def ipv4_source(packet: bytes) -> IPv4Address | None:
    """The source address of an IPv4 packet, or None if ``packet`` is not IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return IPv4Address(packet[12:16])


def ipv4_destination(packet: bytes) -> IPv4Address | None:
    """The destination address of an IPv4 packet, or None if ``packet`` is not IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return IPv4Address(packet[16:20])


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """An integer congruent (mod 0xFFFF) to the RFC 1071 sum of ``data`` (odd: a zero pad)."""
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


def fold(total: int) -> int:
    """The 16-bit one's complement sum of everything added into ``total`` (0 only if zero)."""
    rest = total % 0xFFFF
    return rest if rest or not total else 0xFFFF


def finish(total: int) -> int:
    """The checksum field for data whose sums add up to ``total``: the complement of the sum."""
    return 0xFFFF - fold(total)


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 checksum of ``data`` (e.g. an IPv4 header with its checksum field zeroed)."""
    return finish(ones_sum(data))


def clamp_mss(packet: bytes, mss: int) -> bytes:
    """MSS clamping: lower the MSS option of a TCP SYN (IPv4) to ``mss``; else unchanged.

    The checksum is updated incrementally (RFC 1624), so a valid packet stays valid. Never
    raises: a header or an option that claims bytes past the packet's end leaves it unchanged.
    """
    if len(packet) < 44 or packet[0] >> 4 != 4 or packet[9] != PROTO_TCP:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if ihl < IPV4_HEADER_BYTES or len(packet) < ihl + 20 or not packet[ihl + 13] & SYN:
        return packet
    end = min(len(packet), ihl + (packet[ihl + 12] >> 4) * 4)  # options never past the end
    at = ihl + 20
    while at < end:
        kind = packet[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= end:
            break
        length = packet[at + 1]
        if length < 2:
            break
        if kind == TCP_OPT_MSS and length == 4 and at + 4 <= end:
            old = int.from_bytes(packet[at + 2 : at + 4], "big")
            if old <= mss:
                return packet
            out = bytearray(packet)
            out[at + 2 : at + 4] = mss.to_bytes(2, "big")
            check = int.from_bytes(out[ihl + 16 : ihl + 18], "big")
            # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
            value = fold((0xFFFF - check) + (0xFFFF - old) + mss)
            out[ihl + 16 : ihl + 18] = (0xFFFF - value).to_bytes(2, "big")
            return bytes(out)
        at += length
    return packet
