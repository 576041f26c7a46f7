"""Ifconfig and SetRouting over rtnetlink: what ``ip link/addr/route`` say to the kernel.

After CreateTunDev the daemons set tun0's MTU, addresses and state (Ifconfig) and add or delete
routes (SetRouting, CleanUp). ``ip`` does each of these as one rtnetlink request on an
``AF_NETLINK`` socket; this module does the same with ``struct``, so a daemon needs no netlink
library (pyroute2, which the lab builder uses, costs a daemon 14 MiB of its memory).

Every request is a ``struct nlmsghdr`` then a fixed header of its kind, then attributes:

    struct nlmsghdr   16 bytes  length, type (RTM_NEWLINK...), flags (NLM_F_REQUEST|ACK...),
                                sequence number, port id (0: the kernel)
    struct ifinfomsg  16 bytes  family, device type, index, flags (IFF_UP), change mask
    struct ifaddrmsg   8 bytes  family, prefix length, flags, scope, index
    struct rtmsg      12 bytes  family, dst_len, src_len, tos, table, protocol, scope, type, flags
    struct rtattr      4 bytes  length, type; then the value, padded to 4 bytes

Each request asks for an acknowledgement (``NLM_F_ACK``): the kernel answers ``NLMSG_ERROR``
with error 0 (done) or a negative errno, with the reason in words when the socket asked for
extended acks (``NETLINK_EXT_ACK``); :class:`NetlinkError` carries both in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Literal, NamedTuple

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSGHDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
IFADDRMSG = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
RTATTR = struct.Struct("=HH")
NLMSGERR = struct.Struct("=i")

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100
"""In an NLMSG_ERROR: the request that failed is echoed as its header only."""
NLM_F_ACK_TLVS = 0x200
"""In an NLMSG_ERROR: extended-ack attributes (the reason in words) follow."""
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

IFF_UP = 0x1
IFLA_MTU = 4
IFLA_TXQLEN = 13
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
"""``proto boot``: what ``ip route add`` writes when no protocol is named."""
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
"""In a delete: match a route of any scope (as ``ip route del`` does)."""
RTN_UNICAST = 1
RTN_UNREACHABLE = 7
ROUTE_TYPES = {"unicast": RTN_UNICAST, "unreachable": RTN_UNREACHABLE}

RECV_BYTES = 65536


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` and one line naming the request and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


class Message(NamedTuple):
    """One netlink message: its type, flags, sequence number and what follows the header."""

    kind: int
    flags: int
    seq: int
    body: bytes


@dataclass(frozen=True)
class Route:
    """One route of the main table: ``dst`` via ``gateway`` and/or out of device ``oif``, or
    ``unreachable`` (no device: the kernel answers "network unreachable")."""

    dst: IPv4Network | IPv6Network
    oif: int | None = None
    gateway: IPv4Address | IPv6Address | None = None
    kind: Literal["unicast", "unreachable"] = "unicast"

    def __str__(self) -> str:
        text = f"{self.dst}" if self.kind == "unicast" else f"unreachable {self.dst}"
        text += f" via {self.gateway}" if self.gateway else ""
        return text + (f" dev #{self.oif}" if self.oif else "")


def rtattr(kind: int, value: bytes) -> bytes:
    """One attribute: length and type, the value, zero padding to a multiple of 4."""
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + bytes(-length % 4)


def encode(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request: the nlmsghdr (port id 0: for the kernel) in front of ``body``."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def decode(data: bytes) -> list[Message]:
    """The messages of one datagram (the kernel may put several in one).

    Raises:
        NetlinkError: a length that does not fit (EBADMSG).
    """
    messages: list[Message] = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError(errno.EBADMSG, f"netlink: message of {length} bytes in a short read")
        messages.append(Message(kind, flags, seq, data[offset + NLMSGHDR.size : offset + length]))
        offset += (length + 3) & ~3
    return messages


def attributes(data: bytes) -> dict[int, bytes]:
    """Attributes by type (the last one wins), their values without padding."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + RTATTR.size : offset + length]  # no NLA_F_ flags
        offset += (length + 3) & ~3
    return found


def check_ack(message: Message, what: str) -> None:
    """An NLMSG_ERROR: error 0 is the acknowledgement; anything else raises.

    Raises:
        NetlinkError: ``what`` and the kernel's reason (its extended-ack text if it sent one).
    """
    (error,) = NLMSGERR.unpack_from(message.body)
    if error == 0:
        return
    reason = os.strerror(-error)
    if message.flags & NLM_F_ACK_TLVS:
        echoed = NLMSGHDR.size
        if not message.flags & NLM_F_CAPPED:
            (echoed,) = struct.unpack_from("=I", message.body, NLMSGERR.size)
        tlvs = attributes(message.body[NLMSGERR.size + ((echoed + 3) & ~3) :])
        text = tlvs.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")
        if text:
            reason += f" ({text})"
    raise NetlinkError(-error, f"{what}: {reason}")


