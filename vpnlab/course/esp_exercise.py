"""Notebook 5's code exercise: the student's ESP seal and open (RFC 4303, RFC 4106 AES-GCM),
judged by the running server and by a datagram from the wire.

The student writes, with ``cryptography``'s AESGCM:

- ``esp_seal(key, spi, seq, packet)``: ``SPI || seq || IV || AES-GCM(packet || padding ||
  pad length || next header 4) || ICV``; nonce = salt (the key's last 4 bytes) || IV, AAD =
  SPI || seq;
- ``esp_open(key, datagram)``: ``(spi, seq, inner packet)``, raising on a bad ICV.

The lab runs ``esp-aes-gcm``; the keys come from the server's export (``esp_sa``). The check
captures r1's ``eth0`` during two pings (the client's port, its latest sequence number and a
server -> client datagram), seals an echo request 10.8.0.2 -> web with the student's
``esp_seal`` under the client -> server SA and a sequence number a little ahead of the
client's, sends it from r1 with the client's own source port (a raw socket) and watches web's
``eth0``: the running server must have opened it and sent it on. Then it opens the captured
datagram with the student's ``esp_open`` and compares with vpnlab's own AES-GCM, and hands it
the same datagram with one byte changed, which must be refused.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.constants import PORT
from vpnlab.course import inject
from vpnlab.course.notebook import CourseLab
from vpnlab.instruments import capture
from vpnlab.wire.crypto import ESP_HEADER
from vpnlab.wire.esp import AesGcm128

CLIENT, SERVER, WEB = "192.0.2.2", "198.51.100.2", "203.0.113.10"
IDENT = 0xE5B0
"""The ICMP ident of the echo request the student's seal carries."""
PAYLOAD = b"vpnlab ESP exercise"
"""19 bytes: a 47-byte packet, so the trailer needs 3 bytes of padding."""
SEQ_AHEAD = 20
"""How far ahead of the client's latest sequence number the student's datagram goes: inside
the server's 1024-wide replay window, so the client's own next datagrams still pass."""
Seal = Callable[[bytes, int, int, bytes], bytes]
Open = Callable[[bytes, bytes], tuple[int, int, bytes]]


@dataclass(frozen=True)
class Sa:
    """One direction's SPI and 20-byte key (AES key || salt), from the server's export."""

    spi: int
    key: bytes


def lab_sas(lab: CourseLab) -> tuple[Sa, Sa]:
    """(client -> server, server -> client) of the lab's live esp-aes-gcm session."""
    by_destination = {}
    for row in csv.reader(capture.lab_keys(lab.prefix)):
        _family, _src, dst, spi, _encryption, key, *_ = row
        by_destination[dst] = Sa(int(spi, 16), bytes.fromhex(key.removeprefix("0x")))
    if len(by_destination) != 2 or any(len(sa.key) != 20 for sa in by_destination.values()):
        raise ValueError("the lab does not run one esp-aes-gcm session: lab.start_vpn(...)")
    to_server = by_destination.get(SERVER) or by_destination["*"]
    to_client = next(sa for sa in by_destination.values() if sa is not to_server)
    return to_server, to_client


def _wire(path: Path) -> list[tuple[str, int, str, bytes]]:
    """Per UDP 4500 datagram on r1's eth0: (source, source port, destination, payload)."""
    # scapy loads slowly: only when a capture is read
    from scapy.all import rdpcap
    from scapy.layers.inet import IP, UDP

    return [
        (f[IP].src, f[UDP].sport, f[IP].dst, bytes(f[UDP].payload))
        for f in rdpcap(str(path))
        if IP in f and UDP in f and PORT in (f[UDP].sport, f[UDP].dport)
    ]


def reference_open(sa: Sa, datagram: bytes) -> tuple[int, int, bytes]:
    """vpnlab's own AES-GCM (``wire/esp.py``): what ``esp_open`` must return."""
    spi, seq = ESP_HEADER.unpack_from(datagram)
    plaintext = AesGcm128(sa.key).unprotect(datagram)
    return spi, seq, plaintext[: -2 - plaintext[-2]]


def _try_seal(lab: CourseLab, seal: Seal, sa: Sa, seq: int, port: int, folder: Path) -> bool:
    """The student's sealed echo request, sent as the client: did web receive it?"""
    packet = inject.icmp_echo("10.8.0.2", WEB, IDENT, PAYLOAD)
    with capture.start_capture(
        lab.prefix, "web", "eth0", folder / "esp-exercise-web.pcapng", 20, 5, "icmp"
    ) as cap:
        inject.send_udp_raw(lab, "r1", port, SERVER, seal(sa.key, sa.spi, seq, packet))
        time.sleep(1.0)
    return IDENT in inject.icmp_idents(cap.path)


def _refuses(esp_open: Open, key: bytes, datagram: bytes) -> bool:
    try:
        esp_open(key, datagram)
    except Exception:  # InvalidTag, or whatever the student raises: refused
        return True
    return False


def check_esp_seal_open(
    lab: CourseLab, esp_seal: Seal, esp_open: Open, folder: Path = Path("work")
) -> dict[str, bool]:
    """The student's seal against the running server, open against the wire: the facts."""
    to_server, to_client = lab_sas(lab)
    with capture.start_capture(
        lab.prefix, "r1", "eth0", folder / "esp-exercise-r1.pcapng", 50, 8, "udp port 4500"
    ) as cap:
        lab.run("r1", ["ping", "-c", "2", "-i", "0.3", "-W", "2", WEB])
    rows = _wire(cap.path)
    sent = [(port, ESP_HEADER.unpack_from(p)[1]) for s, port, d, p in rows if s == CLIENT]
    received = [p for s, _port, d, p in rows if s == SERVER and len(p) > 100]
    if not sent or not received:
        raise ValueError("no ESP datagram seen on r1's eth0: is the VPN up?")
    port, latest = sent[-1]
    facts = {}
    try:
        accepted = _try_seal(lab, esp_seal, to_server, latest + SEQ_AHEAD, port, folder)
    except Exception as exc:  # the student's bug: a fact, not a traceback
        print(f"esp_seal: {type(exc).__name__}: {exc}")
        accepted = False
    facts["the running server opened your sealed echo request and sent it on to web"] = accepted
    datagram = received[-1]
    want = reference_open(to_client, datagram)
    try:
        got = esp_open(to_client.key, datagram)
    except Exception as exc:
        print(f"esp_open: {type(exc).__name__}: {exc}")
        got = None
    facts["esp_open gives SPI and sequence number of a datagram from the wire"] = (
        got is not None and tuple(got[:2]) == want[:2]
    )
    facts["and its inner packet, without the ESP trailer"] = got is not None and got[2] == want[2]
    tampered = datagram[:20] + bytes([datagram[20] ^ 1]) + datagram[21:]
    facts["esp_open refuses the same datagram with one byte changed"] = _refuses(
        esp_open, to_client.key, tampered
    )
    return facts
