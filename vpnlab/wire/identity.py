"""ClientConnection/ServerConnection with an identity per peer: Noise IK in the Hello.

Every peer has its own static X25519 key pair. The client pins the server's public key; the
server knows its peers (``peers.toml``: public key -> name, tunnel address, networks), so a
client's address and its site networks belong to its key, not to the order it connected in.
The handshake is Noise IKpsk2 (``noise.py``); its keys are expanded into the two ESP SAs::

    Hello (client -> server, 146 bytes)
      0      4      5        6                                                    114   130   146
      | 0000 | 0x03 | cipher | Noise message 1 (-> e, es, s, ss): 96 + payload (12) | mac1 | mac2 |
        payload: the client's inbound SPI (4) | timestamp, microseconds (8)
        mac1: MAC(HASH("mac1----" || server public key), bytes 0..113)
        mac2: MAC(cookie, bytes 0..129), or 16 zero bytes without a cookie
    Welcome (server -> client, 63 bytes)
      | 0000 | 0x04 | cipher | Noise message 2 (<- e, ee, se, psk): 48 bytes + payload (9) |
        payload: the server's inbound SPI (4) | the client's tunnel address (4) | prefix (1)
                 (IPv4, or with prefix 64 IPv6 only: ``welcome_address.py``)
    Cookie reply (server -> client, under load, instead of a Welcome; 50 bytes)
      0      4      5        6           18                        50
      | 0000 | 0x05 | cipher | nonce (12) | ChaCha20-Poly1305(cookie) |  AD: the Hello's mac1

The MACs are WireGuard's (``core/cookie.py``): the server checks mac1 (one keyed hash)
before any Diffie-Hellman and drops a Hello without it ("bad mac1"); under load it answers a
Hello whose mac2 is not this source's cookie with a cookie reply, and the client sends its
Hello again with mac2. The six header bytes are the Noise prologue: the cipher choice is
bound into the handshake. They start with the RFC 3948 non-ESP marker, so a handshake
message is never taken for ESP (nor for a NAT-keepalive). Replays: the server keeps each
peer's latest timestamp and answers only a larger one (WireGuard's rule), so a recorded
Hello gets nothing, however many other Hellos come in between, and no clock is compared with
another machine's. The server's shell keeps these timestamps on disk
(``server.HelloStamps``), so a restart forgets none. A Hello from an unknown or revoked key,
or for another server key, gets no answer at all.
Pure code: keys and randomness come in; no socket, no clock, no os.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from vpnlab.core.cookie import (
    COOKIE_REPLY_BODY,
    MACS_BYTES,
    CookieChecker,
    CookieGenerator,
    source_bytes,
)
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.core.events import Address
from vpnlab.core.formats import (
    AnswersHellos,
    CheckedHello,
    Established,
    Peer,
    RandomBytes,
    SendsHellos,
)
from vpnlab.core.pool import TunnelAddress
from vpnlab.core.reasons import Drop
from vpnlab.wire.crypto import SaKeys, algorithm, sa_key, spi_from
from vpnlab.wire.esp import NON_ESP_MARKER, EspSession, KernelPeerSession
from vpnlab.wire.handshake import CIPHER_IDS
from vpnlab.wire.noise import (
    HELLO_OVERHEAD,
    NO_PSK,
    WELCOME_OVERHEAD,
    Initiator,
    Responder,
    public_key,
)
from vpnlab.wire.welcome_address import pack_address, unpack_address

HELLO_TYPE = 3
WELCOME_TYPE = 4
COOKIE_TYPE = 5
HELLO_PREFIX = NON_ESP_MARKER + bytes((HELLO_TYPE,))
WELCOME_PREFIX = NON_ESP_MARKER + bytes((WELCOME_TYPE,))
COOKIE_PREFIX = NON_ESP_MARKER + bytes((COOKIE_TYPE,))
HEADER_BYTES = 6
HELLO_PAYLOAD = struct.Struct("!IQ")
WELCOME_PAYLOAD = struct.Struct("!I4sB")
NOISE_HELLO_BYTES = HELLO_OVERHEAD + HELLO_PAYLOAD.size
HELLO_BYTES = HEADER_BYTES + NOISE_HELLO_BYTES + MACS_BYTES
COOKIE_REPLY_BYTES = HEADER_BYTES + COOKIE_REPLY_BODY
WELCOME_BYTES = HEADER_BYTES + WELCOME_OVERHEAD + WELCOME_PAYLOAD.size
PROLOGUE = b"vpnlab/1 identity "


@dataclass(frozen=True)
class ClientIdentity:
    """What a client's config file holds: its own key, the server it pins, its PSK."""

    private_key: bytes = field(repr=False)
    server_public_key: bytes
    psk: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServerIdentity:
    """What the server holds: its own key, and every peer it answers."""

    private_key: bytes = field(repr=False)
    peers: tuple[Peer, ...] = ()


