"""Unit tests for vpnlab.wire.handshake: the PSK-authenticated X25519 Hello/Welcome exchange."""

from __future__ import annotations

import random
from ipaddress import IPv4Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.core.formats import Kind
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.crypto import hello_key, hmac_sha256_128
from vpnlab.wire.esp import EspSession
from vpnlab.wire.handshake import (
    HELLO,
    HELLO_MAX_SKEW_S,
    WELCOME,
    EspFormat,
    EspServerHandshake,
    esp_format,
)

CIPHERS = ["esp-aes-gcm", "esp-null"]
PSK = b"correct horse battery staple 0600"
ADDRESS = IPv4Interface("10.8.0.2/24")
NOW = 1000.0
PACKET = bytes.fromhex("4500001c 00010000 40010000 0a080002 0a080001 0800f7ff 00000000")


def rng(seed: int):
    """Deterministic randomness, as the daemons' os.urandom."""
    return random.Random(seed).randbytes


def handshake(cipher: str, seed: int = 1, address: IPv4Interface = ADDRESS):
    """One full exchange; returns (hello, welcome, client Established, server session)."""
    fmt = esp_format(cipher, PSK)
    client = fmt.client_handshake(rng(seed))
    server = fmt.server_handshake(rng(seed + 1000))
    hello = client.hello(NOW)
    welcome, server_session = server.respond(hello, address, NOW + 0.1)
    return hello, welcome, client.receive(welcome, NOW + 0.2), server_session


def reason(call, *args) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        call(*args)
    return info.value.reason


@pytest.mark.parametrize("cipher", CIPHERS)
def test_handshake_success_and_traffic_both_ways(cipher: str) -> None:
    hello, welcome, established, server_session = handshake(cipher)
    assert len(hello) == HELLO.size == 62 and len(welcome) == WELCOME.size == 59
    assert hello[:5] == b"\x00\x00\x00\x00\x01" and welcome[:5] == b"\x00\x00\x00\x00\x02"
    assert established.client_address == ADDRESS
    client_session = established.protection
    assert isinstance(client_session, EspSession)
    assert client_session.outbound == server_session.inbound
    assert client_session.inbound == server_session.outbound
    assert server_session.open(client_session.seal(PACKET)) == (Kind.PACKET, PACKET)
    assert client_session.open(server_session.seal(PACKET)) == (Kind.PACKET, PACKET)
    assert client_session.open(server_session.seal_bye()) == (Kind.BYE, b"")


@pytest.mark.parametrize("address", ["10.8.0.77/24", "172.16.5.9/16", "192.168.1.1/32"])
def test_handshake_carries_the_assigned_address(address: str) -> None:
    *_, established, _ = handshake("esp-aes-gcm", address=IPv4Interface(address))
    assert established.client_address == IPv4Interface(address)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_two_sessions_derive_different_keys_and_spis(cipher: str) -> None:
    fmt = esp_format(cipher, PSK)
    server = fmt.server_handshake(rng(99))
    sessions = []
    for seed in (1, 2):
        client = fmt.client_handshake(rng(seed))
        welcome, session = server.respond(client.hello(NOW), ADDRESS, NOW)
        assert client.receive(welcome, NOW).protection.outbound == session.inbound
        sessions.append(session)
    first, second = sessions
    assert first.inbound.key != second.inbound.key and first.outbound.key != second.outbound.key
    assert first.inbound.spi != second.inbound.spi and first.outbound.spi != second.outbound.spi
    assert first.inbound.spi != first.outbound.spi


def test_hello_retry_is_the_same_bytes() -> None:
    client = esp_format("esp-null", PSK).client_handshake(rng(1))
    assert client.hello(NOW) == client.hello(NOW + 0.5) == client.hello(NOW + 2.0)


def test_client_accepts_the_same_welcome_twice_but_no_other() -> None:
    fmt = esp_format("esp-aes-gcm", PSK)
    client = fmt.client_handshake(rng(1))
    server = fmt.server_handshake(rng(2))
    hello = client.hello(NOW)
    welcome, _ = server.respond(hello, ADDRESS, NOW)
    established = client.receive(welcome, NOW)
    assert client.receive(welcome, NOW) is established  # same counters: no nonce reuse
    other = handshake("esp-aes-gcm", seed=5)[1]
    assert reason(client.receive, other, NOW) == "unexpected welcome"


