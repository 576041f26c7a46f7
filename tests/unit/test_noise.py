"""wire/noise.py: Noise IKpsk2 between an Initiator and a Responder, and everything refused.

The pattern itself is the ``noiseprotocol`` library's (tested there against the Noise test
vectors); these tests check how vpnlab uses it: who learns what, which keys come out, and that
a wrong key, a wrong PSK or one flipped bit ends the handshake with a RemoteProtocolError.
"""

from __future__ import annotations

import random

import pytest

from vpnlab.core.errors import RemoteProtocolError
from vpnlab.wire.noise import (
    HELLO_OVERHEAD,
    NO_PSK,
    WELCOME_OVERHEAD,
    Initiator,
    Responder,
    public_key,
)

PROLOGUE = b"vpnlab test"


def keys(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(5)]


def handshake(psk_client=NO_PSK, psk_server=NO_PSK, server_key=None, tamper=None, seed=1):
    client_static, server_static, e1, e2, _ = keys(seed)
    pinned = public_key(server_key or server_static)
    initiator = Initiator(client_static, pinned, psk_client, e1, PROLOGUE)
    responder = Responder(server_static, e2, PROLOGUE)
    hello = initiator.hello(b"spi+time")
    if tamper == "hello":
        hello = hello[:40] + bytes([hello[40] ^ 1]) + hello[41:]
    who, payload = responder.read_hello(hello)
    welcome, server_keys = responder.welcome(psk_server, b"address")
    if tamper == "welcome":
        welcome = welcome[:-1] + bytes([welcome[-1] ^ 0x80])
    answer, client_keys = initiator.receive(welcome)
    return locals()


def test_Noise_handshake_authenticates_both_and_splits_two_keys():
    run = handshake()
    client_static = keys(1)[0]
    assert run["who"] == public_key(client_static)  # the server learns the client's identity
    assert run["payload"] == b"spi+time" and run["answer"] == b"address"
    assert len(run["hello"]) == HELLO_OVERHEAD + len(b"spi+time")
    assert len(run["welcome"]) == WELCOME_OVERHEAD + len(b"address")
    client, server = run["client_keys"], run["server_keys"]
    assert client.send == server.receive and client.receive == server.send
    assert client.send != client.receive and len(client.send) == 32


def test_Noise_keys_differ_every_handshake():
    assert handshake(seed=1)["client_keys"] != handshake(seed=2)["client_keys"]


def test_Noise_a_client_pinning_another_server_key_is_refused():
    with pytest.raises(RemoteProtocolError, match="bad hello"):
        handshake(server_key=keys(99)[1])


def test_Noise_psk_mismatch_fails_at_the_client():
    with pytest.raises(RemoteProtocolError, match="bad welcome"):
        handshake(psk_client=bytes(range(32)), psk_server=NO_PSK)
    assert handshake(psk_client=bytes(range(32)), psk_server=bytes(range(32)))["answer"]


@pytest.mark.parametrize("where", ["hello", "welcome"])
def test_Noise_one_flipped_bit_is_refused(where):
    with pytest.raises(RemoteProtocolError):
        handshake(tamper=where)


def test_Noise_truncated_and_garbage_messages_are_refused():
    _, server_static, _, e2, _ = keys(1)
    for junk in (b"", b"\x00" * 10, bytes(HELLO_OVERHEAD), random.Random(3).randbytes(200)):
        with pytest.raises(RemoteProtocolError):
            Responder(server_static, e2, PROLOGUE).read_hello(junk)
