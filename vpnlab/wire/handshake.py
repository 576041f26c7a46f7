"""ClientConnection/ServerConnection for the ESP formats: a PSK-authenticated X25519 Hello.

It replaces the text Hello of ``plain.py``. Both messages start with the RFC 3948 non-ESP
marker (four zero bytes: an SPI is never 0), then a type byte, so they are never taken for ESP
nor for a NAT-keepalive. All integers are big-endian::

    Hello (client -> server, 62 bytes)
      0      4      5        6                14                    46           62
      | 0000 | 0x01 | cipher | timestamp (8)  | client X25519 (32)  | MAC (16)  |
    Welcome (server -> client, 59 bytes)
      0      4      5        6                    38               42       43          59
      | 0000 | 0x02 | cipher | server X25519 (32) | client address (4) | prefix | tag (16) |

    cipher     1 esp-null, 2 esp-aes-gcm
    timestamp  the client's ``now`` in microseconds (unsigned)
    address    an IPv4 address and its prefix length, or (prefix 64) an IPv6-only address of
               fd10:8::/64 (``welcome_address.py``)
    MAC        HMAC-SHA-256-128 under hello_key = HKDF(PSK) over the 46 bytes before it
    tag        HMAC-SHA-256-128 under confirm_key over the 43 bytes before it

Keys, SPIs and confirm_key come from HKDF over the X25519 secret, the PSK and both messages
(``crypto.session_keys``), so a Welcome whose tag checks proves the server knows the PSK and
its ephemeral key, and binds the tunnel address it assigns. The server answers a Hello once:
a Hello outside the clock-skew window is "stale hello", one already answered (kept in a
bounded cache) is "replayed hello". Neither side replies to anything it rejects.

Clock: the timestamp is only comparable if both sides' ``now`` come from the same clock, so the
cores in ``session.py`` hand the handshake wall-clock time (their monotonic ``now`` plus the
``clock_offset_s`` the loop measures again every second), never the bare monotonic clock.
Pure code: no socket, no clock, no os; randomness is injected.
"""

from __future__ import annotations

import hmac
import struct
from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.core.formats import (
    AnswersHellos,
    CheckedHello,
    Established,
    RandomBytes,
    SendsHellos,
)
from vpnlab.core.pool import TunnelAddress
from vpnlab.core.reasons import Drop
from vpnlab.wire.crypto import algorithm, hello_key, hmac_sha256_128, session_keys
from vpnlab.wire.esp import NON_ESP_MARKER, EspSession, KernelPeerSession
from vpnlab.wire.welcome_address import pack_address, unpack_address

HELLO = struct.Struct("!4sBBQ32s16s")
WELCOME = struct.Struct("!4sBB32s4sB16s")
HELLO_TYPE = 1
WELCOME_TYPE = 2
HELLO_PREFIX = NON_ESP_MARKER + bytes((HELLO_TYPE,))
WELCOME_PREFIX = NON_ESP_MARKER + bytes((WELCOME_TYPE,))
CIPHER_IDS = {"esp-null": 1, "esp-aes-gcm": 2}

HELLO_MAX_SKEW_S = 30.0
"""ServerConnection: a Hello's timestamp may be this far from the server's ``now``."""

HELLO_CACHE_SIZE = 4096
"""ServerConnection: how many answered Hellos are remembered until they are stale; when full,
new Hellos are refused ("hello cache full") rather than forgetting one that could be replayed."""

MIN_PSK_BYTES = 16


def _mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA-256-128 over ``message`` minus its last 16 bytes (where the MAC goes)."""
    return hmac_sha256_128(key, message[:-16])


def _check_prefix(datagram: bytes, prefix: bytes, size: int, cipher_id: int) -> None:
    """Marker and type, exact length, then cipher: the checks that need no key."""
    if datagram[:5] != prefix:
        raise RemoteProtocolError(Drop.NOT_A_HANDSHAKE)
    if len(datagram) < size:
        raise RemoteProtocolError(Drop.TRUNCATED)
    if len(datagram) > size:
        raise RemoteProtocolError(Drop.OVERSIZE)
    if datagram[5] != cipher_id:
        raise RemoteProtocolError(Drop.WRONG_CIPHER)


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    """RFC 7748 X25519 with the peer's 32-byte public key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point gives the all-zero secret
        raise RemoteProtocolError(Drop.BAD_PUBLIC_KEY) from None


def _public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


