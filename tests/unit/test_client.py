"""client.py without root: ClientConnection over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

from vpnlab.core.client_core import ClientCore
from vpnlab.core.session import State
from vpnlab.shell.client import client_connection
from vpnlab.shell.report import Reporter
from vpnlab.shell.transport import UdpTransport
from vpnlab.shell.tunnel import SignalPipe
from vpnlab.wire.plain import HELLO, PLAIN, WELCOME


def test_client_connection_sends_the_hello_at_once_and_connects_on_the_welcome(tmp_path):
    """The Hello leaves before the loop first waits (it once waited for the 0.5 s retry, so
    every handshake began with two Hellos), and the status file says "connected" only once
    tun0 and the routes are up (bring_up), never straight after the Welcome: the lab waits
    for that word before it captures on tun0."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    core = ClientCore(server.getsockname(), PLAIN.client_handshake(None))
    transport = UdpTransport(sock, core.counters.drops)
    signals = SignalPipe()
    status = tmp_path / "client.json"
    result: list[bool] = []
    try:
        started = time.monotonic()
        thread = threading.Thread(
            target=lambda: result.append(
                client_connection(
                    core, transport, signals, Reporter("client", status, io.StringIO())
                )
            )
        )
        thread.start()
        hello, peer = server.recvfrom(100)
        took_s = time.monotonic() - started
        server.sendto(WELCOME + b"10.8.0.2/24\n", peer)
        thread.join(5)
    finally:
        signals.close()
        sock.close()
        server.close()
    assert hello == HELLO and took_s < 0.3, took_s
    assert result == [True] and core.state is State.CONNECTED
    assert json.loads(status.read_text())["state"] == "connecting"