def test_client_receive_before_hello_is_a_bug() -> None:
    client = esp_format("esp-null", PSK).client_handshake(rng(1))
    with pytest.raises(LocalProtocolError):
        client.receive(handshake("esp-null")[1], NOW)
    with pytest.raises(LocalProtocolError):
        client.hello(-1.0)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_server_refuses_a_hello_with_the_wrong_psk(cipher: str) -> None:
    stranger = esp_format(cipher, b"some other pre-shared key").client_handshake(rng(1))
    server = esp_format(cipher, PSK).server_handshake(rng(2))
    assert reason(server.respond, stranger.hello(NOW), ADDRESS, NOW) == "wrong psk or mutated"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_client_refuses_a_welcome_made_with_the_wrong_psk(cipher: str) -> None:
    # Same ephemeral key and timestamp: the two Hellos differ only in their MAC.
    client = esp_format(cipher, PSK).client_handshake(rng(1))
    impostor_fmt = esp_format(cipher, b"some other pre-shared key")
    impostor_hello = impostor_fmt.client_handshake(rng(1)).hello(NOW)
    assert impostor_hello[:-16] == client.hello(NOW)[:-16]
    welcome, _ = impostor_fmt.server_handshake(rng(2)).respond(impostor_hello, ADDRESS, NOW)
    assert reason(client.receive, welcome, NOW) == "wrong psk or mutated"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_server_answers_a_hello_only_once(cipher: str) -> None:
    fmt = esp_format(cipher, PSK)
    hello = fmt.client_handshake(rng(1)).hello(NOW)
    server = fmt.server_handshake(rng(2))
    server.respond(hello, ADDRESS, NOW)
    assert reason(server.respond, hello, ADDRESS, NOW + 1) == "replayed hello"
    assert reason(server.respond, hello, IPv4Interface("10.8.0.3/24"), NOW + 29) == (
        "replayed hello"
    )
    assert reason(server.respond, hello, ADDRESS, NOW + 31) == "stale hello"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (-HELLO_MAX_SKEW_S - 0.01, "stale hello"),
        (-HELLO_MAX_SKEW_S + 0.01, None),
        (HELLO_MAX_SKEW_S - 0.01, None),
        (HELLO_MAX_SKEW_S + 0.01, "stale hello"),
        (1e6, "stale hello"),
    ],
)
def test_server_checks_the_hello_against_the_skew_window(offset: float, expected) -> None:
    fmt = esp_format("esp-null", PSK)
    hello = fmt.client_handshake(rng(1)).hello(NOW)
    server = fmt.server_handshake(rng(2))
    if expected is None:
        server.respond(hello, ADDRESS, NOW + offset)
    else:
        assert reason(server.respond, hello, ADDRESS, NOW + offset) == expected


def test_server_replay_cache_is_bounded_and_forgets_stale_hellos() -> None:
    """A full cache refuses new Hellos instead of forgetting fresh ones: forgetting the oldest
    (as a FIFO did) let a Hello be replayed once 4096 others had come within its 30 s."""
    fmt = esp_format("esp-aes-gcm", PSK, cache_size=3)
    server = fmt.server_handshake(rng(2))
    assert isinstance(server, EspServerHandshake)
    hellos = [fmt.client_handshake(rng(seed)).hello(NOW + seed) for seed in range(5)]
    for hello in hellos[:3]:
        server.respond(hello, ADDRESS, NOW + 5)
        assert len(server._answered) <= 3
    assert reason(server.respond, hellos[3], ADDRESS, NOW + 5) == "hello cache full"
    for hello in hellos[:3]:  # still fresh, still remembered: never answered twice
        assert reason(server.respond, hello, ADDRESS, NOW + 5) == "replayed hello"
    late = fmt.client_handshake(rng(9)).hello(NOW + 100)
    server.respond(late, ADDRESS, NOW + 100)  # every earlier Hello is stale by now
    assert list(server._answered) == [late]


def test_server_refuses_a_hello_for_another_cipher() -> None:
    hello = esp_format("esp-null", PSK).client_handshake(rng(1)).hello(NOW)
    server = esp_format("esp-aes-gcm", PSK).server_handshake(rng(2))
    assert reason(server.respond, hello, ADDRESS, NOW) == "wrong cipher"