class EspClientHandshake(SendsHellos):
    """ClientConnection: send the Hello, check the Welcome, derive the session.

    Args:
        cipher: ``esp-null`` or ``esp-aes-gcm``.
        psk: the pre-shared key.
        random_bytes: the source of the ephemeral X25519 key.
    """

    kernel_peer = False
    """The peer is Linux's own ESP (``--kernel-peer``): the sessions are ``KernelPeerSession``."""

    def __init__(self, cipher: str, psk: bytes, random_bytes: RandomBytes) -> None:
        algorithm(cipher)
        self._cipher = cipher
        self._cipher_id = CIPHER_IDS[cipher]
        self._psk = psk
        self._hello_key = hello_key(psk)
        self._private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        self._hello = b""
        self._welcome = b""
        self._established: Established | None = None

    def hello(self, now: float) -> bytes:
        """ClientConnection: the Hello; a retry returns the same bytes.

        Args:
            now: the client's clock, seconds (see the module docstring on clocks).

        Raises:
            LocalProtocolError: ``now`` is negative or absurdly large.
        """
        if not self._hello:
            if not 0 <= now < 2.0**63 / 1e6:
                raise LocalProtocolError("now out of range for a hello timestamp")
            fields = (HELLO_PREFIX[:4], HELLO_TYPE, self._cipher_id, int(now * 1e6))
            body = HELLO.pack(*fields, _public_bytes(self._private), bytes(16))
            self._hello = body[:-16] + _mac(self._hello_key, body)
        return self._hello

    def receive(self, datagram: bytes, now: float) -> Established:
        """ClientConnection: the server's Welcome; the same Welcome again gives the same session.

        Args:
            datagram: a datagram from the server.
            now: unused (the Welcome is bound to our Hello by its tag).

        Returns:
            The session (client -> server outbound) and our tunnel address.

        Raises:
            RemoteProtocolError: "not a handshake", "truncated", "oversize", "wrong cipher",
                "bad public key", "wrong psk or mutated", "bad welcome address",
                "unexpected welcome" (a different Welcome after the first).
            LocalProtocolError: called before ``hello``.
        """
        if self._established is not None:
            if datagram == self._welcome:
                return self._established
            raise RemoteProtocolError(Drop.UNEXPECTED_WELCOME)
        if not self._hello:
            raise LocalProtocolError("receive before hello")
        _check_prefix(datagram, WELCOME_PREFIX, WELCOME.size, self._cipher_id)
        _, _, _, server_public, ip, prefix, tag = WELCOME.unpack(datagram)
        secret = _exchange(self._private, server_public)
        keys = session_keys(self._cipher, self._psk, secret, self._hello + datagram[:-16])
        if not hmac.compare_digest(_mac(keys.confirm_key, datagram), tag):
            raise RemoteProtocolError(Drop.WRONG_PSK_OR_MUTATED)
        address = unpack_address(ip, prefix)
        kind = KernelPeerSession if self.kernel_peer else EspSession
        session = kind(self._cipher, keys.client_to_server, keys.server_to_client)
        self._welcome = datagram
        self._established = Established(session, address)
        return self._established


class EspServerHandshake(AnswersHellos):
    """ServerConnection: answer each fresh, authentic Hello once with a Welcome.

    Args:
        cipher: ``esp-null`` or ``esp-aes-gcm``.
        psk: the pre-shared key.
        random_bytes: the source of each Welcome's ephemeral X25519 key.
        max_skew_s: how far a Hello's timestamp may be from our ``now``.
        cache_size: how many answered Hellos to remember (bounds the server's memory).
    """

    kernel_peer = False
    """The peer is Linux's own ESP (``--kernel-peer``): the sessions are ``KernelPeerSession``."""

    def __init__(
        self,
        cipher: str,
        psk: bytes,
        random_bytes: RandomBytes,
        *,
        max_skew_s: float = HELLO_MAX_SKEW_S,
        cache_size: int = HELLO_CACHE_SIZE,
    ) -> None:
        algorithm(cipher)
        self._cipher = cipher
        self._cipher_id = CIPHER_IDS[cipher]
        self._psk = psk
        self._hello_key = hello_key(psk)
        self._random_bytes = random_bytes
        self.max_skew_s = max_skew_s
        self.cache_size = cache_size
        self._answered: OrderedDict[bytes, float] = OrderedDict()  # Hello -> forget after

    def check(self, datagram: bytes, now: float) -> CheckedHello:
        """ServerConnection: is this an authentic Hello, fresh, and not answered before?

        Args:
            datagram: the Hello.
            now: the server's clock, seconds, the same clock as the clients' (module docstring).

        Raises:
            RemoteProtocolError: "not a handshake", "truncated", "oversize", "wrong cipher",
                "wrong psk or mutated", "stale hello", "replayed hello", "hello cache full".
        """
        _check_prefix(datagram, HELLO_PREFIX, HELLO.size, self._cipher_id)
        _, _, _, stamp_us, _, mac = HELLO.unpack(datagram)
        if not hmac.compare_digest(_mac(self._hello_key, datagram), mac):
            raise RemoteProtocolError(Drop.WRONG_PSK_OR_MUTATED)
        stamp = stamp_us / 1e6
        if abs(now - stamp) > self.max_skew_s:
            raise RemoteProtocolError(Drop.STALE_HELLO)
        self._forget_expired(now)
        if datagram in self._answered:
            raise RemoteProtocolError(Drop.REPLAYED_HELLO)
        if len(self._answered) >= self.cache_size:
            # forgetting one that is still fresh would let it be replayed: refuse instead
            raise RemoteProtocolError(Drop.HELLO_CACHE_FULL)
        return CheckedHello(datagram, state=stamp)

    def answer(
        self, hello: CheckedHello, client_address: TunnelAddress
    ) -> tuple[bytes, EspSession]:
        """ServerConnection: assign ``client_address``, derive the session, remember the Hello.

        Returns:
            The Welcome to send back, and the session (server -> client outbound).

        Raises:
            RemoteProtocolError: "bad public key".
        """
        datagram = hello.datagram
        client_public = HELLO.unpack(datagram)[4]
        private = X25519PrivateKey.from_private_bytes(self._random_bytes(32))
        secret = _exchange(private, client_public)
        body = WELCOME.pack(
            WELCOME_PREFIX[:4],
            WELCOME_TYPE,
            self._cipher_id,
            _public_bytes(private),
            *pack_address(client_address),
            bytes(16),
        )
        keys = session_keys(self._cipher, self._psk, secret, datagram + body[:-16])
        welcome = body[:-16] + _mac(keys.confirm_key, body)
        self._answered[datagram] = hello.state + self.max_skew_s  # type: ignore[operator]
        kind = KernelPeerSession if self.kernel_peer else EspSession
        return welcome, kind(self._cipher, keys.server_to_client, keys.client_to_server)

    def _forget_expired(self, now: float) -> None:
        """Drop remembered Hellos that would now be stale anyway (oldest answered first)."""
        answered = self._answered
        while answered:
            hello, forget_after = next(iter(answered.items()))
            if forget_after >= now:
                break
            del answered[hello]


