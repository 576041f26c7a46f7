"""The handshake pattern of the identity mode: Noise IK with a PSK, as WireGuard does.

``Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`` (https://noiseprotocol.org/noise.html, section 7.5
and 9; WireGuard's own pattern), run by the maintained ``noiseprotocol`` library::

    <- s                    the client knows (pins) the server's static public key
    ...
    -> e, es, s, ss         Hello:   the client's ephemeral key, its static key encrypted,
                            and an encrypted payload (its SPI and a timestamp)
    <- e, ee, se, psk       Welcome: the server's ephemeral key and an encrypted payload (its
                            SPI and the client's tunnel address); the PSK (per peer, or zeros)
                            is mixed in last

After the Welcome both sides hold two transport keys (Noise's Split()): one per direction.
vpnlab does not send its data with Noise's own transport messages: the keys are expanded into
the two ESP security associations (``crypto.sa_key``), so the data stays RFC 4303 ESP
that tshark decrypts and scapy opens. What Noise gives us: mutual authentication by static
keys (a client holds only its own private key, so it cannot impersonate another client nor
read another's traffic), identity hiding for the client, forward secrecy from the ephemeral
keys, and a pattern that has been analysed, instead of a home-made one.

Pure code: the ephemeral private keys are passed in (from the core's ``random_bytes``), so a
handshake is reproducible in tests.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseValueError,
)

from vpnlab.core.errors import RemoteProtocolError, VpnlabError
from vpnlab.core.reasons import Drop

PROTOCOL = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
KEY_BYTES = 32
REFUSED = (
    InvalidTag,
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseValueError,
    ValueError,
    IndexError,
)
"""What the library raises for a message that is not a valid one for this handshake."""
NO_PSK = bytes(KEY_BYTES)
"""WireGuard's default: a peer without a pre-shared key mixes in 32 zero bytes."""
HELLO_OVERHEAD = 32 + (32 + 16) + 16
"""Message 1 without its payload: ephemeral key, encrypted static key + tag, payload tag."""
WELCOME_OVERHEAD = 32 + 16
"""Message 2 without its payload: ephemeral key, payload tag."""


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class TransportKeys:
    """Split(): one 32-byte key per direction, as this side sees them."""

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)


def _connection(
    initiator: bool, static: bytes, ephemeral: bytes, prologue: bytes
) -> NoiseConnection:
    proto = NoiseConnection.from_name(PROTOCOL)
    if initiator:
        proto.set_as_initiator()
    else:
        proto.set_as_responder()
    proto.set_keypair_from_private_bytes(Keypair.STATIC, static)
    proto.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    proto.set_prologue(prologue)
    return proto


def _start(proto: NoiseConnection) -> None:
    with warnings.catch_warnings():  # "ephemeral keypair already set": injected on purpose
        warnings.simplefilter("ignore", UserWarning)
        proto.start_handshake()


def _split(proto: NoiseConnection) -> TransportKeys:
    state = proto.noise_protocol
    send, receive = state.cipher_state_encrypt.k, state.cipher_state_decrypt.k
    return TransportKeys(bytes(send), bytes(receive))


def _keys(*keys: bytes) -> None:
    if any(len(key) != KEY_BYTES for key in keys):
        raise VpnlabError("Noise keys are 32 bytes (X25519 private/public keys, PSK)")


class Initiator:
    """ClientConnection's half: write the Hello, read the Welcome.

    Args:
        static_private: the client's own private key.
        server_public: the server's public key, pinned in the client's config.
        psk: the pre-shared key for this peer (NO_PSK if none).
        ephemeral_private: a fresh random key for this one handshake.
        prologue: bytes both sides bind into the handshake (the message header).
    """

    def __init__(
        self,
        static_private: bytes,
        server_public: bytes,
        psk: bytes,
        ephemeral_private: bytes,
        prologue: bytes,
    ) -> None:
        _keys(static_private, server_public, psk, ephemeral_private)
        self._inputs = (static_private, server_public, psk, ephemeral_private, prologue)
        self._payload: bytes | None = None

    def _fresh(self) -> NoiseConnection:
        static_private, server_public, psk, ephemeral_private, prologue = self._inputs
        proto = _connection(True, static_private, ephemeral_private, prologue)
        proto.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server_public)
        proto.set_psks(psk)
        _start(proto)
        return proto

    def hello(self, payload: bytes) -> bytes:
        """Message 1 (-> e, es, s, ss), carrying ``payload`` encrypted."""
        self._payload = payload
        return bytes(self._fresh().write_message(payload))

    def receive(self, welcome: bytes) -> tuple[bytes, TransportKeys]:
        """Message 2 (<- e, ee, se, psk): its payload and the transport keys.

        Each Welcome is read by a fresh copy of the handshake (the Hello written again: the
        same keys give the same bytes), so a forged Welcome cannot spoil the state in which
        the real one is read.

        Raises:
            RemoteProtocolError: "bad welcome": not from the pinned server (or not this PSK).
        """
        if self._payload is None:
            raise RemoteProtocolError(Drop.BAD_WELCOME)
        proto = self._fresh()
        proto.write_message(self._payload)
        try:
            payload = bytes(proto.read_message(welcome))
        except REFUSED as exc:
            raise RemoteProtocolError(Drop.BAD_WELCOME) from exc
        return payload, _split(proto)


class Responder:
    """ServerConnection's half for one Hello: read it, learn who sent it, answer it.

    Args:
        static_private: the server's private key.
        ephemeral_private: a fresh random key for this one handshake.
        prologue: as for :class:`Initiator`.
    """

    def __init__(self, static_private: bytes, ephemeral_private: bytes, prologue: bytes) -> None:
        _keys(static_private, ephemeral_private)
        self._proto = _connection(False, static_private, ephemeral_private, prologue)
        self._proto.set_psks(NO_PSK)  # replaced by the peer's once we know the peer
        _start(self._proto)

    def read_hello(self, hello: bytes) -> tuple[bytes, bytes]:
        """Message 1: the client's static public key and the decrypted payload.

        Raises:
            RemoteProtocolError: "bad hello": not for this server's key, or tampered with.
        """
        try:
            payload = bytes(self._proto.read_message(hello))
        except REFUSED as exc:
            raise RemoteProtocolError(Drop.BAD_HELLO) from exc
        client_public = self._proto.noise_protocol.handshake_state.rs.public_bytes
        return bytes(client_public), payload

    def welcome(self, psk: bytes, payload: bytes) -> tuple[bytes, TransportKeys]:
        """Message 2 for the peer read from the Hello, with that peer's ``psk``."""
        _keys(psk)
        self._proto.noise_protocol.psks = [psk]
        message = bytes(self._proto.write_message(payload))
        return message, _split(self._proto)