def test_server_refuses_a_low_order_public_key() -> None:
    body = HELLO.pack(bytes(4), 1, 2, int(NOW * 1e6), bytes(32), bytes(16))
    hello = body[:-16] + hmac_sha256_128(hello_key(PSK), body[:-16])
    server = esp_format("esp-aes-gcm", PSK).server_handshake(rng(2))
    assert reason(server.respond, hello, ADDRESS, NOW) == "bad public key"


HELLO_REASONS = {"not a handshake", "truncated", "oversize", "wrong cipher", "wrong psk or mutated"}
WELCOME_REASONS = HELLO_REASONS | {"bad public key"}


@pytest.mark.parametrize("cipher", CIPHERS)
def test_every_truncated_or_mutated_hello_gets_no_reply(cipher: str) -> None:
    hello = esp_format(cipher, PSK).client_handshake(rng(1)).hello(NOW)
    server = esp_format(cipher, PSK).server_handshake(rng(2))
    for size in range(len(hello)):
        assert reason(server.respond, hello[:size], ADDRESS, NOW) in HELLO_REASONS
    assert reason(server.respond, hello + b"\x00", ADDRESS, NOW) == "oversize"
    for index in range(len(hello)):
        for bit in (0x01, 0x80):
            broken = bytearray(hello)
            broken[index] ^= bit
            assert reason(server.respond, bytes(broken), ADDRESS, NOW) in HELLO_REASONS
    assert not server._answered
    server.respond(hello, ADDRESS, NOW)  # the genuine one still works


@pytest.mark.parametrize("cipher", CIPHERS)
def test_every_truncated_or_mutated_welcome_is_refused(cipher: str) -> None:
    fmt = esp_format(cipher, PSK)
    client = fmt.client_handshake(rng(1))
    welcome, _ = fmt.server_handshake(rng(2)).respond(client.hello(NOW), ADDRESS, NOW)
    for size in range(len(welcome)):
        assert reason(client.receive, welcome[:size], NOW) in WELCOME_REASONS
    assert reason(client.receive, welcome + b"\x00", NOW) == "oversize"
    for index in range(len(welcome)):
        for bit in (0x01, 0x80):
            broken = bytearray(welcome)
            broken[index] ^= bit
            assert reason(client.receive, bytes(broken), NOW) in WELCOME_REASONS
    assert client.receive(welcome, NOW).client_address == ADDRESS


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=100), prefix=st.sampled_from([b"", b"\x00" * 4 + b"\x01\x02"]))
def test_respond_and_receive_raise_only_RemoteProtocolError(data: bytes, prefix: bytes) -> None:
    fmt = esp_format("esp-aes-gcm", PSK)
    with pytest.raises(RemoteProtocolError):
        fmt.server_handshake(rng(2)).respond(prefix + data, ADDRESS, NOW)
    client = fmt.client_handshake(rng(1))
    client.hello(NOW)
    with pytest.raises(RemoteProtocolError):
        client.receive(b"\x00" * 4 + b"\x02\x02" + data if prefix else data, NOW)


# --- the Format -------------------------------------------------------------------------------


def test_make_format_builds_the_esp_formats() -> None:
    for cipher, overhead in (("esp-null", 29), ("esp-aes-gcm", 37)):
        fmt = make_format(cipher, PSK)
        assert isinstance(fmt, EspFormat)
        assert fmt.name == cipher and fmt.overhead_bytes == overhead
    with pytest.raises(VpnlabError):
        make_format("esp-null", None)


def test_is_hello() -> None:
    fmt = esp_format("esp-null", PSK)
    hello, welcome, established, _ = handshake("esp-null")
    assert fmt.is_hello(hello)
    assert fmt.is_hello(hello[:10])  # respond() then says "truncated"
    assert not fmt.is_hello(welcome)
    assert not fmt.is_hello(established.protection.seal(PACKET))
    assert not fmt.is_hello(b"\xff") and not fmt.is_hello(b"")


def test_esp_format_psk_rules() -> None:
    with pytest.raises(VpnlabError, match="at least 16"):
        esp_format("esp-null", b"short")
    with pytest.raises(VpnlabError):
        esp_format("esp-chacha", PSK)
    # A trailing newline in one copy of the key file does not matter.
    client = esp_format("esp-null", PSK + b"\n").client_handshake(rng(1))
    server = esp_format("esp-null", PSK).server_handshake(rng(2))
    welcome, _ = server.respond(client.hello(NOW), ADDRESS, NOW)
    assert client.receive(welcome, NOW).client_address == ADDRESS