class EspFormat:
    """``--cipher esp-null`` / ``--cipher esp-aes-gcm``: implements ``formats.Format``.

    Args:
        name: ``esp-null`` or ``esp-aes-gcm``.
        psk: the pre-shared key (surrounding ASCII whitespace is ignored).
        max_skew_s: see :class:`EspServerHandshake`.
        cache_size: see :class:`EspServerHandshake`.

    Raises:
        VpnlabError: unknown cipher, or a PSK shorter than 16 bytes.
    """

    def __init__(
        self,
        name: str,
        psk: bytes,
        *,
        max_skew_s: float = HELLO_MAX_SKEW_S,
        cache_size: int = HELLO_CACHE_SIZE,
    ) -> None:
        self.name = name
        self.overhead_bytes = algorithm(name).overhead_bytes
        self.psk = psk.strip()
        if len(self.psk) < MIN_PSK_BYTES:
            raise VpnlabError(f"the pre-shared key needs at least {MIN_PSK_BYTES} bytes")
        self.max_skew_s = max_skew_s
        self.cache_size = cache_size
        self.kernel_peer = False
        """``--kernel-peer`` with the handshake: its sessions are ``KernelPeerSession`` (the
        peer is a vpnlab daemon whose kernel carries the data, ``--kernel-dataplane``)."""

    def is_hello(self, datagram: bytes) -> bool:
        """Whether ``datagram`` claims to be a Hello (``respond`` checks the rest)."""
        return datagram[:5] == HELLO_PREFIX

    def client_handshake(self, random_bytes: RandomBytes) -> EspClientHandshake:
        """ClientConnection: a fresh handshake (a fresh ephemeral key) for one connection."""
        handshake = EspClientHandshake(self.name, self.psk, random_bytes)
        handshake.kernel_peer = self.kernel_peer
        return handshake

    def server_handshake(self, random_bytes: RandomBytes) -> EspServerHandshake:
        """ServerConnection: the one handshake object that answers every client."""
        handshake = EspServerHandshake(
            self.name,
            self.psk,
            random_bytes,
            max_skew_s=self.max_skew_s,
            cache_size=self.cache_size,
        )
        handshake.kernel_peer = self.kernel_peer
        return handshake


def esp_format(
    name: str,
    psk: bytes,
    *,
    max_skew_s: float = HELLO_MAX_SKEW_S,
    cache_size: int = HELLO_CACHE_SIZE,
) -> EspFormat:
    """The Format of ``--cipher name`` (called by ``formats.make_format``).

    Args:
        name: ``esp-null`` or ``esp-aes-gcm``.
        psk: the pre-shared key, as read from the key file.
        max_skew_s: see :class:`EspServerHandshake`.
        cache_size: see :class:`EspServerHandshake`.

    Raises:
        VpnlabError: unknown cipher, or a PSK shorter than 16 bytes.
    """
    return EspFormat(name, psk, max_skew_s=max_skew_s, cache_size=cache_size)
