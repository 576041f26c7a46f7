"""The wire-format interface: how a handshake produces keys and how keys seal packets.

Every ``--cipher`` value (``plain``, ``esp-null``, ``esp-aes-gcm``) is a :class:`Format`,
implemented in ``vpnlab/wire/`` and chosen by ``wire.ciphers.make_format``. The sans-IO cores
only talk to these interfaces, so a new format never touches the select loop. All of it is
pure: bytes in, bytes out, time and randomness passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, IPv6Network
from typing import Protocol

from vpnlab.core.pool import TunnelAddress

RandomBytes = Callable[[int], bytes]
"""A source of randomness, ``os.urandom`` in the daemons and a seeded one in tests."""


class Kind(enum.Enum):
    """What an opened datagram turned out to carry."""

    PACKET = "packet"
    KEEPALIVE = "keepalive"
    BYE = "bye"


KIND_PACKET, KIND_KEEPALIVE, KIND_BYE = Kind.PACKET, Kind.KEEPALIVE, Kind.BYE
"""The members again, as module globals for the per-packet code: in Python 3.11 reading a
member off an Enum class costs about 80 ns (``EnumType.__getattr__`` keeps the interpreter from
caching the lookup), a global about 8, and each datagram opened read three."""


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
    """A finished handshake: the session's keys and the client's tunnel address (IPv4, or
    IPv6 only once the server's IPv4 pool is used up: ``pool.TunnelAddress``)."""

    protection: Protection
    client_address: TunnelAddress


class ClientHandshake(Protocol):
    """ClientConnection's half of the Hello exchange."""

    def hello(self, now: float) -> bytes:
        """The Hello datagram; called again (same bytes) for a retry."""
        ...

    def receive(self, datagram: bytes, now: float) -> Established:
        """The server's answer; raise RemoteProtocolError(reason) if it is not one."""
        ...

    def take_cookie(self, datagram: bytes, now: float) -> bool:
        """A cookie reply (identity mode, server under load): keep the cookie, so that
        ``hello`` carries mac2; False if ``datagram`` is none. Raise RemoteProtocolError if
        it is one but not for our Hello."""
        ...


class SendsHellos:
    """What every client handshake shares: only the identity mode gets cookie replies."""

    def take_cookie(self, datagram: bytes, now: float) -> bool:
        return False


@dataclass(frozen=True)
class Peer:
    """A client the server knows by its static public key (the identity mode, ``peers.toml``):
    its name, the tunnel address it always gets, and the networks behind it (site to site)."""

    name: str
    public_key: bytes
    tunnel_address: IPv4Interface
    networks: tuple[IPv4Network | IPv6Network, ...] = ()  # either family
    psk: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CheckedHello:
    """A Hello the server's handshake found authentic and fresh, not answered yet.

    ``peer`` is the identity it proved (None for the formats without identities: plain and
    the shared PSK); ``state`` belongs to the handshake that checked it.
    """

    datagram: bytes
    peer: Peer | None = None
    state: object = None


class ServerHandshake(Protocol):
    """ServerConnection's half of the Hello exchange (one object for all clients).

    Two steps, so that the core spends nothing (a rate-limit token, an address) on a Hello
    that is not authentic: ``check`` it, then ``answer`` it with the client's tunnel address.
    """

    costly_check: bool
    """True if ``check`` costs a Diffie-Hellman (identity mode): the core then screens,
    rate-limits and queues a Hello before checking it; False: it checks first (cheap)."""

    def screen(
        self, datagram: bytes, source: tuple[str, int], now: float, under_load: bool
    ) -> bytes:
        """The cheap proofs before ``check`` spends anything (identity mode: mac1, and under
        load mac2): b"" to go on, or a cookie reply to send instead; raise
        RemoteProtocolError(reason) to drop it."""
        ...

    def bad_mac1(self, datagram: bytes) -> bool:
        """The batch screen (identity mode): is this a well-formed Hello for us whose mac1 is
        wrong, one that ``screen`` would drop as "bad mac1"? One hash, and no exception."""
        ...

    def check(self, datagram: bytes, now: float) -> CheckedHello:
        """Is this an authentic, fresh Hello? Raise RemoteProtocolError(reason) if not."""
        ...

    def answer(
        self, hello: CheckedHello, client_address: TunnelAddress
    ) -> tuple[bytes, Protection]:
        """The reply to a checked Hello, and the session's keys; a Hello is answered once."""
        ...

    def set_peers(self, peers: Sequence[Peer]) -> None:
        """Identity mode: answer these peers from now on (``peers.toml`` changed)."""
        ...


class AnswersHellos:
    """What every server handshake shares: both steps at once (``respond``, for the tests and
    the notebooks), and a peer list that only the identity mode has."""

    costly_check = False

    def set_peers(self, peers: Sequence[Peer]) -> None:
        """The identity mode's peers file changed; the other formats have no peers."""

    def screen(
        self, datagram: bytes, source: tuple[str, int], now: float, under_load: bool
    ) -> bytes:
        """Only the identity mode has MACs and cookies: every Hello goes on to ``check``."""
        return b""

    def bad_mac1(self, datagram: bytes) -> bool:
        """Only the identity mode has a mac1."""
        return False

    def respond(
        self, datagram: bytes, client_address: TunnelAddress, now: float
    ) -> tuple[bytes, Protection]:
        """Answer a Hello; raise RemoteProtocolError(reason) and send nothing if it is bad."""
        return self.answer(self.check(datagram, now), client_address)

    def check(self, datagram: bytes, now: float) -> CheckedHello:
        """Each format's own first step (``ServerHandshake.check``)."""
        raise NotImplementedError

    def answer(
        self, hello: CheckedHello, client_address: TunnelAddress
    ) -> tuple[bytes, Protection]:
        """Each format's own second step (``ServerHandshake.answer``)."""
        raise NotImplementedError


class Format(Protocol):
    """One ``--cipher`` value."""

    name: str
    overhead_bytes: int

    def is_hello(self, datagram: bytes) -> bool: ...

    def client_handshake(self, random_bytes: RandomBytes) -> ClientHandshake: ...

    def server_handshake(self, random_bytes: RandomBytes) -> ServerHandshake: ...