def _header(kind: int, cipher_id: int) -> bytes:
    return NON_ESP_MARKER + bytes((kind, cipher_id))


def _check_header(datagram: bytes, prefix: bytes, size: int, cipher_id: int) -> None:
    if datagram[:5] != prefix:
        raise RemoteProtocolError(Drop.NOT_A_HANDSHAKE)
    if len(datagram) != size:
        raise RemoteProtocolError(Drop.TRUNCATED if len(datagram) < size else Drop.OVERSIZE)
    if datagram[5] != cipher_id:
        raise RemoteProtocolError(Drop.WRONG_CIPHER)


def _session(
    cipher: str, send: bytes, out_spi: int, receive: bytes, in_spi: int, kernel_peer: bool
) -> EspSession:
    """The ESP SAs of one handshake: each direction's Noise key, expanded for its SPI
    (``kernel_peer``: a ``KernelPeerSession``, for a peer whose kernel carries the data)."""
    return (KernelPeerSession if kernel_peer else EspSession)(
        cipher,
        SaKeys(out_spi, sa_key(cipher, send, out_spi)),
        SaKeys(in_spi, sa_key(cipher, receive, in_spi)),
    )


class IdentityClientHandshake(SendsHellos):
    """ClientConnection: the Noise Hello to the pinned server key, then its Welcome (or,
    from a server under load, a cookie reply first: the Hello again, with mac2)."""

    kernel_peer = False
    """The peer is Linux's own ESP (``--kernel-peer``): the sessions are ``KernelPeerSession``."""

    def __init__(self, cipher: str, identity: ClientIdentity, random_bytes: RandomBytes) -> None:
        self._cipher = cipher
        self._header = _header(HELLO_TYPE, CIPHER_IDS[cipher])
        self._identity = identity
        self._random_bytes = random_bytes
        self._initiator: Initiator | None = None
        self._hello = b""
        self._spi = 0
        self._established: Established | None = None
        self._cookies = CookieGenerator(identity.server_public_key)

    def hello(self, now: float) -> bytes:
        """The Hello (a retry returns the same Noise message; its mac2 carries the cookie
        once a cookie reply came); ``now`` is wall-clock seconds."""
        if not self._hello:
            if not 0 <= now < 2.0**63 / 1e6:
                raise LocalProtocolError("now out of range for a hello timestamp")
            identity = self._identity
            self._initiator = Initiator(
                identity.private_key,
                identity.server_public_key,
                identity.psk or NO_PSK,
                self._random_bytes(32),
                PROLOGUE + self._header,
            )
            self._spi = spi_from(self._random_bytes(4))
            payload = HELLO_PAYLOAD.pack(self._spi, int(now * 1e6))
            self._hello = self._header + self._initiator.hello(payload)
        return self._cookies.add_macs(self._hello, now)

    def take_cookie(self, datagram: bytes, now: float) -> bool:
        """A cookie reply to our Hello: keep its cookie (``hello`` then carries mac2).

        Returns:
            False if ``datagram`` is no cookie reply.

        Raises:
            RemoteProtocolError: "bad cookie reply" (not for our last Hello), "wrong cipher".
        """
        if datagram[:5] != COOKIE_PREFIX or self._established is not None:
            return False
        _check_header(datagram, COOKIE_PREFIX, COOKIE_REPLY_BYTES, CIPHER_IDS[self._cipher])
        self._cookies.consume_reply(datagram[HEADER_BYTES:], now)
        return True

    def receive(self, datagram: bytes, now: float) -> Established:
        """The Welcome: the server proved its key; our address and both SAs.

        Raises:
            RemoteProtocolError: "not a handshake", "truncated", "oversize", "wrong cipher",
                "bad welcome" (not from the pinned key), "bad welcome address".
        """
        if self._established is not None:
            raise RemoteProtocolError(Drop.UNEXPECTED_WELCOME)
        if self._initiator is None:
            raise LocalProtocolError("receive before hello")
        _check_header(datagram, WELCOME_PREFIX, WELCOME_BYTES, CIPHER_IDS[self._cipher])
        payload, keys = self._initiator.receive(datagram[HEADER_BYTES:])
        server_spi, ip, prefix = WELCOME_PAYLOAD.unpack(payload)
        if server_spi < 256:
            raise RemoteProtocolError(Drop.BAD_WELCOME_ADDRESS)
        address = unpack_address(ip, prefix)
        session = _session(
            self._cipher, keys.send, server_spi, keys.receive, self._spi, self.kernel_peer
        )
        self._established = Established(session, address)
        return self._established


