"""UDP GSO and GRO batches, sans-IO: many ESP datagrams per system call, the same bytes on the wire.

Sending (UDP GSO, ``UDP_SEGMENT``): one ``sendmsg`` hands the kernel a buffer and a segment
size; the kernel cuts it into datagrams of that size (the last may be shorter). So a batch is a
run of datagrams to one peer that all have the same size except the last, which is no longer.
:func:`gso_batches` groups what a core queued that way, in order.

Receiving (``UDP_GRO``): one ``recvmsg`` returns datagrams of one sender glued together and
their size in a control message; :func:`split_gro` cuts them apart again and
the cores' ``receive_runs`` (their one entry) opens them: one bad datagram (a
bad ICV, a replay) is dropped and counted on its own, the others of the batch still arrive.
The control messages of both (:func:`gso_control`, :func:`gro_segment_size`) are built and
read here too. Pure code: no socket, no os.
"""

from __future__ import annotations

import struct

from vpnlab.core.events import Address

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104

MAX_SEGMENTS = 64
"""Datagrams per UDP GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels)."""
MAX_GSO_BYTES = 65000
"""Bytes per UDP GSO send: one IPv4 datagram's worth, less room for its headers."""


def gso_batches(
    datagrams: list[tuple[bytes, Address]],
    max_segments: int = MAX_SEGMENTS,
    max_bytes: int = MAX_GSO_BYTES,
) -> list[tuple[Address, int, list[bytes]]]:
    """Group queued datagrams, in order, into UDP GSO sends.

    Args:
        datagrams: what the core queued, with each destination.
        max_segments: most datagrams in one send.
        max_bytes: most bytes in one send.

    Returns:
        ``(peer, segment size, datagrams)`` per send: all datagrams have the segment size
        except the last, which may be shorter. A single datagram is a batch of one.
    """
    batches: list[tuple[Address, int, list[bytes]]] = []
    peer: Address | None = None
    size = 0
    run: list[bytes] = []
    total = 0
    closed = True
    for datagram, to in datagrams:
        n = len(datagram)
        if closed or to != peer or n > size or len(run) >= max_segments or total + n > max_bytes:
            if run:
                batches.append((peer, size, run))  # type: ignore[arg-type]
            peer, size, run, total, closed = to, n, [datagram], n, False
            continue
        run.append(datagram)
        total += n
        closed = n < size
    if run:
        batches.append((peer, size, run))  # type: ignore[arg-type]
    return batches


def split_gro(buffer: bytes, segment_size: int) -> list[bytes]:
    """The datagrams of one UDP_GRO receive: ``segment_size`` bytes each, the last shorter.

    A ``segment_size`` of 0 (no control message: GRO off or a single datagram) means one.
    """
    if segment_size <= 0 or segment_size >= len(buffer):
        return [buffer]
    return [buffer[at : at + segment_size] for at in range(0, len(buffer), segment_size)]


def gso_control(segment_size: int) -> list[tuple[int, int, bytes]]:
    """The UDP_SEGMENT control message of one GSO send."""
    return [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment_size))]


def gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The UDP_GRO segment size of one recvmsg (0 when the kernel sent no control message)."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            size: int = struct.unpack("=i", data[:4])[0]
            return size
    return 0
