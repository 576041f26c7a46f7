"""Unit tests for vpnlab.wire.crypto: HMAC known answers, the algorithms, the key schedule.

The transforms and the replay window are esp.py's: their tests are in test_esp.py."""

from __future__ import annotations

import pytest

from vpnlab.core.errors import VpnlabError
from vpnlab.wire.crypto import (
    ALGORITHMS,
    MAX_SEQ,
    SaKeys,
    algorithm,
    hello_key,
    hmac_sha256_128,
    session_keys,
    spi_from,
)

# --- HMAC-SHA-256-128 known answers --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "data", "icv_hex"),
    [
        # RFC 4231 section 4.3, Test Case 2 (first 128 bits of the HMAC-SHA-256 output)
        (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c7"),
        # RFC 4231 section 4.6, Test Case 5 ("Test With Truncation" to 128 bits)
        (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
        # RFC 4868 section 2.7.2.1, Test Case AUTH256-1
        (b"\x0b" * 32, b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
        # RFC 4868 section 2.7.2.1, Test Case AUTH256-2
        (b"Jefe" * 8, b"what do ya want for nothing?", "167f928588c5cc2eef8e3093caa0e87c"),
    ],
)
def test_hmac_sha256_128_known_answers(key: bytes, data: bytes, icv_hex: str) -> None:
    assert hmac_sha256_128(key, data).hex() == icv_hex


def test_Algorithm_overhead_and_names() -> None:
    gcm, null = ALGORITHMS["esp-aes-gcm"], ALGORITHMS["esp-null"]
    assert gcm.overhead_bytes == 8 + 8 + 3 + 2 + 16
    assert null.overhead_bytes == 8 + 0 + 3 + 2 + 16
    assert gcm.tshark_encryption == "AES-GCM with 16 octet ICV [RFC4106]"
    assert null.tshark_authentication == "HMAC-SHA-256-128 [RFC4868]"
    assert gcm.xfrm_args(b"\xab" * 20)[:2] == ["aead", "rfc4106(gcm(aes))"]
    assert null.xfrm_args(b"\xab" * 32)[3:5] == ["auth-trunc", "hmac(sha256)"]


def test_SaKeys_refuses_reserved_spis() -> None:
    for spi in (0, 1, 255, MAX_SEQ + 1):
        with pytest.raises(VpnlabError):
            SaKeys(spi, b"")
    assert SaKeys(256, b"").spi == 256


# --- key schedule ------------------------------------------------------------------------------


def test_spi_from_never_gives_a_reserved_spi() -> None:
    assert spi_from(b"\x00\x00\x00\x00") == 256
    assert 256 <= spi_from(b"\xff\xff\xff\xff") <= MAX_SEQ
    assert spi_from(b"\xff\xff\xfe\xff") == MAX_SEQ


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_session_keys_lengths_and_binding(name: str) -> None:
    keys = session_keys(name, b"p" * 32, b"d" * 32, b"transcript")
    klen = algorithm(name).key_bytes
    assert len(keys.client_to_server.key) == len(keys.server_to_client.key) == klen
    assert keys.client_to_server.key != keys.server_to_client.key
    assert len(keys.confirm_key) == 32
    assert keys == session_keys(name, b"p" * 32, b"d" * 32, b"transcript")
    for other in (
        session_keys(name, b"q" * 32, b"d" * 32, b"transcript"),
        session_keys(name, b"p" * 32, b"e" * 32, b"transcript"),
        session_keys(name, b"p" * 32, b"d" * 32, b"transcripT"),
    ):
        assert other.client_to_server.key != keys.client_to_server.key
        assert other.confirm_key != keys.confirm_key


def test_session_keys_bind_the_cipher_name() -> None:
    null = session_keys("esp-null", b"p" * 32, b"d" * 32, b"t")
    gcm = session_keys("esp-aes-gcm", b"p" * 32, b"d" * 32, b"t")
    assert null.client_to_server.spi != gcm.client_to_server.spi


def test_hello_key_depends_on_the_psk_only() -> None:
    assert hello_key(b"a" * 16) == hello_key(b"a" * 16)
    assert hello_key(b"a" * 16) != hello_key(b"b" * 16)
    assert len(hello_key(b"a" * 16)) == 32
