"""Unit fixtures; the helpers behind them are in helpers.py."""

from __future__ import annotations

import socket

import pytest

from vpnlab.shell.transport import init_socket
from vpnlab.shell.tunnel import SignalPipe

from .helpers import FORMATS


@pytest.fixture(params=FORMATS, ids=lambda f: f.name)
def fmt(request):
    """Every core test runs in every wire format."""
    return request.param


@pytest.fixture
def loop_parts():
    """The select loop's files without root: (tun0 as one end of a datagram socket pair, its
    other end, a UDP socket on 127.0.0.1, the signal pipe)."""
    tun, tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    sock = init_socket("127.0.0.1", 0)
    signals = SignalPipe()
    try:
        yield tun, tun_peer, sock, signals
    finally:
        signals.close()
        for end in (tun, tun_peer, sock):
            end.close()
