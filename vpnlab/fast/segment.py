"""TunSelected / SockSelected, batched: TCP super-packets split and joined again, in pure Python.

With offloads on (``fastpath.py``), every read from tun0 starts with a 10-byte
``virtio_net_hdr`` and may carry a TCP *super-packet* of up to 64 KB whose checksum the kernel
left for us to finish (``NEEDS_CSUM``)::

    struct virtio_net_hdr {        little-endian on x86, 10 bytes
        u8  flags;                 1: NEEDS_CSUM (the checksum field holds the pseudo-header sum)
        u8  gso_type;              0 none, 1 TCPV4, 4 TCPV6 (| 0x80: ECN/CWR seen)
        u16 hdr_len;               IP + TCP header bytes
        u16 gso_size;              the MSS: payload bytes per segment
        u16 csum_start;            where the checksummed part starts (the TCP header)
        u16 csum_offset;           where in it the checksum field sits (16 for TCP)
    };

:func:`split` cuts such a super-packet into ordinary MSS-sized IP packets, exactly as the
kernel's own segmentation would (sequence numbers, IP id and length, PSH/FIN only on the last
segment, CWR only on the first, full checksums), so each one can be sealed into an ordinary ESP
packet. :func:`coalesce` does the reverse on the receiving side: consecutive segments of one TCP
flow become one super-packet written to tun0 with a GSO header, so the kernel's stack sees one
packet instead of forty.

The checksum arithmetic (``ones_sum``, ``fold``, ``finish``) is in ``core/packet.py``, shared
with the MSS clamp of both paths. Pure code: no socket, no os.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.packet import (
    ACK,
    CWR,
    FIN,
    PROTO_TCP,
    PSH,
    URG,
    finish,
    fold,
    internet_checksum,
    ones_sum,
)


@functools.cache
def _numpy() -> Any:
    """numpy (a matplotlib dependency) sums all segments of a super-packet in one call. Loaded
    at the first super-packet, not at start: it is 20 MB of a daemon that may never see one.
    None without numpy (the pure-Python sums are used instead)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover
        return None
    return numpy


VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80
IPV4_HEAD = struct.Struct("!2sHH4sH8s")
"""Version/IHL, TOS | total length | id | flags, fragment, TTL, protocol | checksum | addresses."""
TCP_HEAD = struct.Struct("!4sI5sB2sHH")
"""Ports | seq | ack, data offset | flags | window | checksum | urgent pointer (no options)."""
NO_OFFLOAD = bytes(VNET_HDR_LEN)
"""The header of an ordinary, complete packet (no GSO, checksum already done)."""

MAX_IP_PACKET = 65535
Write = list[bytes | memoryview]
"""The buffers of one tun write (writev): the virtio_net_hdr, then the packet, or the joined
segments' headers and their payloads as views of the segments they came in."""


def _pseudo_addresses(packet: bytes | bytearray, version: int) -> int:
    return ones_sum(packet[12:20]) if version == 4 else ones_sum(packet[8:40])


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """NEEDS_CSUM: the field holds the pseudo-header sum; add the rest and store the result.

    Raises:
        LocalProtocolError: the offsets point outside the packet.
    """
    at = csum_start + csum_offset
    if at + 2 > len(packet) or csum_start >= len(packet):
        raise LocalProtocolError("checksum offsets outside the packet")
    return _with_checksum(
        packet, at, finish(ones_sum(memoryview(packet)[csum_start:])), csum_offset
    )


def _with_checksum(packet: bytes, at: int, value: int, csum_offset: int) -> bytes:
    """``packet`` with ``value`` in its checksum field at ``at``."""
    if value == 0 and csum_offset == 6:  # UDP: 0 means "no checksum"; send 0xFFFF instead
        value = 0xFFFF
    out = bytearray(packet)
    out[at : at + 2] = value.to_bytes(2, "big")
    return bytes(out)