def link_index(name: str) -> int:
    """The index of interface ``name`` (``if_nametoindex``, no netlink needed).

    Raises:
        NetlinkError: no such interface (ENODEV).
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise NetlinkError(errno.ENODEV, f"no interface {name}") from None


def family_of(address: IPv4Address | IPv6Address | IPv4Network | IPv6Network) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


class Rtnetlink:
    """An rtnetlink socket of this process's namespace; one request at a time, each acked.

    Use it as a context manager: the socket is closed on the way out.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            # an old kernel: errors without words, requests echoed in full
            with contextlib.suppress(OSError):
                self.sock.setsockopt(SOL_NETLINK, option, 1)
        self.seq = 0

    def __enter__(self) -> Rtnetlink:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[Message]:
        """Send one request and return the kernel's answers before its acknowledgement.

        Raises:
            NetlinkError: the kernel refused (``what`` and why).
        """
        self.seq += 1
        self.sock.send(encode(kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, body))
        answers: list[Message] = []
        while True:
            for message in decode(self.sock.recv(RECV_BYTES)):
                if message.seq != self.seq:
                    continue  # a late answer to an earlier request
                if message.kind == NLMSG_ERROR:
                    check_ack(message, what)
                    return answers
                if message.kind == NLMSG_DONE:
                    return answers
                answers.append(message)

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        txqueuelen: int | None = None,
    ) -> None:
        """``ip link set dev #index [up|down] [mtu N] [txqueuelen N]``."""
        flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if mtu is not None:
            body += rtattr(IFLA_MTU, struct.pack("=I", mtu))
        if txqueuelen is not None:
            body += rtattr(IFLA_TXQLEN, struct.pack("=I", txqueuelen))
        what = f"link set #{index}" + ("" if up is None else " up" if up else " down")
        what += "" if mtu is None else f" mtu {mtu}"
        what += "" if txqueuelen is None else f" txqueuelen {txqueuelen}"
        self.request(RTM_NEWLINK, 0, body, what)

    def replace_address(
        self, index: int, address: IPv4Interface | IPv6Interface, flags: int = 0
    ) -> None:
        """``ip addr replace ADDRESS/LEN dev #index`` (``flags``: IFA_F_*, such as nodad)."""
        family = family_of(address.ip)
        body = IFADDRMSG.pack(family, address.network.prefixlen, flags & 0xFF, 0, index)
        body += rtattr(IFA_ADDRESS, address.ip.packed)
        if family == socket.AF_INET:
            body += rtattr(IFA_LOCAL, address.ip.packed)
        if flags > 0xFF:  # the flags of the header are 8 bits; IFA_FLAGS holds all 32
            body += rtattr(IFA_FLAGS, struct.pack("=I", flags))
        what = f"addr replace {address} dev #{index}"
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body, what)

    def replace_route(self, route: Route) -> None:
        """``ip route replace ROUTE``: added, or put in place of the one to the same dst."""
        on_link = route.dst.version == 4 and route.oif and not route.gateway
        scope = RT_SCOPE_LINK if on_link else RT_SCOPE_UNIVERSE
        body = self._route_body(route, RTPROT_BOOT, scope, ROUTE_TYPES[route.kind])
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"route replace {route}")

    def delete_route(self, route: Route) -> None:
        """``ip route del ROUTE``: any protocol, scope and type, as ``ip`` matches."""
        body = self._route_body(route, 0, RT_SCOPE_NOWHERE, 0)
        self.request(RTM_DELROUTE, 0, body, f"route del {route}")

    def get_route(self, destination: IPv4Address | IPv6Address) -> Route:
        """``ip route get ADDRESS``: the way the kernel would send a packet there now."""
        family = family_of(destination)
        body = RTMSG.pack(family, destination.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
        body += rtattr(RTA_DST, destination.packed)
        answers = self.request(RTM_GETROUTE, 0, body, f"route get {destination}")
        if not answers:
            raise NetlinkError(errno.ENODATA, f"route get {destination}: no answer")
        return parse_route(answers[0])

    def _route_body(self, route: Route, protocol: int, scope: int, kind: int) -> bytes:
        family = family_of(route.dst)
        header = (family, route.dst.prefixlen, 0, 0, RT_TABLE_MAIN, protocol, scope, kind, 0)
        body = RTMSG.pack(*header)
        body += rtattr(RTA_DST, route.dst.network_address.packed)
        if route.oif:
            body += rtattr(RTA_OIF, struct.pack("=i", route.oif))
        if route.gateway:
            body += rtattr(RTA_GATEWAY, route.gateway.packed)
        return body


def parse_route(message: Message) -> Route:
    """An RTM_NEWROUTE message as a :class:`Route` (destination, device, gateway, kind)."""
    family, dst_len, _, _, _, _, _, kind, _ = RTMSG.unpack_from(message.body)
    attrs = attributes(message.body[RTMSG.size :])
    any_address = "0.0.0.0" if family == socket.AF_INET else "::"
    dst = ip_address(attrs[RTA_DST]) if RTA_DST in attrs else ip_address(any_address)
    oif = struct.unpack("=i", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
    gateway = ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    return Route(
        dst=ip_network(f"{dst}/{dst_len}"),
        oif=oif,
        gateway=gateway,
        kind="unreachable" if kind == RTN_UNREACHABLE else "unicast",
    )
