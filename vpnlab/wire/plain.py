"""The design notes' own format: the inner IP packet is the whole UDP payload.

Control messages are one line of ASCII text that starts with ``VPNLAB/1`` (the notes' "Hello
message"). Their first byte, ``V`` (0x56), has the high nibble 5, so they can never be taken for
an IPv4 (4) or IPv6 (6) packet. Nothing here is protected: anyone on the path can read and forge
it, which is exactly what the ESP formats fix.

    client -> server   VPNLAB/1 HELLO
    server -> client   VPNLAB/1 WELCOME 10.8.0.2/24
                       (VPNLAB/1 WELCOME fd10:8::100/64 once the IPv4 pool is used up)
    either way         VPNLAB/1 KEEPALIVE          (when idle)
    either way         VPNLAB/1 BYE                (on CleanUp)

``--mode tap``: the UDP payload is the raw Ethernet frame instead. Wireshark still labels it
``udpencap:esp`` (port 4500), with the first four bytes of the destination MAC as "SPI"
(``0xffffffff`` for a broadcast ARP request); ``tshark -d udp.port==4500,eth`` shows the frame.
A control message cannot be mistaken for a frame: its bytes 6 to 11 (``/1 HEL``...) would be a
source MAC with the group bit set (0x2f), which no frame carries.
"""

from __future__ import annotations

from ipaddress import IPv6Interface, ip_interface

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.formats import (
    KIND_BYE,
    KIND_KEEPALIVE,
    KIND_PACKET,
    AnswersHellos,
    CheckedHello,
    Established,
    Kind,
    Protection,
    RandomBytes,
    SendsHellos,
)
from vpnlab.core.packet import ETHERNET_HEADER_BYTES
from vpnlab.core.pool import TUNNEL_NETWORK6_NET, TunnelAddress
from vpnlab.core.reasons import Drop

MAGIC = b"VPNLAB/1 "
HELLO = MAGIC + b"HELLO\n"
KEEPALIVE = MAGIC + b"KEEPALIVE\n"
BYE = MAGIC + b"BYE\n"
WELCOME = MAGIC + b"WELCOME "
MAX_CONTROL = 64


def ip_version(packet: bytes) -> int:
    """The IP version nibble of ``packet`` (0 when empty)."""
    return packet[0] >> 4 if packet else 0


class PlainProtection:
    """No protection at all: seal returns the packet, open checks it looks like IP."""

    overhead_bytes = 0

    def seal(self, packet: bytes) -> bytes:
        return packet

    def seal_frame(self, frame: bytes) -> bytes:
        if len(frame) < ETHERNET_HEADER_BYTES:
            raise LocalProtocolError(Drop.RUNT_FRAME)
        return frame

    def seal_keepalive(self) -> bytes:
        return KEEPALIVE

    def seal_bye(self) -> bytes:
        return BYE

    def open(self, datagram: bytes) -> tuple[Kind, bytes]:
        if datagram.startswith(MAGIC):
            if datagram == KEEPALIVE:
                return KIND_KEEPALIVE, b""
            if datagram == BYE:
                return KIND_BYE, b""
            raise RemoteProtocolError(Drop.UNEXPECTED_CONTROL_MESSAGE)
        if ip_version(datagram) not in (4, 6) or len(datagram) < 20:
            raise RemoteProtocolError(Drop.NOT_AN_IP_PACKET)
        return KIND_PACKET, datagram

    def open_frame(self, datagram: bytes) -> tuple[Kind, bytes]:
        """TAP mode: a control message, or else an Ethernet frame of at least 14 bytes."""
        if datagram.startswith(MAGIC):
            return self.open(datagram)
        if len(datagram) < ETHERNET_HEADER_BYTES:
            raise RemoteProtocolError(Drop.RUNT_FRAME)
        return KIND_PACKET, datagram


class PlainClientHandshake(SendsHellos):
    """ClientConnection: send ``HELLO``, accept ``WELCOME <address>`` (IPv4, or an IPv6-only
    address of the tunnel's /64)."""

    def hello(self, now: float) -> bytes:
        return HELLO

    def receive(self, datagram: bytes, now: float) -> Established:
        if not datagram.startswith(WELCOME) or len(datagram) > MAX_CONTROL:
            raise RemoteProtocolError(Drop.NOT_A_WELCOME)
        try:
            address = ip_interface(datagram[len(WELCOME) :].decode("ascii").strip())
        except ValueError:
            raise RemoteProtocolError(Drop.BAD_WELCOME_ADDRESS) from None
        if isinstance(address, IPv6Interface) and address.network != TUNNEL_NETWORK6_NET:
            raise RemoteProtocolError(Drop.BAD_WELCOME_ADDRESS)
        return Established(PlainProtection(), address)


class PlainServerHandshake(AnswersHellos):
    """ServerConnection: answer ``HELLO`` with the client's tunnel address."""

    def check(self, datagram: bytes, now: float) -> CheckedHello:
        if datagram != HELLO:
            raise RemoteProtocolError(Drop.NOT_A_HELLO)
        return CheckedHello(datagram)

    def answer(
        self, hello: CheckedHello, client_address: TunnelAddress
    ) -> tuple[bytes, Protection]:
        return WELCOME + str(client_address).encode("ascii") + b"\n", PlainProtection()


class PlainFormat:
    """``--cipher plain``: the design notes' format."""

    name = "plain"
    overhead_bytes = 0

    def is_hello(self, datagram: bytes) -> bool:
        return datagram == HELLO

    def client_handshake(self, random_bytes: RandomBytes) -> PlainClientHandshake:
        return PlainClientHandshake()

    def server_handshake(self, random_bytes: RandomBytes) -> PlainServerHandshake:
        return PlainServerHandshake()


PLAIN = PlainFormat()
