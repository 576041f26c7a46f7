"""CreateTunDev and Init(PORT) for the fast data path: ask the kernel for its offloads.

Four switches, each reachable from Python's ``fcntl`` and ``socket``:

    tun0    IFF_VNET_HDR (at TUNSETIFF), TUNSETVNETHDRSZ 10: a virtio_net_hdr before every packet
            TUNSETOFFLOAD CSUM|TSO4|TSO6: the kernel may hand us 64 KB TCP super-packets
            gso_max_size 60000: a super-packet's ESP datagrams fit one UDP GSO send
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
from vpnlab.shell.rtnetlink import Rtnetlink, link_index

TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNSETVNETHDRSZ = 0x400454D8
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
GSO_MAX_SIZE = 60000
"""Largest TCP super-packet we ask tun0 for: 43 ESP datagrams of 1,472 bytes fit in 65,507."""


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


def device_name(fd: int) -> str:
    """The name of the TUN device behind ``fd`` (TUNGETIFF fills in a struct ifreq)."""
    ifreq = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    return ifreq[:16].split(b"\0", 1)[0].decode()


def enable_tun(fd: int, name: str, offloads: Offloads) -> None:
    """tun0: the 10-byte virtio_net_hdr, then checksum and TSO offloads, then gso_max_size.

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
        return
    try:
        with Rtnetlink() as netlink:
            netlink.set_link(link_index(name), gso_max_size=GSO_MAX_SIZE)
    except OSError as exc:  # an old kernel: super-packets stay at 64 KB
        offloads.refused.append(f"gso_max_size {GSO_MAX_SIZE}: {exc}")


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
