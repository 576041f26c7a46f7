"""Unit tests for vpnlab.wire.esp: the transforms' known answers, the replay window, ESP-in-UDP
sealing, opening, every way a datagram is refused."""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, VpnlabError
from vpnlab.core.formats import Kind
from vpnlab.wire.crypto import ALGORITHMS, MAX_SEQ, SaKeys, algorithm
from vpnlab.wire.esp import (
    NH_BYE,
    NH_NONE,
    AesGcm128,
    EspSession,
    NullHmacSha256,
    ReplayWindow,
    esp_sa_rows,
    esp_spi,
    generate_static_keys,
    load_static_keys,
    make_transform,
)

CIPHERS = sorted(ALGORITHMS)
C2S_SPI, S2C_SPI = 0xC0010001, 0x5E7E0002


def ipv4_packet(payload: bytes = b"ping") -> bytes:
    """A minimal IPv4 header (checksum not needed here) in front of ``payload``."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 1, 0,
                         bytes((10, 8, 0, 2)), bytes((10, 8, 0, 1)))  # fmt: skip
    return header + payload


def ipv6_packet(payload: bytes = b"ping6") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 59, 64, bytes(16), bytes(16)) + payload


def session_pair(cipher: str) -> tuple[EspSession, EspSession]:
    """A client and a server session that talk to each other (fixed keys)."""
    size = ALGORITHMS[cipher].key_bytes
    c2s = SaKeys(C2S_SPI, bytes(range(size)))
    s2c = SaKeys(S2C_SPI, bytes(range(100, 100 + size)))
    return EspSession(cipher, c2s, s2c), EspSession(cipher, s2c, c2s)


def forge(cipher: str, plaintext: bytes, seq: int = 1, spi: int = C2S_SPI) -> bytes:
    """A datagram with a valid ICV around an arbitrary ESP plaintext (padding and trailer)."""
    key = bytes(range(ALGORITHMS[cipher].key_bytes))
    return make_transform(cipher, key).protect(spi, seq, plaintext)


def reason(session: EspSession, datagram: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        session.open(datagram)
    return info.value.reason


# --- esp-null: RFC 4868 HMAC-SHA-256-128 known answers -----------------------------------


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


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("make", [ipv4_packet, ipv6_packet])
def test_EspSession_round_trip(cipher: str, make) -> None:
    client, server = session_pair(cipher)
    for size in range(0, 40):
        packet = make(bytes(range(size)))
        datagram = client.seal(packet)
        assert server.open(datagram) == (Kind.PACKET, packet)
        reply = server.seal(packet)
        assert client.open(reply) == (Kind.PACKET, packet)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_layout_seq_and_padding(cipher: str) -> None:
    client, _ = session_pair(cipher)
    iv = ALGORITHMS[cipher].iv_bytes
    for seq, size in enumerate(range(20, 60), 1):
        packet = ipv4_packet(bytes(size - 20))
        datagram = client.seal(packet)
        assert struct.unpack("!II", datagram[:8]) == (C2S_SPI, seq)
        body = len(datagram) - 8 - iv - 16
        assert body % 4 == 0 and 2 <= body - len(packet) <= 5
        assert len(datagram) - len(packet) <= client.overhead_bytes
        if cipher == "esp-null":  # readable in captures: payload, padding 1 2 3, pad len, nh
            pad = body - len(packet) - 2
            assert datagram[8 : 8 + body] == packet + bytes(range(1, pad + 1)) + bytes((pad, 4))
        else:
            assert datagram[8:16] == seq.to_bytes(8, "big")
    assert client.next_seq == 41


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_overhead_is_reached(cipher: str) -> None:
    client, _ = session_pair(cipher)
    added = {len(client.seal(ipv4_packet(bytes(n)))) - 20 - n for n in range(8)}
    assert max(added) == client.overhead_bytes == ALGORITHMS[cipher].overhead_bytes


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_keepalive_and_bye(cipher: str) -> None:
    client, server = session_pair(cipher)
    keepalive = client.seal_keepalive()
    assert server.open(keepalive) == (Kind.KEEPALIVE, b"")
    assert server.open(client.seal_bye()) == (Kind.BYE, b"")
    if cipher == "esp-null":
        assert keepalive[8:-16] == bytes((1, 2, 2, NH_NONE))
    assert client.open(server.seal_keepalive()) == (Kind.KEEPALIVE, b"")


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_accepts_a_dummy_packet_with_content(cipher: str) -> None:
    _, server = session_pair(cipher)
    assert server.open(forge(cipher, b"tfc padding\x01\x01" + bytes((NH_NONE,)))) == (
        Kind.KEEPALIVE,
        b"",
    )


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_nat_keepalive_and_control_messages(cipher: str) -> None:
    _, server = session_pair(cipher)
    assert reason(server, b"\xff") == "nat keepalive"
    assert reason(server, bytes(4) + b"\x01" + bytes(57)) == "control message"
    assert reason(server, bytes(4) + b"\x02") == "control message"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_every_truncation(cipher: str) -> None:
    client, server = session_pair(cipher)
    datagram = client.seal(ipv4_packet())
    for size in range(len(datagram)):
        expected = {"truncated", "bad icv", "nat keepalive"}
        assert reason(server, datagram[:size]) in expected
    assert server.open(datagram)[0] is Kind.PACKET  # the window never moved


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_unknown_spi(cipher: str) -> None:
    client, server = session_pair(cipher)
    assert reason(client, client.seal(ipv4_packet())) == "unknown spi"  # our own outbound SA
    assert reason(server, forge(cipher, b"\x01\x02\x02\x04", spi=0x1234)) == "unknown spi"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_any_flipped_bit(cipher: str) -> None:
    client, server = session_pair(cipher)
    datagram = client.seal(ipv4_packet(b"flip"))
    for index in range(len(datagram)):
        for bit in (0x01, 0x80):
            broken = bytearray(datagram)
            broken[index] ^= bit
            assert reason(server, bytes(broken)) == ("unknown spi" if index < 4 else "bad icv")
    assert server.open(datagram)[0] is Kind.PACKET


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_bad_padding(cipher: str) -> None:
    _, server = session_pair(cipher)
    packet = ipv4_packet(b"ab")  # 22 bytes: two bytes of padding
    assert reason(server, forge(cipher, packet + b"\x01\x03\x02\x04", 1)) == "bad padding"
    assert reason(server, forge(cipher, packet + b"\x00\x00\x02\x04", 2)) == "bad padding"
    assert reason(server, forge(cipher, b"\x01\x02\x03\x04", 3)) == "bad padding"  # pad > data
    assert reason(server, forge(cipher, b"\xff\x04", 4)) == "bad padding"
    assert server.open(forge(cipher, packet + b"\x01\x02\x02\x04", 5))[0] is Kind.PACKET


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_bad_next_header(cipher: str) -> None:
    _, server = session_pair(cipher)
    v4, v6 = ipv4_packet(b"xy"), ipv6_packet(b"")
    cases = [
        v4 + b"\x01\x02\x02\x11",  # next header 17 (UDP): not ours
        v4 + b"\x01\x02\x02\x29",  # IPv4 packet labelled IPv6
        v6 + b"\x01\x02\x02\x04",  # IPv6 packet labelled IPv4
        b"\x01\x02\x02\x04",  # no packet at all
        b"BYX\x01" + bytes((1, NH_BYE)),  # a Bye without BYE
    ]
    for seq, plaintext in enumerate(cases, 1):
        assert reason(server, forge(cipher, plaintext, seq)) == "bad next header"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_oversize(cipher: str) -> None:
    _, server = session_pair(cipher)
    assert reason(server, forge(cipher, bytes(MAX_DATAGRAM))) == "oversize"


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_replays_after_the_icv(cipher: str) -> None:
    client, server = session_pair(cipher)
    datagrams = [client.seal(ipv4_packet(bytes((n,)))) for n in range(5)]
    for datagram in reversed(datagrams):  # reordering is fine
        assert server.open(datagram)[0] is Kind.PACKET
    for datagram in datagrams:
        assert reason(server, datagram) == "replayed"
    forged = bytearray(forge(cipher, b"\x01\x02\x02\x04", seq=10_000))
    forged[-1] ^= 1
    assert reason(server, bytes(forged)) == "bad icv"
    assert server.window.highest == 5  # a forgery never moves the window


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_replay_window_edges(cipher: str) -> None:
    client, server = session_pair(cipher)
    size = server.window.size_bits
    sealed = {}
    for _ in range(size + 2):
        datagram = client.seal(ipv4_packet())
        sealed[struct.unpack("!I", datagram[4:8])[0]] = datagram
    assert server.open(sealed[size + 2])[0] is Kind.PACKET
    assert server.open(sealed[3])[0] is Kind.PACKET  # size_bits - 1 behind: just inside
    assert reason(server, sealed[2]) == "replayed"  # size_bits behind: just outside
    assert reason(server, sealed[3]) == "replayed"  # a duplicate


def test_EspSession_seal_refuses_what_is_not_ip() -> None:
    client, _ = session_pair("esp-aes-gcm")
    for packet in (b"", b"\x00" * 20, b"\x55" * 20):
        with pytest.raises(LocalProtocolError, match="not an ip packet"):
            client.seal(packet)
    with pytest.raises(LocalProtocolError, match="oversize"):
        client.seal(b"\x45" + bytes(MAX_DATAGRAM))
    assert client.next_seq == 1  # nothing was consumed


@pytest.mark.parametrize("cipher", CIPHERS)
def test_EspSession_refuses_to_wrap_the_sequence_number(cipher: str) -> None:
    client, server = session_pair(cipher)
    client._next_seq = MAX_SEQ
    last = client.seal_keepalive()
    assert struct.unpack("!I", last[4:8])[0] == MAX_SEQ
    assert server.open(last)[0] is Kind.KEEPALIVE
    for seal in (client.seal_keepalive, client.seal_bye, lambda: client.seal(ipv4_packet())):
        with pytest.raises(LocalProtocolError, match="sequence number exhausted"):
            seal()


# --- property tests: garbage never raises anything but RemoteProtocolError -----------------


@pytest.mark.parametrize("cipher", CIPHERS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_EspSession_open_garbage(cipher: str, data: bytes) -> None:
    _, server = session_pair(cipher)
    for candidate in (data, struct.pack("!I", C2S_SPI) + data):
        with pytest.raises(RemoteProtocolError):
            server.open(candidate)


@pytest.mark.parametrize("cipher", CIPHERS)
@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=64),
    cut=st.integers(0, 200),
    insert=st.binary(max_size=8),
    xor=st.integers(1, 255),
    position=st.integers(0, 200),
)
def test_EspSession_open_mutations(
    cipher: str, payload: bytes, cut: int, insert: bytes, xor: int, position: int
) -> None:
    client, server = session_pair(cipher)
    datagram = client.seal(ipv4_packet(payload))
    where = position % len(datagram)
    mutants = [
        datagram[:cut],
        datagram[:where] + insert + datagram[where:] if insert else datagram[:-1],
        datagram[:where] + bytes((datagram[where] ^ xor,)) + datagram[where + 1 :],
        datagram + insert + b"\x00",
    ]
    for mutant in mutants:
        if mutant != datagram:
            with pytest.raises(RemoteProtocolError):
                server.open(mutant)
    assert server.open(datagram) == (Kind.PACKET, ipv4_packet(payload))


@pytest.mark.parametrize("cipher", CIPHERS)
@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(max_size=1500), min_size=1, max_size=5), v6=st.booleans())
def test_EspSession_round_trip_property(cipher: str, payloads: list[bytes], v6: bool) -> None:
    client, server = session_pair(cipher)
    for payload in payloads:
        packet = ipv6_packet(payload) if v6 else ipv4_packet(payload)
        assert server.open(client.seal(packet)) == (Kind.PACKET, packet)


# --- helpers for the daemons: SPI peek, tshark rows, static keys --------------------------------


def test_esp_spi() -> None:
    client, _ = session_pair("esp-null")
    assert esp_spi(client.seal(ipv4_packet())) == C2S_SPI
    assert esp_spi(b"\xff") is None
    assert esp_spi(bytes(62)) is None


def test_esp_sa_rows_gcm() -> None:
    client, server = session_pair("esp-aes-gcm")
    rows = esp_sa_rows(client, "192.0.2.2", "198.51.100.2")
    key = "0x" + bytes(range(20)).hex()
    assert rows[0] == (
        f'"IPv4","192.0.2.2","198.51.100.2","0xc0010001",'
        f'"AES-GCM with 16 octet ICV [RFC4106]","{key}","NULL",""'
    )
    assert rows[1].startswith('"IPv4","198.51.100.2","192.0.2.2","0x5e7e0002",')
    assert esp_sa_rows(server)[0].startswith('"IPv4","*","*","0x5e7e0002",')


def test_esp_sa_rows_null() -> None:
    client, _ = session_pair("esp-null")
    row = esp_sa_rows(client)[0]
    key = "0x" + bytes(range(32)).hex()
    assert row == f'"IPv4","*","*","0xc0010001","NULL","","HMAC-SHA-256-128 [RFC4868]","{key}"'
    assert esp_sa_rows(client, "2001:db8::1", "*")[0].startswith('"IPv6"')


@pytest.mark.parametrize("cipher", CIPHERS)
def test_static_keys_round_trip_through_the_file(cipher: str) -> None:
    keys = generate_static_keys(cipher, random.Random(1).randbytes, "10.8.0.9/24")
    loaded = load_static_keys(keys.to_json())
    assert loaded == keys
    established = loaded.client()
    server = loaded.server()
    assert str(established.client_address) == "10.8.0.9/24"
    packet = ipv4_packet(b"static")
    assert server.open(established.protection.seal(packet)) == (Kind.PACKET, packet)
    assert established.protection.open(server.seal_bye()) == (Kind.BYE, b"")


def test_load_static_keys_hand_written_file() -> None:
    text = json.dumps(
        {
            "cipher": "esp-aes-gcm",
            "client_to_server": {"spi": "0x12345678", "key": "0x" + "11" * 20},
            "server_to_client": {"spi": "4096", "key": "22" * 20},
        }
    )
    keys = load_static_keys(text)
    assert keys.client_to_server == SaKeys(0x12345678, b"\x11" * 20)
    assert keys.server_to_client.spi == 4096
    assert str(keys.client_address) == "10.8.0.2/24"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"cipher": "plain"}',
        '{"cipher": "esp-null", "client_to_server": {"spi": "0x1000", "key": "00"}}',
        '{"cipher": "esp-null", "client_to_server": {"spi": 4096, "key": "00"}}',
        '{"cipher": "esp-aes-gcm", "client_to_server": {"spi": "0x1", "key": "' + "00" * 20 + '"},'
        ' "server_to_client": {"spi": "0x1000", "key": "' + "00" * 20 + '"}}',
        '{"cipher": "esp-aes-gcm", "client_to_server": {"spi": "0x1000", "key": "zz"}}',
    ],
)
def test_load_static_keys_refuses_bad_files(text: str) -> None:
    with pytest.raises(VpnlabError):
        load_static_keys(text)


def test_a_static_key_file_without_a_direction_names_it() -> None:
    with pytest.raises(VpnlabError, match="^bad static key file: no 'client_to_server'$"):
        load_static_keys('{"cipher": "esp-aes-gcm"}')


@pytest.mark.parametrize(
    "c2s, s2c, same",
    [
        (("0x1000", "11"), ("0x1000", "22"), "SPI"),  # a datagram reflected back would open
        (("0x1000", "11"), ("0x2000", "11"), "key"),  # GCM: each counter's nonce used twice
    ],
)
def test_load_static_keys_refuses_one_sa_for_both_directions(c2s, s2c, same) -> None:
    document = {
        "cipher": "esp-aes-gcm",
        "client_to_server": {"spi": c2s[0], "key": c2s[1] * 20},
        "server_to_client": {"spi": s2c[0], "key": s2c[1] * 20},
    }
    with pytest.raises(VpnlabError, match=f"one {same} for both directions") as refused:
        load_static_keys(json.dumps(document))
    assert "\n" not in str(refused.value) and "vpnlab keys static" in str(refused.value)


def test_EspSession_refuses_a_wrong_key_length() -> None:
    with pytest.raises(VpnlabError):
        EspSession("esp-aes-gcm", SaKeys(0x1000, bytes(16)), SaKeys(0x2000, bytes(20)))


def test_KernelPeerSession_keeps_nat_alive_without_esp_dummies_or_a_bye():
    """Against Linux's own ESP: a dummy packet (next header 59) counts as XfrmInStateProtoError
    there and a Bye (253) is no tunnel-mode protocol, so neither is sent: RFC 3948's one-byte
    NAT-keepalive keeps the path open instead, and uses no sequence number."""
    from vpnlab.core.constants import NAT_KEEPALIVE
    from vpnlab.wire.esp import KernelPeerSession, generate_static_keys

    keys = generate_static_keys("esp-aes-gcm", random.Random(4).randbytes)
    session = keys.client(kernel_peer=True).protection
    assert isinstance(session, KernelPeerSession)
    assert session.seal_keepalive() == NAT_KEEPALIVE and session.seal_bye() == NAT_KEEPALIVE
    assert session.next_seq == 1
    assert isinstance(keys.server(kernel_peer=True), KernelPeerSession)
    assert type(keys.client().protection) is not KernelPeerSession
