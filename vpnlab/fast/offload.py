"""CreateTunDev and Init(PORT) for the fast data path: ask the kernel for its offloads.

Four switches, each reachable from Python's ``fcntl`` and ``socket``:

    tun0    IFF_VNET_HDR (at TUNSETIFF), TUNSETVNETHDRSZ 10: a virtio_net_hdr before every packet
            TUNSETOFFLOAD CSUM|TSO4|TSO6: the kernel may hand us 64 KB TCP super-packets
    socket  UDP_GRO: one recvmsg returns many datagrams of one sender, and their size
            UDP_SEGMENT (per send, in a control message): one sendmsg, many datagrams

Where the kernel refuses one, :class:`Offloads` records it and the fast loop does without it;
the daemon logs each refusal once. Only this module and ``datapath.py`` do the I/O; the control
messages of each send and receive are pure (``batch.py``).
"""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass, field

from vpnlab.fast.batch import SOL_UDP, UDP_GRO, UDP_SEGMENT

TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
SUPER_PACKET_BYTES = 65536
"""tun0's ``gso_max_size``, the kernel's default, which we leave alone: it hands over TCP
super-packets shorter than this. A smaller one would not shrink what other hosts send: the
kernel cuts a forwarded super-packet that does not fit (from a veth or a NIC, 64 KB) into
packets before tun0, each with its checksum left to us, and a download through the server ran
at half speed (``docs/performance.md``, *Downloads at half speed*). A super-packet's ESP
datagrams may then need two UDP GSO sends (``batch.MAX_GSO_BYTES``)."""


@dataclass
class Offloads:
    """Which offloads the kernel granted; ``refused`` says why the others are off."""

    vnet_hdr: bool = False
    tso: bool = False
    udp_gso: bool = False
    udp_gro: bool = False
    refused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        on = [name for name in ("vnet_hdr", "tso", "udp_gso", "udp_gro") if getattr(self, name)]
        return "offloads " + (", ".join(on) if on else "none")


def enable_tun(fd: int, offloads: Offloads) -> None:
    """tun0: the 10-byte virtio_net_hdr, then checksum and TSO offloads.

    The fd must have been opened with IFF_VNET_HDR; without the header nothing else is tried.
    """
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
    except OSError as exc:
        offloads.refused.append(f"TUNSETVNETHDRSZ: {exc.strerror}")
        return
    offloads.vnet_hdr = True
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        offloads.tso = True
    except OSError as exc:
        offloads.refused.append(f"TUNSETOFFLOAD TSO: {exc.strerror}")


def enable_socket(sock: socket.socket, offloads: Offloads) -> None:
    """The UDP socket: UDP_GRO on receive; UDP_SEGMENT is tried here and again at each send.

    Its buffers (``--queue-bytes``, ``queues.py``: room for a few 64 KB batches) were set by
    ``transport.init_socket``.
    """
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        offloads.udp_gro = True
    except OSError as exc:
        offloads.refused.append(f"UDP_GRO: {exc.strerror}")
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        offloads.udp_gso = True
    except OSError as exc:
        offloads.refused.append(f"UDP_SEGMENT: {exc.strerror}")
