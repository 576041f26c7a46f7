"""Unit tests for vpnlab.wire.crypto: known answers, the replay window, the key schedule."""

from __future__ import annotations

import random

import pytest

from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.wire.crypto import (
    ALGORITHMS,
    MAX_SEQ,
    AesGcm128,
    NullHmacSha256,
    ReplayWindow,
    SaKeys,
    algorithm,
    hello_key,
    hmac_sha256_128,
    make_transform,
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


def test_NullHmacSha256_icv_covers_spi_seq_and_payload_rfc4868_auth256_1() -> None:
    # RFC 4868 AUTH256-1's data "Hi There" is exactly SPI ("Hi T") || seq ("here").
    transform = NullHmacSha256(b"\x0b" * 32)
    spi, seq = int.from_bytes(b"Hi T", "big"), int.from_bytes(b"here", "big")
    datagram = transform.protect(spi, seq, b"")
    assert datagram == b"Hi There" + bytes.fromhex("198a607eb44bfbc69903a0f1cf2bbdc5")
    assert transform.unprotect(datagram) == b""


def test_NullHmacSha256_rfc4868_auth256_2_with_payload() -> None:
    transform = NullHmacSha256(b"Jefe" * 8)
    spi, seq = int.from_bytes(b"what", "big"), int.from_bytes(b" do ", "big")
    datagram = transform.protect(spi, seq, b"ya want for nothing?")
    assert datagram[-16:].hex() == "167f928588c5cc2eef8e3093caa0e87c"
    assert transform.unprotect(datagram) == b"ya want for nothing?"


# --- RFC 4106 AES-GCM known answers ----------------------------------------------------------
# draft-mcgrew-gcm-test-01 section 4: ESP packets with AES-GCM-128 and a 32-bit sequence
# number (8-byte AAD = SPI || seq). The explicit IV is the last 8 bytes of the 12-byte nonce,
# the salt its first 4; the key material is key || salt as RFC 4106 section 8.1 says.
GCM_VECTORS = [
    pytest.param(
        "feffe9928665731c6d6a8f9467308308",
        "cafebabe",
        "facedbaddecaf888",
        "0000a5f80000000a",
        "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d0010000010000000000000373"
        "69700963796265726369747902646b00000100010001",
        "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f5133"
        "0d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1",
        "83b70d3aa8bc6ee4c309e9d85a41ad4a",
        id="K=feffe992..., SPI a5f8, seq 10",
    ),
    pytest.param(
        "7d773d00c144c525ac619d18c84a3f47",
        "d9664267",
        "43457e9182443bc6",
        "335467aeffffffff",
        "01020201",
        "437f866b",
        "cb3f699fe9b0822bac961c4504bef270",
        id="K=7d773d00..., seq 0xffffffff, empty payload",
    ),
]


@pytest.mark.parametrize(("key", "salt", "iv", "aad", "plain", "cipher", "tag"), GCM_VECTORS)
def test_AesGcm128_opens_draft_mcgrew_gcm_test_vectors(
    key: str, salt: str, iv: str, aad: str, plain: str, cipher: str, tag: str
) -> None:
    transform = AesGcm128(bytes.fromhex(key + salt))
    datagram = bytes.fromhex(aad + iv + cipher + tag)
    assert transform.unprotect(datagram) == bytes.fromhex(plain)
    broken = bytearray(datagram)
    broken[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="bad icv"):
        transform.unprotect(bytes(broken))


def test_AesGcm128_explicit_iv_is_the_64bit_counter() -> None:
    transform = AesGcm128(bytes(range(20)))
    datagram = transform.protect(0x12345678, 7, b"\x01\x02\x02\x04")
    assert datagram[:16] == bytes.fromhex("12345678 00000007 0000000000000007")
    assert len(datagram) == 16 + 4 + 16
    assert transform.unprotect(datagram) == b"\x01\x02\x02\x04"


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_transform_rejects_every_single_bit_flip(name: str) -> None:
    key = bytes(range(algorithm(name).key_bytes))
    transform = make_transform(name, key)
    datagram = transform.protect(0x1000, 1, b"payload\x01\x02\x02\x04")
    for index in range(len(datagram)):
        broken = bytearray(datagram)
        broken[index] ^= 0x80
        with pytest.raises(RemoteProtocolError, match="bad icv"):
            transform.unprotect(bytes(broken))


def test_make_transform_checks_the_key_length() -> None:
    with pytest.raises(VpnlabError, match="20-byte key"):
        make_transform("esp-aes-gcm", bytes(16))
    with pytest.raises(VpnlabError, match="32-byte key"):
        make_transform("esp-null", bytes(20))
    with pytest.raises(VpnlabError, match="not an ESP cipher"):
        make_transform("plain", b"")


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


# --- the anti-replay window (after wireguard-go replay/replay_test.go) ----------------------
# wireguard-go counts from 0 and accepts counters up to windowSize behind the highest; ours
# count from 1 and accept up to size_bits - 1 behind. With LIM = size_bits the table below is
# wireguard-go's TestReplay with every counter shifted by one.


def test_ReplayWindow_wireguard_table() -> None:
    window = ReplayWindow(1024)
    lim = window.size_bits
    steps = [
        (1, True),
        (2, True),
        (2, False),
        (10, True),
        (9, True),
        (8, True),
        (8, False),
        (lim + 1, True),
        (lim, True),
        (lim, False),
        (lim - 1, True),
        (3, True),
        (3, False),
        (lim + 17, True),
        (4, False),
        (lim + 17, False),
        (lim * 4 + 1, True),
        (lim * 4 + 1 - (lim - 1), True),  # just inside: size_bits - 1 behind
        (11, False),
        (lim * 4 + 1 - lim, False),  # just outside: size_bits behind
        (lim * 4 + 1 - (lim + 1), False),
        (lim * 4 + 1 - (lim - 2), True),
        (lim * 4 + 2 - lim, False),
        (0, False),
        (MAX_SEQ, True),  # a far jump
        (MAX_SEQ, False),
        (MAX_SEQ - 1, True),
        (MAX_SEQ - 1, False),
        (MAX_SEQ - lim + 1, True),
        (MAX_SEQ - lim, False),
        (0, False),
    ]
    for number, (seq, expected) in enumerate(steps, 1):
        assert window.accept(seq) is expected, f"step {number}: seq {seq}"


def test_ReplayWindow_bulk_in_order_then_backwards() -> None:
    window = ReplayWindow(64)
    assert all(window.accept(seq) for seq in range(1, 65))
    assert not any(window.accept(seq) for seq in range(1, 65))
    window = ReplayWindow(64)
    assert all(window.accept(seq) for seq in range(64, 0, -1))  # all 64 fit the window
    window = ReplayWindow(64)
    assert all(window.accept(seq) for seq in range(65, 1, -1))
    assert not window.accept(1)  # 64 behind 65: just outside


def test_ReplayWindow_random_order_matches_a_set_model() -> None:
    rng = random.Random(4303)
    window = ReplayWindow(128)
    seen: set[int] = set()
    for _ in range(5000):
        seq = max(1, window.highest + rng.randint(-150, 40))
        expected = seq not in seen and seq > window.highest - 128
        assert window.accept(seq) is expected
        if expected:
            seen.add(seq)


def test_ReplayWindow_refuses_a_tiny_window() -> None:
    with pytest.raises(LocalProtocolError):
        ReplayWindow(32)


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