Partial = tuple[bytes, int, int]
"""``(packet, csum_start, csum_offset)``: a read that is one packet whose checksum the kernel
left to us (NEEDS_CSUM, no GSO: a forwarded UDP datagram, a TCP ACK). :func:`complete_checksums`
finishes a run of them together. A plain tuple: a NamedTuple costs 0.2 us more per packet."""


def complete_checksums(partials: list[Partial]) -> list[bytes | None]:
    """:func:`complete_checksum` for the single packets of several reads, in order; None for
    one whose offsets point outside it.

    Where they add up to :data:`BATCH_SUM_BYTES` or more, their sums come from one numpy call
    (``add.reduceat`` over their checksummed parts, each padded to whole 16-bit words as RFC
    1071 pads odd data): 1.4 us per 1,328-byte datagram in all, where one at a time took 3.7.
    """
    np = _numpy() if len(partials) > 1 else None
    if np is None or sum(len(p) for p, _, _ in partials) < BATCH_SUM_BYTES:
        return [_complete_or_none(*partial) for partial in partials]
    valid = [start + offset + 2 <= len(p) and start < len(p) for p, start, offset in partials]
    parts = bytearray()
    starts = []
    for (packet, start, _), ok in zip(partials, valid, strict=True):
        if ok:
            starts.append(len(parts) // 2)
            parts += memoryview(packet)[start:]
            if len(parts) & 1:
                parts.append(0)
    words = np.frombuffer(parts, dtype=">u2")
    sums = iter(np.add.reduceat(words, starts, dtype=np.uint64).tolist())
    return [
        _with_checksum(packet, start + offset, finish(next(sums)), offset) if ok else None
        for (packet, start, offset), ok in zip(partials, valid, strict=True)
    ]


BATCH_SUM_BYTES = 4096
"""Below this many bytes in all, the single packets' sums are cheaper in pure Python (numpy's
call costs about 2 us however little it sums)."""


def _complete_or_none(packet: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    try:
        return complete_checksum(packet, csum_start, csum_offset)
    except LocalProtocolError:
        return None


def split(header: bytes, packet: bytes) -> list[bytes] | Partial:
    """TunSelected with offloads: one read from tun0 (header, packet), its header unpacked once.

    Args:
        header: the 10-byte virtio_net_hdr in front of the packet.
        packet: the IP packet or TCP super-packet after it.

    Returns:
        A super-packet's segments, complete with valid checksums, in order; a packet without
        GSO as it is ([packet]), or as a :data:`Partial` if the kernel left its checksum to
        us (its offsets are checked where it is completed).

    Raises:
        LocalProtocolError: a GSO type we never enabled, or a malformed super-packet.
    """
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack(header)
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            return packet, csum_start, csum_offset
        return [packet]
    if kind in (GSO_TCPV4, GSO_TCPV6):
        return split_tcp(packet, gso_size)
    raise LocalProtocolError(f"gso type {gso_type} not enabled")


def split_tcp(packet: bytes, mss: int) -> list[bytes]:
    """Cut a TCP super-packet (IPv4 or IPv6) into segments of at most ``mss`` payload bytes.

    Every segment gets: sequence number + offset; IPv4 id + index and total length (or the
    IPv6 payload length); FIN and PSH only on the last, CWR only on the first; URG with the
    urgent pointer moved while the urgent byte is still ahead; full IP and TCP checksums.

    Raises:
        LocalProtocolError: not TCP, IPv6 extension headers, a truncated header, or mss 0.
    """
    version, ihl, head = _tcp_geometry(packet, mss)
    tcp_len = head - ihl
    payload = memoryview(packet)[head:]
    tcp = packet[ihl:head]
    seq0 = int.from_bytes(tcp[4:8], "big")
    flags0 = tcp[13]
    urgent_at = seq0 + int.from_bytes(tcp[18:20], "big") if flags0 & URG else None
    ports, ack_offset, window, options = tcp[0:4], tcp[8:13], tcp[14:16], tcp[20:]
    # What every segment's TCP checksum shares: pseudo-header addresses and protocol, ports,
    # ack, data offset, window, options. Per segment: seq, flags, urgent, length, payload.
    tcp_fixed = (
        _pseudo_addresses(packet, version)
        + PROTO_TCP
        + ones_sum(ports)
        + ones_sum(tcp[8:12])
        + (tcp[12] << 8)
        + ones_sum(window)
        + ones_sum(options)
    )
    ip_head = _ip_header_maker(packet[:ihl], version)
    out = []
    count = max(1, -(-len(payload) // mss))
    sums = payload_sums(payload, mss, count)
    for index in range(count):
        offset = index * mss
        chunk = payload[offset : offset + mss]
        flags, urgent = _segment_flags(flags0, index, count, urgent_at, seq0 + offset)
        seq = (seq0 + offset) & 0xFFFFFFFF
        segment_len = tcp_len + len(chunk)
        total = tcp_fixed + flags + (seq >> 16) + (seq & 0xFFFF) + urgent + segment_len
        check = finish(total + sums[index])
        tcp_head = TCP_HEAD.pack(ports, seq, ack_offset, flags, window, check, urgent)
        out.append(b"".join((ip_head(segment_len, index), tcp_head, options, chunk)))
    return out


def _tcp_geometry(packet: bytes, mss: int) -> tuple[int, int, int]:
    """IP version, IP header length and IP + TCP header length of a TCP super-packet.

    Raises:
        LocalProtocolError: as :func:`split_tcp`.
    """
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9] if len(packet) >= 20 else -1
    elif version == 6:
        ihl = 40
        proto = packet[6] if len(packet) >= 40 else -1
    else:
        raise LocalProtocolError("super-packet is not IP")
    if proto != PROTO_TCP or len(packet) < ihl + 20:
        raise LocalProtocolError("super-packet is not plain TCP")
    tcp_len = (packet[ihl + 12] >> 4) * 4
    head = ihl + tcp_len
    if tcp_len < 20 or len(packet) < head or mss <= 0:
        raise LocalProtocolError("super-packet with a bad TCP header")
    return version, ihl, head


def _segment_flags(
    flags0: int, index: int, count: int, urgent_at: int | None, seq: int
) -> tuple[int, int]:
    """TCP flags and urgent pointer of segment ``index`` of ``count`` (starting at ``seq``)."""
    flags = flags0 if index == count - 1 else flags0 & ~(FIN | PSH)
    if index:
        flags &= ~CWR
    urgent = 0
    if urgent_at is not None:
        ahead = urgent_at - seq
        if 0 < ahead <= 0xFFFF:
            urgent = ahead
        else:
            flags &= ~URG
    return flags, urgent


def _ip_header_maker(ip: bytes, version: int) -> Callable[[int, int], bytes]:
    """A function (TCP segment length, index) -> that segment's IP header.

    IPv4: total length, id + index and a fresh checksum (the rest of the sum is computed once);
    IPv6: the payload length.
    """
    if version != 4:
        return lambda segment_len, index: ip[0:4] + segment_len.to_bytes(2, "big") + ip[6:]
    ihl = len(ip)
    ip_fixed = ones_sum(ip[0:2]) + ones_sum(ip[6:10]) + ones_sum(ip[12:])
    ip_id0 = int.from_bytes(ip[4:6], "big")
    options = ip[20:]

    def header(segment_len: int, index: int) -> bytes:
        length, ip_id = ihl + segment_len, (ip_id0 + index) & 0xFFFF
        check = finish(ip_fixed + length + ip_id)
        return IPV4_HEAD.pack(ip[0:2], length, ip_id, ip[6:10], check, ip[12:20]) + options

    return header


def payload_sums(payload: memoryview, mss: int, count: int) -> list[int]:
    """The one's complement sums of the ``count`` MSS-sized chunks of ``payload``.

    The full chunks are summed in one numpy call: each row of a ``count x mss`` array of
    bytes is one segment, read as big-endian 16-bit words; an odd MSS gets a zero byte at the
    end of each row first, as RFC 1071 pads odd data. About 0.3 us per segment (0.4 with an
    odd MSS) instead of 1.5 us for ``int.from_bytes(...) % 0xFFFF`` on each chunk. An odd MSS
    is the lab's default: esp-aes-gcm's derived tun MTU of 1,435 clamps it to 1,395, and
    before the padding such segments took the slow way (``docs/performance.md``, *An odd
    MSS*).
    """
    full = len(payload) // mss
    np = _numpy() if full >= 2 else None
    if np is None:
        return [ones_sum(payload[at : at + mss]) for at in range(0, count * mss, mss)]
    rows = np.frombuffer(payload[: full * mss], dtype=np.uint8).reshape(full, mss)
    if mss & 1:
        padded = np.zeros((full, mss + 1), dtype=np.uint8)
        padded[:, :mss] = rows
        rows = padded
    sums: list[int] = rows.view(">u2").sum(axis=1, dtype=np.uint64).tolist()
    if full < count:
        sums.append(ones_sum(payload[full * mss :]))
    return sums


FlowKey = tuple[int | bytes, ...]
"""What every segment of a coalesced run shares (:func:`_segment`): header fields and bytes."""

SEGMENT_HEAD = struct.Struct("!BBH2xHBB2x8s4sI5sB2s")
"""What coalescing reads of an IPv4/TCP segment, in one call: version/IHL, TOS, total length,
flags/fragment, TTL, protocol, addresses, ports, seq, ack + data offset, TCP flags, window."""
SEGMENT6_HEAD = struct.Struct("!4sHBB32s4sI5sB2s")
"""The same of an IPv6/TCP segment: version/class/flow label, payload length, next header,
hop limit, addresses, then the TCP fields as above."""


def _segment(packet: bytes) -> tuple[int, int, FlowKey] | None:
    """(seq, IP+TCP header length, flow key) of a coalescable TCP data segment, else None.

    Coalescable: IPv4 without options and not a fragment, or IPv6 without extension headers;
    a TCP header of at least 20 bytes, some payload, the length fields right, and only ACK
    (maybe PSH) set. The key is what every segment of a run must share: TOS (or traffic class
    and flow label), TTL (hop limit), addresses, ports, ack, header length, window and TCP
    options (PSH is checked apart: it may differ on the last segment).
    """
    if len(packet) >= 60 and packet[0] >> 4 == 6:
        return _segment6(packet)
    if len(packet) < 40:
        return None
    ver_ihl, tos, total, frag, ttl, proto, addresses, ports, seq, ack_offset, flags, window = (
        SEGMENT_HEAD.unpack_from(packet)
    )
    head = 20 + (ack_offset[4] >> 4) * 4
    if (
        ver_ihl != 0x45
        or proto != PROTO_TCP
        or frag & 0x3FFF  # a fragment (MF or an offset)
        or head < 40
        or not head < len(packet) == total
        or flags & ~PSH != ACK
    ):
        return None
    return seq, head, (tos, ttl, addresses, ports, ack_offset, window, packet[40:head])


def _segment6(packet: bytes) -> tuple[int, int, FlowKey] | None:
    """:func:`_segment` for IPv6: TCP right after the 40-byte header."""
    flow, length, next_header, hops, addresses, ports, seq, ack_offset, flags, window = (
        SEGMENT6_HEAD.unpack_from(packet)
    )
    head = 40 + (ack_offset[4] >> 4) * 4
    if (
        next_header != PROTO_TCP
        or head < 60
        or not head < len(packet) == 40 + length
        or flags & ~PSH != ACK
    ):
        return None
    return seq, head, (flow, hops, addresses, ports, ack_offset, window, packet[60:head])


class _Flow:
    """One run of consecutive TCP segments being joined (see :func:`coalesce`)."""

    __slots__ = ("ip", "tcp", "key", "parts", "next_seq", "gso_size", "length", "psh")

    def __init__(self, packet: bytes, seq: int, head: int, key: FlowKey) -> None:
        ihl = 40 if packet[0] >> 4 == 6 else 20
        self.ip = bytearray(packet[:ihl])
        self.tcp = bytearray(packet[ihl:head])
        self.key = key
        self.parts = [memoryview(packet)[head:]]
        self.gso_size = len(packet) - head
        self.next_seq = (seq + self.gso_size) & 0xFFFFFFFF
        self.length = len(packet)
        self.psh = bool(packet[ihl + 13] & PSH)


def coalesce(packets: list[bytes], max_bytes: int = MAX_IP_PACKET) -> list[Write]:
    """SockSelected with offloads: join consecutive segments of a TCP flow for one tun write.

    A segment joins the one before it when it belongs to the same TCP flow (addresses, ports),
    carries the same ACK number, window, TTL/TOS and options, starts where the previous one
    ended, and is no longer than the first; a shorter one, or one with PSH, ends the run.

    Args:
        packets: complete IP packets, in the order they arrived.
        max_bytes: largest super-packet to build.

    Returns:
        One list of buffers per tun write: ``[virtio_net_hdr, packet]`` for a packet passed
        through, ``[virtio_net_hdr, ip header, tcp header, payload, payload, ...]`` for a
        super-packet (GSO_TCPV4 or GSO_TCPV6, NEEDS_CSUM, the checksum field holding the
        pseudo-header sum).
    """
    writes: list[Write] = []
    flow: _Flow | None = None
    for packet in packets:
        segment = _segment(packet)
        if flow is not None:
            if segment is not None:
                seq, head, key = segment
                size = len(packet) - head
                if (
                    seq == flow.next_seq
                    and not flow.psh
                    and size <= flow.gso_size
                    and flow.length + size <= max_bytes
                    and key == flow.key
                ):
                    flow.parts.append(memoryview(packet)[head:])
                    flow.length += size
                    flow.next_seq = (seq + size) & 0xFFFFFFFF
                    flow.psh = bool(packet[len(flow.ip) + 13] & PSH) or size < flow.gso_size
                    continue
            writes.append(_flow_write(flow))
            flow = None
        if segment is None:
            writes.append([NO_OFFLOAD, packet])
            continue
        flow = _Flow(packet, *segment)
    if flow is not None:
        writes.append(_flow_write(flow))
    return writes


def _flow_write(flow: _Flow) -> Write:
    if len(flow.parts) == 1:  # nothing joined: the packet as it came, checksum intact
        return [NO_OFFLOAD, bytes(flow.ip) + bytes(flow.tcp) + bytes(flow.parts[0])]
    ip, tcp = flow.ip, flow.tcp
    ihl, tcp_len = len(ip), len(tcp)
    if ihl == 40:  # IPv6: the payload length; no header checksum
        ip[4:6] = (flow.length - 40).to_bytes(2, "big")
        pseudo, kind = ones_sum(ip[8:40]), GSO_TCPV6
    else:
        ip[2:4] = flow.length.to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = internet_checksum(ip).to_bytes(2, "big")
        pseudo, kind = ones_sum(ip[12:20]), GSO_TCPV4
    if flow.psh:
        tcp[13] |= PSH
    tcp[16:18] = fold(pseudo + PROTO_TCP + flow.length - ihl).to_bytes(2, "big")
    header = VNET_HDR.pack(F_NEEDS_CSUM, kind, ihl + tcp_len, flow.gso_size, ihl, 16)
    return [header, bytes(ip), bytes(tcp), *flow.parts]
