"""ServerConnection under a handshake flood: MAC1, MAC2 and the cookie reply (WireGuard).

A Noise Hello costs the server four X25519 operations (about 340 us) before it knows who sent
it. Two cheap proofs come first, as in WireGuard (the paper's section 5.4, wireguard-go
``device/cookie.go``), at the end of every identity Hello::

    ... msg_before_mac1 ... | mac1 (16) | mac2 (16) |
    mac1 = MAC(HASH("mac1----" || server_public), msg_before_mac1)
    mac2 = MAC(cookie, msg_before_mac2)          or 16 zero bytes without a cookie
    cookie = MAC(secret, source address)   secret: 32 random bytes, new every 2 min

    MAC(key, m) = BLAKE2s(m, key=key, digest_size=16)     HASH(m) = BLAKE2s-256(m)

MAC1 proves the sender knows the server's public key (a stranger spraying junk is dropped for
one hash). MAC2 proves the sender receives at its source address: under load, a Hello without
a valid MAC2 gets a cookie reply instead of a Diffie-Hellman, and a spoofed source never reads
it. The cookie travels encrypted under HASH("cookie--" || server_public), with the Hello's
mac1 as associated data (so only the sender of that Hello can use the reply)::

    cookie reply = | 0000 | 0x05 | cipher | nonce (12) | AEAD(cookie) (16 + 16) |   50 bytes

WireGuard seals the cookie with XChaCha20-Poly1305 and a 24-byte random nonce; ``cryptography``
has no XChaCha20, so vpnlab uses ChaCha20-Poly1305 (RFC 8439) with a random 12-byte nonce: the
same cipher with a shorter nonce. A random 96-bit nonce under one key is safe for far more
replies than a server sends in the key's life (the birthday bound is near 2**48), and the
key only seals 16-byte cookies, so nothing else is lost.

Pure code: the time (``now``, seconds) and the randomness come in as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vpnlab.core.errors import RemoteProtocolError
from vpnlab.core.formats import RandomBytes
from vpnlab.core.reasons import Drop

MAC_BYTES = 16
MACS_BYTES = 2 * MAC_BYTES
"""mac1 and mac2 at the end of a Hello."""
COOKIE_SECRET_LIFE_S = 120.0
"""The server draws a new cookie secret this often (WireGuard's CookieRefreshTime)."""
COOKIE_LIFE_S = COOKIE_SECRET_LIFE_S - 5.0
"""A client uses a cookie this long (a little less than the secret lives, as WireGuard)."""
NONCE_BYTES = 12
COOKIE_REPLY_BODY = NONCE_BYTES + MAC_BYTES + 16
"""After the six header bytes: the nonce and the sealed cookie with its tag."""
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"


def mac(key: bytes, message: bytes) -> bytes:
    """MAC(key, m): keyed BLAKE2s, 16 bytes (WireGuard's MAC)."""
    return hashlib.blake2s(message, key=key, digest_size=MAC_BYTES).digest()


def hash32(message: bytes) -> bytes:
    """HASH(m): BLAKE2s-256."""
    return hashlib.blake2s(message).digest()


def source_bytes(host: str, port: int) -> bytes:
    """What a cookie binds: the source address and port. WireGuard hashes the IP's bytes and
    the port; the socket's own text for them (``192.0.2.2|4500``) binds exactly as much and
    costs no parsing per datagram."""
    return f"{host}|{port}".encode()


@dataclass(frozen=True)
class MacKeys:
    """The two keys both sides derive from the server's static public key."""

    mac1: bytes
    cookie: bytes

    @classmethod
    def of(cls, server_public: bytes) -> MacKeys:
        return cls(hash32(LABEL_MAC1 + server_public), hash32(LABEL_COOKIE + server_public))


class CookieChecker:
    """The server's side (``CookieChecker`` in cookie.go): check MAC1 and MAC2, make replies.

    Args:
        server_public: the server's static public key.
        random_bytes: for the cookie secret and the reply's nonce.
    """

    def __init__(self, server_public: bytes, random_bytes: RandomBytes) -> None:
        self.keys = MacKeys.of(server_public)
        self._mac1 = hashlib.blake2s(key=self.keys.mac1, digest_size=MAC_BYTES)  # copied
        self._aead = ChaCha20Poly1305(self.keys.cookie)
        self._random_bytes = random_bytes
        self._secret = b""
        self._secret_until = float("-inf")

    def check_mac1(self, message: bytes) -> bool:
        """Does the Hello's mac1 prove the sender knows our public key? (one hash)"""
        keyed = self._mac1.copy()
        keyed.update(message[:-MACS_BYTES])
        return hmac.compare_digest(keyed.digest(), message[-MACS_BYTES:-MAC_BYTES])

    def cookie(self, source: bytes, now: float) -> bytes:
        """``source``'s cookie now (a new secret every ``COOKIE_SECRET_LIFE_S``)."""
        if now >= self._secret_until or not self._secret:
            self._secret = self._random_bytes(32)
            self._secret_until = now + COOKIE_SECRET_LIFE_S
        return mac(self._secret, source)

    def check_mac2(self, message: bytes, cookie: bytes) -> bool:
        """Does the Hello's mac2 carry this cookie (``cookie(source, now)``)?"""
        return hmac.compare_digest(mac(cookie, message[:-MAC_BYTES]), message[-MAC_BYTES:])

    def reply(self, header: bytes, message: bytes, cookie: bytes) -> bytes:
        """The cookie reply to a Hello: ``header`` (six bytes), a random nonce, and the
        cookie sealed with the Hello's mac1 as associated data."""
        nonce = self._random_bytes(NONCE_BYTES)
        mac1 = message[-MACS_BYTES:-MAC_BYTES]
        return header + nonce + self._aead.encrypt(nonce, cookie, mac1)


class CookieGenerator:
    """The client's side (``CookieGenerator`` in cookie.go): add both MACs, keep a cookie."""

    def __init__(self, server_public: bytes) -> None:
        self.keys = MacKeys.of(server_public)
        self._aead = ChaCha20Poly1305(self.keys.cookie)
        self._cookie = b""
        self._cookie_until = float("-inf")
        self.last_mac1 = b""

    def add_macs(self, body: bytes, now: float) -> bytes:
        """``body`` with mac1 and mac2 (zeros without a fresh cookie) appended."""
        mac1 = mac(self.keys.mac1, body)
        self.last_mac1 = mac1
        with_mac1 = body + mac1
        fresh = self._cookie and now < self._cookie_until
        return with_mac1 + (mac(self._cookie, with_mac1) if fresh else bytes(MAC_BYTES))

    def consume_reply(self, body: bytes, now: float) -> None:
        """A cookie reply's body (after the header): keep its cookie for ``COOKIE_LIFE_S``.

        Raises:
            RemoteProtocolError: "bad cookie reply": the wrong size, or it does not open with
                our last mac1 (not an answer to our Hello).
        """
        if len(body) != COOKIE_REPLY_BODY or not self.last_mac1:
            raise RemoteProtocolError(Drop.BAD_COOKIE_REPLY)
        nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
        try:
            cookie = self._aead.decrypt(nonce, sealed, self.last_mac1)
        except InvalidTag:
            raise RemoteProtocolError(Drop.BAD_COOKIE_REPLY) from None
        self._cookie, self._cookie_until = cookie, now + COOKIE_LIFE_S

    @property
    def has_cookie(self) -> bool:
        return bool(self._cookie)
