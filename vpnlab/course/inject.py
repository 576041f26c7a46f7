"""The hidden tests' hostile traffic: crafted packets sent from inside a lab node.

The code exercises (notebooks 4, 5, 12) are checked by behaviour, and behaviour under attack is
part of it: a datagram from a stranger, one from the peer's address but another port, a packet
whose inner source is forged, a truncated or garbage datagram. This module builds those
packets (an ICMP echo request with a marker ``ident``, found again in a capture) and sends
them from a node's namespace: an ordinary UDP socket bound to a port of our choice, or a raw
socket when the datagram must carry a source port another process holds (the peer's 4500).
"""

from __future__ import annotations

import socket
import struct
from contextlib import closing
from pathlib import Path

from vpnlab.core.constants import PORT
from vpnlab.core.packet import internet_checksum
from vpnlab.course.notebook import CourseLab, netns
from vpnlab.instruments import capture


def icmp_echo(src: str, dst: str, ident: int, payload: bytes = b"vpnlab hidden test") -> bytes:
    """An IPv4 ICMP echo request ``src`` -> ``dst`` (TTL 64, checksums right) with ``ident``:
    a packet the kernel forwards as it is, recognisable in a capture by its ident."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        ident,
        0,
        64,
        1,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp


def send_udp(lab: CourseLab, node: str, source_port: int, dst: str, payload: bytes) -> None:
    """One datagram from ``node``'s own address, port ``source_port``, to ``dst``:4500."""
    with netns(lab.ns(node)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with closing(sock):
        sock.bind(("0.0.0.0", source_port))
        sock.sendto(payload, (dst, PORT))


def send_udp_raw(lab: CourseLab, node: str, source_port: int, dst: str, payload: bytes) -> None:
    """As :func:`send_udp` through a raw socket: the source port may be one that another
    socket of ``node`` holds (the peer's own 4500). The kernel writes the IPv4 header (the
    source address is ``node``'s on the way to ``dst``); the UDP checksum 0 means none."""
    with netns(lab.ns(node)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    with closing(sock):
        header = struct.pack("!HHHH", source_port, PORT, 8 + len(payload), 0)
        sock.sendto(header + payload, (dst, 0))


def icmp_idents(path: str | Path) -> set[int]:
    """The idents of the ICMP echo requests in a capture."""
    rows = capture.fields(path, ["icmp.ident"], display_filter="icmp.type == 8")
    return {int(value.split(",")[0], 0) for (value,) in rows if value}
