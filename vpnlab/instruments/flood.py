"""A bounded Hello flood for ``vpnlab bench --flood`` (issue 27), run inside a lab node.

Two kinds, as the review measured them:

    junk    one source, Hellos of the right type and size whose mac1 is wrong (a stranger
            who does not know the server's key): the server drops each for one hash
    mac1    many spoofed sources, Hellos whose mac1 is right (anyone who holds a client
            config knows the server's public key) and mac2 zero: only the cookie stops
            these, since a spoofed source never reads its cookie reply

The datagrams are IPv4/UDP written whole (a raw socket, IP_HDRINCL) with the sources given;
they are sent in slices every 10 ms at ``rate`` per second, and the flood stops by itself
after ``seconds`` (so after ``rate * seconds`` datagrams at most). Refused outside a lab
namespace: the destination and the sources must be in the documentation ranges (RFC 5737),
and it runs only in a named network namespace (the bench starts it in the isp node).
Prints one JSON line: what it sent.

    python -m vpnlab.cli.flood --kind mac1 --server 198.51.100.2 --rate 4000 \\
        --seconds 10 --sources 203.0.113.2 --count 250 --server-key BASE64
"""

from __future__ import annotations

import random
import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_network

from vpnlab.core.constants import PORT
from vpnlab.core.cookie import MAC_BYTES, MacKeys, mac
from vpnlab.core.errors import VpnlabError
from vpnlab.core.packet import internet_checksum
from vpnlab.wire.identity import HELLO_BYTES, HELLO_PREFIX

DOCUMENTATION = [ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
MAX_RATE = 20_000
MAX_SECONDS = 60.0
TICK_S = 0.01
DISTINCT = 1024
"""Distinct Hellos prepared per flood (cycled): the server's reply cache never matches."""


def hello(rng: random.Random, mac1_key: bytes | None) -> bytes:
    """A Hello of the right type and size: random Noise bytes; mac1 right (``mac1_key``) or
    random; mac2 zero."""
    body = HELLO_PREFIX + bytes((2,)) + rng.randbytes(HELLO_BYTES - 6 - 2 * MAC_BYTES)
    mac1 = mac(mac1_key, body) if mac1_key else rng.randbytes(MAC_BYTES)
    return body + mac1 + bytes(MAC_BYTES)


def ipv4_udp(source: IPv4Address, sport: int, target: IPv4Address, payload: bytes) -> bytes:
    """IPv4 + UDP around ``payload`` (the UDP checksum left 0: allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, PORT, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, source.packed, target.packed
    )
    return ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:] + udp


@dataclass(frozen=True)
class FloodPlan:
    """One bounded flood (``python -m vpnlab.cli.flood`` reads it from its command line)."""

    kind: str  # junk, mac1
    server: IPv4Address
    rate: int
    seconds: float
    sources: IPv4Address
    count: int = 1
    server_key: bytes = b""
    seed: int = 27


def check_plan(plan: FloodPlan, in_lab: bool) -> None:
    """Refuse a flood that is not bounded, not in the documentation ranges, or not in a lab.

    Raises:
        VpnlabError: one line saying which.
    """
    last = plan.sources + max(0, plan.count - 1)
    if not all(any(a in net for net in DOCUMENTATION) for a in (plan.server, plan.sources, last)):
        raise VpnlabError("server and sources must be in the documentation ranges (RFC 5737)")
    if not 0 < plan.rate <= MAX_RATE or not 0 < plan.seconds <= MAX_SECONDS:
        raise VpnlabError(f"rate 1..{MAX_RATE}, seconds up to {MAX_SECONDS:g}")
    if plan.kind == "mac1" and len(plan.server_key) != 32:
        raise VpnlabError("a mac1 flood needs the server's public key")
    if not in_lab:
        raise VpnlabError("runs only inside a lab node (vpnlab bench --flood starts it there)")


def datagrams(plan: FloodPlan) -> list[bytes]:
    rng = random.Random(plan.seed)
    key = MacKeys.of(plan.server_key).mac1 if plan.kind == "mac1" else None
    sources = [plan.sources + i for i in range(plan.count)]
    return [
        ipv4_udp(sources[i % len(sources)], 1024 + i % 50000, plan.server, hello(rng, key))
        for i in range(DISTINCT)
    ]


def flood(plan: FloodPlan) -> dict[str, object]:
    """Send at ``plan.rate`` per second for ``plan.seconds``, in 10 ms slices."""
    packets = datagrams(plan)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    per_tick = plan.rate * TICK_S
    sent = errors = 0
    start = time.monotonic()
    target = (str(plan.server), 0)
    while (elapsed := time.monotonic() - start) < plan.seconds:
        owed = plan.rate * elapsed - sent
        for _ in range(int(min(owed, 4 * per_tick))):
            try:
                sock.sendto(packets[sent % DISTINCT], target)
            except OSError:
                errors += 1
            sent += 1
        time.sleep(TICK_S)
    sock.close()
    seconds = time.monotonic() - start
    return {"kind": plan.kind, "sent": sent, "errors": errors, "seconds": round(seconds, 2)}
