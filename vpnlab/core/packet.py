"""IPv4, IPv6, TCP and Ethernet field helpers that both data paths and the cores use.

Pure functions on bytes: where a field sits, and the one's complement checksum of RFC 1071.
An IPv6 header is 40 bytes, always; the field a parser wants sits at a fixed place in both:

    IPv4 (20+)   version/IHL 0 | protocol 9     | source 12:16 | destination 16:20
    IPv6 (40)    version 0     | next header 6  | source 8:24  | destination 24:40

Extension headers (hop-by-hop, routing, fragment, ...) are not walked: a packet whose next
header is not TCP is simply not TCP here (the MSS clamp leaves it alone), which is all the
tunnel needs (it routes by addresses, never by ports).
Checksums use one trick: a byte string read as one big integer is a sum of 16-bit words times
powers of 2**16, and 2**16 = 1 (mod 0xFFFF), so ``int.from_bytes(data) % 0xFFFF`` is the one's
complement sum, computed in C.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

IPV4_HEADER_BYTES = 20
"""An IPv4 header without options."""
IPV6_HEADER_BYTES = 40
"""An IPv6 header: fixed size (extension headers follow it, each in its own header)."""
IPV6_EXTRA_BYTES = IPV6_HEADER_BYTES - IPV4_HEADER_BYTES
"""What IPv6 costs more than IPv4 per packet (20): a smaller MSS, a smaller tun MTU outside."""
IPV6_MIN_MTU = 1280
"""RFC 8200: every IPv6 link carries 1280 bytes; Linux turns IPv6 off on a smaller device."""
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


def ip_version(packet: bytes) -> int:
    """4 or 6 if ``packet`` starts like an IPv4 or IPv6 packet with room for its header, else 0."""
    if not packet:
        return 0
    version = packet[0] >> 4
    if version == 4 and len(packet) >= IPV4_HEADER_BYTES:
        return 4
    if version == 6 and len(packet) >= IPV6_HEADER_BYTES:
        return 6
    return 0


def source_bytes(packet: bytes) -> bytes:
    """The source address field of an IPv4 (4 bytes) or IPv6 (16) packet; b"" if neither.
    (``ip_version`` written out: the server reads this for every packet from a client.)"""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_HEADER_BYTES:
        return packet[12:16]
    return packet[8:24] if version == 6 and len(packet) >= IPV6_HEADER_BYTES else b""


def destination_bytes(packet: bytes) -> bytes:
    """The destination address field of an IPv4 (4 bytes) or IPv6 (16) packet; b"" if neither.
    (``ip_version`` written out: the server reads this for every packet from tun0.)"""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_HEADER_BYTES:
        return packet[16:20]
    return packet[24:40] if version == 6 and len(packet) >= IPV6_HEADER_BYTES else b""


def ip_source(packet: bytes) -> IPv4Address | IPv6Address | None:
    """The source address of an IPv4 or IPv6 packet, or None if it is neither."""
    raw = source_bytes(packet)
    return ip_address(raw) if raw else None


def ip_destination(packet: bytes) -> IPv4Address | IPv6Address | None:
    """The destination address of an IPv4 or IPv6 packet, or None if it is neither."""
    raw = destination_bytes(packet)
    return ip_address(raw) if raw else None


def unmapped(host: str) -> str:
    """A peer of a dual-stack socket (``--listen ::``) as it is on the wire: an IPv4 client
    arrives as ``::ffff:192.0.2.2`` and is ``192.0.2.2``; any other address is itself."""
    return host[7:] if host[:7].lower() == "::ffff:" and "." in host else host


def is_link_scope(packet: bytes) -> bool:
    """An IPv6 packet that belongs to the link it was sent on, never to be routed: from
    ``::`` or a link-local fe80::/10 address, or to link-local (fe80::/10) or link-scope
    multicast (ff02::/16). A fresh tun0's router solicitations and MLD reports are such."""
    if ip_version(packet) != 6:
        return False
    source, destination = packet[8:24], packet[24:40]
    return (
        source == bytes(16)
        or source[0] == 0xFE
        and source[1] & 0xC0 == 0x80
        or destination[0] == 0xFE
        and destination[1] & 0xC0 == 0x80
        or destination[0] == 0xFF
        and destination[1] & 0x0F == 0x02
    )


def tcp_offset(packet: bytes) -> int | None:
    """Where the TCP header of an IPv4 or IPv6 packet starts; None if it carries no TCP (or
    an IPv6 extension header first, which is not walked)."""
    version = ip_version(packet)
    if version == 4 and packet[9] == PROTO_TCP:
        ihl = (packet[0] & 0x0F) * 4
        return ihl if IPV4_HEADER_BYTES <= ihl <= len(packet) else None  # options all there
    if version == 6 and packet[6] == PROTO_TCP:
        return IPV6_HEADER_BYTES
    return None


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


def _swapped(word: int) -> int:
    """A 16-bit value with its two bytes swapped: what it adds to a one's complement sum when
    it starts at an odd offset (RFC 1071 2.B: the sum is byte-order independent)."""
    return (word & 0xFF) << 8 | word >> 8


def clamp_mss(packet: bytes, mss: int) -> bytes:
    """MSS clamping: lower the MSS option of a TCP SYN to ``mss``; anything else unchanged.

    ``mss`` is the IPv4 clamp, the tun MTU less 40 (IPv4 20 + TCP 20); an IPv6 SYN gets 20
    less (its header is 40 bytes). The checksum is updated incrementally (RFC 1624), which
    holds for IPv6's pseudo-header as for IPv4's: the addresses do not change, only the
    option's word. Never raises: a header or an option that claims bytes past the packet's
    end leaves it unchanged.
    """
    if len(packet) > 33 and packet[0] == 0x45 and (packet[9] != PROTO_TCP or not packet[33] & SYN):
        return packet  # IPv4 without options, no TCP SYN: nearly every packet, told at once
    ihl = tcp_offset(packet)
    if ihl is None or len(packet) < ihl + 24 or not packet[ihl + 13] & SYN:
        return packet
    if packet[0] >> 4 == 6:
        mss -= IPV6_EXTRA_BYTES
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
            word_old, word_new = old, mss
            if (at - ihl) & 1:  # the field straddles two 16-bit words: it sums byte-swapped
                word_old, word_new = _swapped(old), _swapped(mss)
            # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
            value = fold((0xFFFF - check) + (0xFFFF - word_old) + word_new)
            out[ihl + 16 : ihl + 18] = (0xFFFF - value).to_bytes(2, "big")
            return bytes(out)
        at += length
    return packet
