"""The key schedule: the ESP algorithms' sizes and names, the SAs' keys, the handshakes' HKDF.

What one SA does to each datagram (the two transforms, the anti-replay window) lives in
``esp.py`` beside the framing; this module only says which algorithms there are and derives
their keys, in the style of aioquic's ``quic/crypto.py`` next to ``quic/packet.py``.

    esp-null      RFC 2410 NULL encryption + RFC 4868 HMAC-SHA-256-128 (32-byte key)
    esp-aes-gcm   RFC 4106 AES-GCM-128, 16-byte ICV (20 bytes: 16-byte key || 4-byte salt)

Key schedule of a handshake (``handshake.py`` has the messages)::

    hello_key = HKDF-SHA256(salt="vpnlab/1 psk", ikm=PSK, info="vpnlab/1 hello")        (32 B)
    okm       = HKDF-SHA256(salt=PSK, ikm=X25519(eph_c, eph_s),
                            info="vpnlab/1 session " || cipher || SHA256(Hello || Welcome*))
              = spi_c2s (4) | spi_s2c (4) | key_c2s | key_s2c | confirm_key (32)

``Welcome*`` is the Welcome without its tag. Pure code: no socket, no clock, no os.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vpnlab.core.errors import VpnlabError

# ESP's sizes that the algorithms and the SAs below need as well; ``esp.py`` imports them
# from here (the arrow goes esp -> crypto only).
ESP_HEADER = struct.Struct("!II")
"""SPI, sequence number (RFC 4303 section 2.1 and 2.2)."""

ICV_BYTES = 16
MAX_SEQ = 0xFFFFFFFF
"""Largest 32-bit sequence number (and SPI); the sender refuses to wrap (RFC 4303 3.3.3)."""

LABEL = b"vpnlab/1 "


@dataclass(frozen=True)
class Algorithm:
    """One ESP transform: its sizes and its names in Wireshark and in ``ip xfrm``."""

    name: str
    key_bytes: int
    iv_bytes: int
    tshark_encryption: str
    tshark_authentication: str

    @property
    def overhead_bytes(self) -> int:
        """ESP header (8) + IV + largest padding (3) + pad length and next header (2) + ICV."""
        return ESP_HEADER.size + self.iv_bytes + 3 + 2 + ICV_BYTES

    def xfrm_args(self, key: bytes) -> list[str]:
        """The algorithm part of ``ip xfrm state add`` for this transform and ``key``."""
        if self.name == "esp-aes-gcm":
            return ["aead", "rfc4106(gcm(aes))", "0x" + key.hex(), str(ICV_BYTES * 8)]
        return ["enc", "cipher_null", "", "auth-trunc", "hmac(sha256)", "0x" + key.hex(), "128"]


ALGORITHMS = {
    "esp-null": Algorithm("esp-null", 32, 0, "NULL", "HMAC-SHA-256-128 [RFC4868]"),
    "esp-aes-gcm": Algorithm("esp-aes-gcm", 20, 8, "AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
}
"""The ``--cipher`` values this module protects, by name."""


def algorithm(name: str) -> Algorithm:
    """The ESP transform named ``name``.

    Raises:
        VpnlabError: ``name`` is not an ESP cipher.
    """
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise VpnlabError(f"not an ESP cipher: {name!r}") from None


@dataclass(frozen=True)
class SaKeys:
    """One direction's security association: its SPI and its key material."""

    spi: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 256 <= self.spi <= MAX_SEQ:
            raise VpnlabError(f"SPI {self.spi:#x} outside 0x100..0xffffffff (RFC 4303 2.1)")


def hmac_sha256_128(key: bytes, data: bytes) -> bytes:
    """RFC 4868 HMAC-SHA-256-128: HMAC-SHA-256 truncated to its first 128 bits."""
    return hmac.digest(key, data, "sha256")[:ICV_BYTES]


def _hkdf(length: int, salt: bytes, ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hello_key(psk: bytes) -> bytes:
    """ClientConnection: the key that authenticates a Hello, derived from the PSK alone."""
    return _hkdf(32, LABEL + b"psk", psk, LABEL + b"hello")


def spi_from(raw: bytes) -> int:
    """A pseudo-random SPI from 4 bytes, mapped into 0x100..0xffffffff (1-255 are reserved)."""
    return int.from_bytes(raw, "big") % (MAX_SEQ + 1 - 256) + 256


def sa_key(name: str, transport_key: bytes, spi: int) -> bytes:
    """The identity mode: one direction's ESP key from its Noise transport key (Split()),
    bound to the cipher and that direction's SPI."""
    info = LABEL + b"esp " + name.encode() + spi.to_bytes(4, "big")
    return _hkdf(algorithm(name).key_bytes, b"", transport_key, info)


@dataclass(frozen=True)
class SessionKeys:
    """What one handshake derives: both directions' SAs and the Welcome's confirmation key."""

    client_to_server: SaKeys
    server_to_client: SaKeys
    confirm_key: bytes = field(repr=False)


def session_keys(name: str, psk: bytes, dh_secret: bytes, transcript: bytes) -> SessionKeys:
    """ServerConnection/ClientConnection: HKDF over DH secret, PSK and both messages.

    Args:
        name: the cipher, which fixes the key lengths and is bound into the keys.
        psk: the pre-shared key (the HKDF salt).
        dh_secret: the X25519 shared secret (the HKDF input keying material).
        transcript: Hello || Welcome without its tag.

    Returns:
        Both SAs (SPIs and keys) and the 32-byte key of the Welcome's tag.
    """
    klen = algorithm(name).key_bytes
    info = LABEL + b"session " + name.encode() + hashlib.sha256(transcript).digest()
    okm = _hkdf(8 + 2 * klen + 32, psk, dh_secret, info)
    return SessionKeys(
        SaKeys(spi_from(okm[0:4]), okm[8 : 8 + klen]),
        SaKeys(spi_from(okm[4:8]), okm[8 + klen : 8 + 2 * klen]),
        okm[8 + 2 * klen :],
    )
