"""The wire-format interface: how a handshake produces keys and how keys seal packets.

Every ``--cipher`` value (``plain``, ``esp-null``, ``esp-aes-gcm``) is a :class:`Format`,
implemented in ``vpnlab/wire/`` and chosen by ``wire.ciphers.make_format``. The sans-IO cores
only talk to these interfaces, so a new format never touches the select loop. All of it is
pure: bytes in, bytes out, time and randomness passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Protocol

RandomBytes = Callable[[int], bytes]
"""A source of randomness, ``os.urandom`` in the daemons and a seeded one in tests."""


class Kind(enum.Enum):
    """What an opened datagram turned out to carry."""

    PACKET = "packet"
    KEEPALIVE = "keepalive"
    BYE = "bye"


class Protection(Protocol):
    """One session's keys: seal inner packets into datagrams and open them again."""

    overhead_bytes: int
    """Largest number of bytes a datagram adds to the inner packet it carries."""

    def seal(self, packet: bytes) -> bytes: ...

    def seal_frame(self, frame: bytes) -> bytes:
        """``--mode tap``: seal an Ethernet frame (ESP next header 143, plain: the raw frame)."""
        ...

    def seal_keepalive(self) -> bytes: ...

    def seal_bye(self) -> bytes: ...

    def open(self, datagram: bytes) -> tuple[Kind, bytes]:
        """Return what ``datagram`` carries; raise RemoteProtocolError(reason) if it is bad."""
        ...

    def open_frame(self, datagram: bytes) -> tuple[Kind, bytes]:
        """``--mode tap``: as ``open``, but a PACKET is an Ethernet frame."""
        ...


@dataclass(frozen=True)
class Established:
    """A finished handshake: the session's keys and the client's tunnel address."""

    protection: Protection
    client_address: IPv4Interface


class ClientHandshake(Protocol):
    """ClientConnection's half of the Hello exchange."""

    def hello(self, now: float) -> bytes:
        """The Hello datagram; called again (same bytes) for a retry."""
        ...

    def receive(self, datagram: bytes, now: float) -> Established:
        """The server's answer; raise RemoteProtocolError(reason) if it is not one."""
        ...


class ServerHandshake(Protocol):
    """ServerConnection's half of the Hello exchange (one object for all clients)."""

    def respond(
        self, datagram: bytes, client_address: IPv4Interface, now: float
    ) -> tuple[bytes, Protection]:
        """Answer a Hello; raise RemoteProtocolError(reason) and send nothing if it is bad."""
        ...


class Format(Protocol):
    """One ``--cipher`` value."""

    name: str
    overhead_bytes: int

    def is_hello(self, datagram: bytes) -> bool: ...

    def client_handshake(self, random_bytes: RandomBytes) -> ClientHandshake: ...

    def server_handshake(self, random_bytes: RandomBytes) -> ServerHandshake: ...