@dataclass
class _Hello:
    responder: Responder
    client_spi: int
    stamp: int


class IdentityServerHandshake(AnswersHellos):
    """ServerConnection: answer the Hellos of known peers, each with its own address."""

    costly_check = True  # reading a Noise Hello is the Diffie-Hellman

    kernel_peer = False
    """The peer is Linux's own ESP (``--kernel-peer``): the sessions are ``KernelPeerSession``."""

    def __init__(self, cipher: str, identity: ServerIdentity, random_bytes: RandomBytes) -> None:
        self._cipher = cipher
        self._cipher_id = CIPHER_IDS[cipher]
        self._header = _header(HELLO_TYPE, self._cipher_id)
        self._welcome_header = _header(WELCOME_TYPE, self._cipher_id)
        self._cookie_header = _header(COOKIE_TYPE, self._cipher_id)
        self._private = identity.private_key
        self.set_peers(identity.peers)
        self._random_bytes = random_bytes
        self.cookies = CookieChecker(public_key(identity.private_key), random_bytes)
        self.latest: dict[bytes, int] = {}
        """Public key -> the latest Hello timestamp answered (the shell keeps it on disk)."""

    def set_peers(self, peers: Iterable[Peer]) -> None:
        """The peers answered from now on (``peers.toml`` read again: added, revoked)."""
        self.peers = {peer.public_key: peer for peer in peers}

    def screen(self, datagram: bytes, source: Address, now: float, under_load: bool) -> bytes:
        """The cheap proofs before any Diffie-Hellman: the header, mac1, and under load mac2.

        Returns:
            b"" if the Hello may go on to ``check``; a cookie reply to send instead (under
            load, and mac2 is not ``source``'s cookie).

        Raises:
            RemoteProtocolError: "not a handshake", "truncated", "oversize", "wrong cipher",
                "bad mac1".
        """
        _check_header(datagram, HELLO_PREFIX, HELLO_BYTES, self._cipher_id)
        if not self.cookies.check_mac1(datagram):
            raise RemoteProtocolError(Drop.BAD_MAC1)
        if not under_load:
            return b""
        cookie = self.cookies.cookie(source_bytes(*source), now)
        if self.cookies.check_mac2(datagram, cookie):
            return b""
        return self.cookies.reply(self._cookie_header, datagram, cookie)

    def bad_mac1(self, datagram: bytes) -> bool:
        """A Hello of the right size and header whose mac1 is wrong (``screen``'s "bad mac1"),
        for one hash and no exception: the server's batch screen of a flood."""
        return (
            len(datagram) == HELLO_BYTES
            and datagram.startswith(self._header)
            and not self.cookies.check_mac1(datagram)
        )

    def check(self, datagram: bytes, now: float) -> CheckedHello:
        """Is this a Hello of a known peer, newer than its last one? (``screen`` it first:
        this costs the Diffie-Hellman operations.)

        Raises:
            RemoteProtocolError: "not a handshake", "truncated", "oversize", "wrong cipher",
                "bad hello" (not for our key, or tampered with), "unknown peer key",
                "replayed hello", "bad spi".
        """
        _check_header(datagram, HELLO_PREFIX, HELLO_BYTES, self._cipher_id)
        responder = Responder(self._private, self._random_bytes(32), PROLOGUE + self._header)
        client_key, payload = responder.read_hello(datagram[HEADER_BYTES:-MACS_BYTES])
        peer = self.peers.get(client_key)
        if peer is None:
            raise RemoteProtocolError(Drop.UNKNOWN_PEER_KEY)
        client_spi, stamp = HELLO_PAYLOAD.unpack(payload)
        if stamp <= self.latest.get(client_key, -1):
            raise RemoteProtocolError(Drop.REPLAYED_HELLO)
        if client_spi < 256:
            raise RemoteProtocolError(Drop.BAD_SPI)
        return CheckedHello(datagram, peer, _Hello(responder, client_spi, stamp))

    def answer(
        self, hello: CheckedHello, client_address: TunnelAddress
    ) -> tuple[bytes, EspSession]:
        """The Welcome for a checked Hello (its peer's address), and the session."""
        state = hello.state
        assert isinstance(state, _Hello) and hello.peer is not None
        server_spi = spi_from(self._random_bytes(4))
        if server_spi == state.client_spi:
            server_spi = spi_from(self._random_bytes(4))  # one SPI per direction, never shared
        payload = WELCOME_PAYLOAD.pack(server_spi, *pack_address(client_address))
        message, keys = state.responder.welcome(hello.peer.psk or NO_PSK, payload)
        self.latest[hello.peer.public_key] = state.stamp
        session = _session(
            self._cipher, keys.send, state.client_spi, keys.receive, server_spi, self.kernel_peer
        )
        return self._welcome_header + message, session


