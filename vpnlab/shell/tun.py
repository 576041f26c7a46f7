"""CreateTunDev and Ifconfig: the virtual interface tun0.

The kernel gives us a TUN device through one ioctl on ``/dev/net/tun``: we pass a ``struct
ifreq`` (the interface name, 16 bytes, then the flags, a short) and the kernel fills the name in.

    struct ifreq {                       40 bytes on Linux
        char  ifr_name[IFNAMSIZ];        16: "tun0", NUL-padded (so at most 15 characters)
        short ifr_flags;                  2: IFF_TUN | IFF_NO_PI
        ...                              22: the rest of the union, zero
    };

``IFF_TUN`` asks for layer 3 (IP packets; ``IFF_TAP`` would give Ethernet frames) and
``IFF_NO_PI`` drops the 4-byte packet-information header the kernel would otherwise put in front
of every packet, so a read returns exactly one IP packet. (pyroute2's tuntap helper turns packet
information on, which is why we build the ifreq ourselves.)
"""

from __future__ import annotations

import fcntl
import os
import struct
from ipaddress import IPv4Interface, IPv6Interface

from vpnlab.core.errors import SetupError
from vpnlab.shell.rtnetlink import NetlinkError, Rtnetlink, link_index

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
IFREQ = struct.Struct("16sH22x")
IFA_F_NODAD = 0x02
"""linux/if_addr.h: no duplicate address detection, so the IPv6 address is usable at once
(a tunnel address is the server's to give: nobody else on tun0's link can hold it)."""


def ifreq(name: str, flags: int) -> bytes:
    """CreateTunDev: the ``struct ifreq`` for TUNSETIFF (shown byte by byte in notebook 1).

    Raises:
        SetupError: the name is empty, not ASCII or longer than 15 characters.
    """
    raw = name.encode("ascii", "replace")
    if len(raw) >= IFNAMSIZ:
        raise SetupError(
            f"interface name {name!r} has {len(raw)} characters: Linux allows at most"
            f" {IFNAMSIZ - 1} (IFNAMSIZ {IFNAMSIZ}, with the closing NUL)"
        )
    if not raw or b"/" in raw or b" " in raw or b"?" in raw:
        raise SetupError(
            f"bad interface name {name!r}: 1 to {IFNAMSIZ - 1} ASCII characters, no '/' or space"
        )
    return IFREQ.pack(raw, flags)


def create_tun_dev(name: str = "tun0", flags: int = IFF_TUN | IFF_NO_PI) -> tuple[int, str]:
    """CreateTunDev: open /dev/net/tun and ioctl(TUNSETIFF); return (tunfd, actual name).

    The fd is non-blocking so the select loop can drain it. A name template such as
    ``tun%d`` gets the next free number from the kernel.

    Raises:
        SetupError: no /dev/net/tun, no permission, or the kernel refused the request.
    """
    request = ifreq(name, flags)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SetupError("/dev/net/tun does not exist (load the tun module)") from None
    except PermissionError:
        raise SetupError("no permission to open /dev/net/tun: run as root") from None
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as exc:
        os.close(fd)
        raise SetupError(f"ioctl(TUNSETIFF, {name!r}) failed: {exc.strerror}") from None
    os.set_blocking(fd, False)
    actual = IFREQ.unpack(answer)[0].rstrip(b"\0").decode("ascii")
    return fd, actual


def ifconfig(
    name: str,
    address: IPv4Interface | None,
    mtu: int,
    address6: IPv6Interface | None = None,
    txqueuelen: int | None = None,
) -> None:
    """Ifconfig: give tun0 its address and MTU and bring it up (``ip addr/link``: rtnetlink.py).

    ``txqueuelen``: the length of tun0's ring, the packets the kernel holds for the daemon
    (``queues.ring_entries``; None: the kernel's 500).

    With ``address6`` (dual stack) tun0 gets its IPv6 tunnel address too (``ip -6 addr add
    ... nodad``); with ``address`` None only that one (an IPv6-only Welcome). Bringing tun0
    up with IPv6 on makes the kernel give it a link-local fe80:: address and send router
    solicitations out of it: the daemon reads them like any packet and drops them
    (``packet.is_link_scope``, counted as "tun: ipv6 link scope").

    Raises:
        SetupError: netlink refused (for example, the interface vanished).
    """
    try:
        with Rtnetlink() as netlink:
            index = link_index(name)
            netlink.set_link(index, mtu=mtu, txqueuelen=txqueuelen)
            if address is not None:
                netlink.replace_address(index, address)
            if address6 is not None:
                netlink.replace_address(index, address6, IFA_F_NODAD)
            netlink.set_link(index, up=True)
    except NetlinkError as exc:
        raise SetupError(f"ifconfig {name} {address or address6} mtu {mtu} failed: {exc}") from None
