"""CreateTunDev and Ifconfig for ``--mode tap``: a TAP device carries Ethernet frames.

``--mode tun`` (the notes) asks the kernel for ``IFF_TUN``: a read returns an IP packet.
``--mode tap`` asks for ``IFF_TAP``: a read returns a whole Ethernet frame (destination MAC,
source MAC, EtherType, payload), and the kernel treats tap0 like a network card: it sends ARP
requests out of it and expects ARP replies to come back in. The daemons then carry frames
(ESP next header 143, see ``esp.py``) and the server switches them (``bridge.py``), so the
server's tap0 and every client's tap0 are one Ethernet segment, 10.8.0.0/24.

Routing is by destination IP in both modes; what TAP adds is ARP and MAC addresses. The ARP
experiment of the course, which plays the other end of a TAP device by hand, is
``vpnlab/course/arp.py``.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from vpnlab.core.errors import SetupError
from vpnlab.core.packet import ETHERNET_HEADER_BYTES
from vpnlab.shell.tun import IFF_NO_PI, IFF_TAP, IFF_TUN, IFNAMSIZ

MODES = ("tun", "tap")
DEFAULT_MODE = "tun"
TAP_NAME = "tap0"
SIOCGIFHWADDR = 0x8927
"""linux/sockios.h: get the hardware (MAC) address of an interface."""


def device_flags(mode: str, datapath_flags: int = 0) -> int:
    """CreateTunDev: the TUNSETIFF flags of ``--mode`` (tun: IP packets, tap: frames).

    Args:
        datapath_flags: what the data path adds (the fast one: IFF_VNET_HDR).

    Raises:
        SetupError: tap with the fast data path (its offloads are for IP packets).
    """
    if mode != "tap":
        return IFF_TUN | IFF_NO_PI | datapath_flags
    if datapath_flags:
        raise SetupError("--mode tap runs the simple data path only (--datapath simple)")
    return IFF_TAP | IFF_NO_PI


def device_name(mode: str, name: str) -> str:
    """The interface name: ``tun0`` becomes ``tap0`` in TAP mode; other names stay."""
    return TAP_NAME if mode == "tap" and name == "tun0" else name


def device_mtu(mode: str, tun_mtu: int) -> int:
    """Ifconfig: in TAP mode the 14-byte Ethernet header travels too, so tap0's MTU is tun0's
    less ``ETHERNET_HEADER_BYTES``."""
    return tun_mtu - ETHERNET_HEADER_BYTES if mode == "tap" else tun_mtu


def mac_address(name: str) -> bytes:
    """Ifconfig: the MAC the kernel gave ``name`` (the server tells its switch about it), read
    with the SIOCGIFHWADDR ioctl: a ``struct ifreq`` whose union the kernel fills in as a
    ``struct sockaddr`` (family ARPHRD_ETHER, then the six bytes).

    Raises:
        SetupError: no such interface.
    """
    request = struct.pack("16s24x", name.encode()[: IFNAMSIZ - 1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            ifreq = fcntl.ioctl(sock, SIOCGIFHWADDR, request)
        except OSError:
            raise SetupError(f"no interface {name}") from None
    return ifreq[18:24]  # after the name: struct sockaddr, its 2-byte family, then the MAC
