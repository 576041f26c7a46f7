"""The lab's "who am I" web service: it answers with the address it sees the request come from.

Runs on the web node (``vpnlab whoami --listen 203.0.113.10 --port 80``). Before the
VPN, r1 is seen as 192.0.2.2; through the tunnel, the server's NAT rule makes it 198.51.100.2.

- ``GET /``      -> ``you are 192.0.2.2`` (text/plain)
- ``GET /json``  -> ``{"you": "192.0.2.2", "port": 51234, "server": "203.0.113.10:80"}``
- ``GET /token`` -> the lab's who-am-I token (drawn at ``lab up``, ``vpnlab/lab/draw.py``)
- ``GET /bytes/N`` -> N bytes (at most 100 MB) that ``pattern(N)`` also makes, so a download
  through the tunnel can be checked byte for byte (``sha256sum`` against ``pattern_sha256``)
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import re
import signal
import socket
import socketserver
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vpnlab.core.errors import VpnlabError

MAX_BYTES = 100 * 1024 * 1024
CHUNK = 64 * 1024


class WhoAmIError(VpnlabError):
    """who-am-I could not listen on its address."""


def pattern_chunks(size: int) -> Iterator[bytes]:
    """The bytes of ``/bytes/<size>``, in chunks: a PRNG seeded with the size."""
    rng = random.Random(size)
    for offset in range(0, size, CHUNK):
        yield rng.randbytes(min(CHUNK, size - offset))


def pattern_sha256(size: int) -> str:
    """What ``sha256sum`` of a correct ``/bytes/<size>`` download prints."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


def _unmapped(host: str) -> str:
    """An address as its family writes it: a dual-stack socket shows IPv4 as ::ffff:a.b.c.d."""
    address = ipaddress.ip_address(host)
    return str(getattr(address, "ipv4_mapped", None) or address)


class WhoAmIHandler(BaseHTTPRequestHandler):
    """Answers every GET with the client's address; ``/json`` in JSON."""

    server_version = "vpnlab-whoami/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        host, port = self.client_address[:2]
        host = _unmapped(host)
        sized = re.fullmatch(r"/bytes/(\d{1,9})", self.path)
        if sized and int(sized.group(1)) <= MAX_BYTES:
            self.send_bytes(int(sized.group(1)))
            return
        if self.path.split("?", 1)[0].rstrip("/") == "/token":
            body = f"{getattr(self.server, 'token', '')}\n".encode()
            ctype = "text/plain; charset=utf-8"
        elif self.path.split("?", 1)[0].rstrip("/") == "/json":
            local = self.connection.getsockname()  # the address this request came to
            server_host, server_port = _unmapped(local[0]), local[1]
            server_host = f"[{server_host}]" if ":" in server_host else server_host
            body = (
                json.dumps(
                    {"you": host, "port": port, "server": f"{server_host}:{server_port}"}
                ).encode()
                + b"\n"
            )
            ctype = "application/json"
        else:
            body = f"you are {host}\n".encode()
            ctype = "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_bytes(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in pattern_chunks(size):
            self.wfile.write(chunk)


class WhoAmIServer(ThreadingHTTPServer):
    """http.server without the reverse DNS lookup of its own address in ``server_bind``.

    The sealed lab has no DNS: the lookup would wait for its timeout (about 10 s) first.
    """

    daemon_threads = True
    token = ""
    """What ``GET /token`` answers (``serve``'s ``token``)."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        # IPv6 (``::`` takes both families: the lab's dual stack), or IPv4
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(listen: str = "0.0.0.0", port: int = 80, token: str = "") -> int:
    """Serve until SIGTERM or SIGINT, then close the socket and return 0.

    ``token``: what ``GET /token`` answers (the lab's drawn who-am-I token).

    Raises:
        WhoAmIError: the address cannot be bound.
    """
    signal.signal(signal.SIGTERM, _stop)
    try:
        server = WhoAmIServer((listen, port), WhoAmIHandler)
    except OSError as exc:
        raise WhoAmIError(f"cannot listen on {listen}:{port}: {exc}") from None
    server.token = token
    print(f"whoami: listening on {listen}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    print("whoami: stopped", file=sys.stderr, flush=True)
    return 0
