"""Interop with independent ESP implementations: scapy's SecurityAssociation, and tshark.

scapy works on whole packets, so each test wraps our UDP payload in IP()/UDP(4500, 4500) and
unwraps scapy's. scapy is slow: a handful of packets per test.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from vpnlab.core.errors import RemoteProtocolError
from vpnlab.core.formats import Kind, Peer
from vpnlab.instruments.capture import TSHARK_TRUE
from vpnlab.wire.esp import EspSession, esp_sa_rows, generate_static_keys, load_static_keys
from vpnlab.wire.identity import ClientIdentity, IdentityFormat, ServerIdentity
from vpnlab.wire.noise import public_key

CLIENT_IP, SERVER_IP = "192.0.2.2", "198.51.100.2"
SCAPY_ALGOS = {
    "esp-aes-gcm": {"crypt_algo": "AES-GCM", "auth_algo": None},
    "esp-null": {"crypt_algo": "NULL", "auth_algo": "SHA2-256-128"},
}


def static_pair(cipher: str) -> tuple[EspSession, EspSession]:
    """Client and server sessions through the static-key file, as ``ip xfrm`` would use it."""
    keys = load_static_keys(generate_static_keys(cipher, random.Random(3948).randbytes).to_json())
    return keys.client().protection, keys.server()  # type: ignore[return-value]


def scapy_sa(cipher: str, spi: int, key: bytes, src: str, dst: str) -> SecurityAssociation:
    """scapy's view of one of our SAs: ESP tunnel mode inside UDP 4500 (RFC 3948)."""
    algos = SCAPY_ALGOS[cipher]
    return SecurityAssociation(
        ESP,
        spi=spi,
        crypt_algo=algos["crypt_algo"],
        crypt_key=key if algos["auth_algo"] is None else None,
        auth_algo=algos["auth_algo"],
        auth_key=key if algos["auth_algo"] is not None else None,
        tunnel_header=IP(src=src, dst=dst),
        nat_t_header=UDP(sport=4500, dport=4500),
    )


def on_the_wire(src: str, dst: str, datagram: bytes) -> Packet:
    """Our UDP payload as the outer packet a capture would show."""
    return IP(bytes(IP(src=src, dst=dst) / UDP(sport=4500, dport=4500) / datagram))


INNER_V4 = IP(src="10.8.0.2", dst="203.0.113.10") / ICMP(id=7, seq=1) / b"who am I?"
INNER_V6 = IPv6(src="fd00::2", dst="fd00::1") / UDP(sport=5, dport=7) / (b"v6" * 20)


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGOS))
def test_scapy_decrypts_what_vpnlab_seals(cipher: str) -> None:
    client, _ = static_pair(cipher)
    sa = scapy_sa(cipher, client.outbound.spi, client.outbound.key, CLIENT_IP, SERVER_IP)
    for inner in (INNER_V4, INNER_V6):
        outer = on_the_wire(CLIENT_IP, SERVER_IP, client.seal(bytes(inner)))
        assert outer[ESP].spi == client.outbound.spi
        assert bytes(sa.decrypt(outer)) == bytes(inner)
    keepalive = sa.decrypt(on_the_wire(CLIENT_IP, SERVER_IP, client.seal_keepalive()))
    assert bytes(keepalive) == b""  # authentic (scapy checked the ICV) and empty


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGOS))
def test_vpnlab_opens_what_scapy_encrypts(cipher: str) -> None:
    _, server = static_pair(cipher)
    sa = scapy_sa(cipher, server.inbound.spi, server.inbound.key, CLIENT_IP, SERVER_IP)
    sent = []
    for inner in (INNER_V4, INNER_V6, INNER_V4):
        datagram = bytes(sa.encrypt(inner)[UDP].payload)
        assert server.open(datagram) == (Kind.PACKET, bytes(inner))
        sent.append(datagram)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        server.open(sent[0])


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGOS))
def test_vpnlab_and_scapy_build_identical_datagrams(cipher: str) -> None:
    # The RFC 4106 construction (nonce = salt || IV, AAD = SPI || seq) and the RFC 4303
    # padding checked byte for byte: scapy is told to use our IV, the 64-bit counter.
    client, _ = static_pair(cipher)
    sa = scapy_sa(cipher, client.outbound.spi, client.outbound.key, CLIENT_IP, SERVER_IP)
    for seq, inner in enumerate((INNER_V4, INNER_V6, INNER_V4 / Raw(b"x")), 1):
        iv = seq.to_bytes(8, "big") if cipher == "esp-aes-gcm" else None
        theirs = bytes(sa.encrypt(inner, seq_num=seq, iv=iv)[UDP].payload)
        assert client.seal(bytes(inner)) == theirs


TSHARK = shutil.which("tshark")


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGOS))
def test_tshark_decrypts_with_the_exported_esp_sa_rows(cipher: str, tmp_path: Path) -> None:
    client, server = static_pair(cipher)
    packets = [
        on_the_wire(CLIENT_IP, SERVER_IP, client.seal(bytes(INNER_V4))),
        on_the_wire(SERVER_IP, CLIENT_IP, server.seal(bytes(INNER_V4))),
    ]
    capture = tmp_path / "esp.pcap"
    wrpcap(str(capture), packets)
    command = [TSHARK, "-n", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE"]
    command += ["-o", "esp.enable_authentication_check:TRUE"]
    for row in esp_sa_rows(client, CLIENT_IP, SERVER_IP):
        command += ["-o", f"uat:esp_sa:{row}"]
    command += ["-T", "fields", "-e", "frame.protocols", "-e", "esp.icv_good", "-e", "icmp.type"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        protocols, icv_good, _ = line.split("\t")
        assert protocols.startswith("ip:udp:udpencap:esp:ip:icmp")
        assert icv_good in TSHARK_TRUE


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGOS))
def test_scapy_opens_every_datagram_of_an_identity_session_both_ways(cipher: str) -> None:
    """The identity mode's keys come from Noise, but its datagrams are the same RFC 4303 ESP:
    scapy, given the SAs, opens both directions."""
    rng = random.Random(7)
    server_key, client_key = rng.randbytes(32), rng.randbytes(32)
    peer = Peer("r1", public_key(client_key), IPv4Interface("10.8.0.2/24"))
    client_hs = IdentityFormat(
        cipher, client=ClientIdentity(client_key, public_key(server_key))
    ).client_handshake(rng.randbytes)
    server_hs = IdentityFormat(cipher, server=ServerIdentity(server_key, (peer,))).server_handshake(
        rng.randbytes
    )
    welcome, server = server_hs.respond(client_hs.hello(1e9), peer.tunnel_address, 1e9)
    client = client_hs.receive(welcome, 1e9).protection
    for sender, src, dst in ((client, CLIENT_IP, SERVER_IP), (server, SERVER_IP, CLIENT_IP)):
        sa = scapy_sa(cipher, sender.outbound.spi, sender.outbound.key, src, dst)
        for inner in (INNER_V4, INNER_V6):
            assert bytes(sa.decrypt(on_the_wire(src, dst, sender.seal(bytes(inner))))) == bytes(
                inner
            )