class IdentityFormat:
    """``--cipher esp-null|esp-aes-gcm`` with identities: implements ``formats.Format``.

    Args:
        name: ``esp-null`` or ``esp-aes-gcm`` (the ESP transform the data travels in).
        client: a client's identity (to make client handshakes).
        server: the server's identity and peers (to make the server's handshake).
    """

    def __init__(
        self,
        name: str,
        *,
        client: ClientIdentity | None = None,
        server: ServerIdentity | None = None,
    ) -> None:
        self.name = name
        self.overhead_bytes = algorithm(name).overhead_bytes
        if name not in CIPHER_IDS:
            raise VpnlabError(f"the identity mode needs an ESP cipher, not {name!r}")
        self.client = client
        self.server = server
        self.kernel_peer = False
        """``--kernel-peer`` with the handshake: its sessions are ``KernelPeerSession``."""

    def is_hello(self, datagram: bytes) -> bool:
        return datagram[:5] == HELLO_PREFIX

    def client_handshake(self, random_bytes: RandomBytes) -> IdentityClientHandshake:
        if self.client is None:
            raise VpnlabError("a client handshake needs the client's config (--config)")
        handshake = IdentityClientHandshake(self.name, self.client, random_bytes)
        handshake.kernel_peer = self.kernel_peer
        return handshake

    def server_handshake(self, random_bytes: RandomBytes) -> IdentityServerHandshake:
        if self.server is None:
            raise VpnlabError("the server's handshake needs its key and peers (--peers)")
        handshake = IdentityServerHandshake(self.name, self.server, random_bytes)
        handshake.kernel_peer = self.kernel_peer
        return handshake


def check_peers(peers: Iterable[Peer], server_address: IPv4Interface) -> None:
    """Every peer a key and an address of its own, inside the tunnel network.

    Raises:
        VpnlabError: naming the first peer that breaks the rule.
    """
    keys: set[bytes] = set()
    addresses = {server_address.ip}
    for peer in peers:
        if peer.public_key in keys:
            raise VpnlabError(f"peer {peer.name}: its public key is another peer's too")
        if peer.tunnel_address.ip in addresses:
            raise VpnlabError(f"peer {peer.name}: address {peer.tunnel_address.ip} is taken")
        if peer.tunnel_address.network != server_address.network:
            raise VpnlabError(
                f"peer {peer.name}: {peer.tunnel_address} is outside {server_address.network}"
            )
        keys.add(peer.public_key)
        addresses.add(peer.tunnel_address.ip)
