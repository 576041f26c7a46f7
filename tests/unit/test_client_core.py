"""ClientCore (vpnlab/core/client_core.py) against a real ServerCore, in every wire format.

Handshake, timers and drops of the client side; no root, no sockets, no sleeping.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Interface

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import CONNECT_TIMEOUT_S, LIVENESS_TIMEOUT_S
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.events import DatagramDropped, HandshakeCompleted, SessionClosed
from vpnlab.core.session import DEFAULT_TIMEOUTS, State, Timeouts
from vpnlab.wire.esp import generate_static_keys

from .helpers import CLIENT, SERVER, CorePair, receive_one


def test_ClientCore_handshake_assigns_first_address(fmt):
    pair = CorePair(fmt)
    pair.connect()
    assert pair.client.state is State.CONNECTED
    assert pair.client_events == [HandshakeCompleted(SERVER, IPv4Interface("10.8.0.2/24"))]
    assert pair.server_events == [HandshakeCompleted(CLIENT, IPv4Interface("10.8.0.2/24"))]


def test_ClientCore_gives_up_after_connect_timeout(fmt):
    pair = CorePair(fmt)
    pair.client.connect(0.0)
    sent = 0
    now = 0.0
    while pair.client.state is State.CONNECTING:
        sent += len(pair.client.datagrams_to_send())  # the server is down: nobody answers
        now = pair.client.next_timer()
        events = pair.client.handle_timer(now)
    assert now == pytest.approx(CONNECT_TIMEOUT_S)
    assert events == [SessionClosed(SERVER, "server unreachable")]
    assert sent == 5  # the Hello at 0 and retries at 0.5, 1.0, 1.5, 2.0


def test_ClientCore_retried_hello_gets_same_session(fmt):
    pair = CorePair(fmt)
    pair.client.connect(0.0)
    pair.client_to_server()
    pair.server_to_client(drop=True)  # the Welcome is lost
    pair.advance(0.6)  # the client retries its Hello
    assert pair.client.state is State.CONNECTED
    assert len(pair.server.sessions) == 1
    assert pair.client.session.tunnel_address == IPv4Interface("10.8.0.2/24")


def test_ClientCore_detects_dead_server_after_liveness_timeout(fmt):
    pair = CorePair(fmt)
    pair.connect()
    start = pair.now
    client = pair.client
    now = start
    while client.state is State.CONNECTED:  # the server is gone: nothing comes back
        client.datagrams_to_send()
        now = client.next_timer()
        events = client.handle_timer(now)
    assert now - start == pytest.approx(LIVENESS_TIMEOUT_S)
    assert events == [SessionClosed(SERVER, "peer lost")]


def test_ClientCore_bye_from_server_closes_at_once(fmt):
    pair = CorePair(fmt)
    pair.connect()
    pair.server.close(pair.now)
    pair.server_to_client()
    assert pair.client.state is State.CLOSED
    assert pair.client.close_reason == "bye"


def test_ClientCore_drops_strangers_non_ip_and_tun0s_own_router_solicitations(fmt):
    pair = CorePair(fmt)
    pair.connect()
    assert receive_one(pair.client, b"x", ("203.0.113.66", 4500), pair.now) == [
        DatagramDropped("unknown peer", ("203.0.113.66", 4500))
    ]
    # what a fresh tun0 sends: ICMPv6 router solicitation, from :: to all-routers ff02::2
    router_solicitation = bytes([0x60]) + bytes(5) + bytes([58, 255]) + bytes(16)
    router_solicitation += bytes.fromhex("ff02" + "00" * 13 + "02") + bytes([133]) + bytes(7)
    assert pair.client.send_packets([router_solicitation], pair.now) == [
        DatagramDropped("tun: ipv6 link scope")
    ]
    assert pair.client.send_packets([b"\x50" + bytes(47)], pair.now) == [
        DatagramDropped("tun: not ip")
    ]


def test_ClientCore_needs_exactly_one_of_handshake_or_keys():
    with pytest.raises(LocalProtocolError):
        ClientCore(SERVER, None)


def static_client(timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ClientCore:
    keys = generate_static_keys("esp-aes-gcm", random.Random(6).randbytes)
    return ClientCore(SERVER, None, established=keys.client(), timeouts=timeouts)


def test_ClientCore_liveness_counts_from_when_the_loop_starts():
    """Static keys are 'connected' at once, before CreateTunDev, Ifconfig and SetRouting; the
    6 s used to count from there, so a slow start (or an idle kernel peer) ended the session."""
    client = static_client()
    client.connect(0.0)
    client.tunnel_up(5.0)  # tun0, addresses and routes took 5 s
    client.handle_timer(8.0)
    client.handle_timer(10.5)
    assert client.state is State.CONNECTED
    assert client.handle_timer(5.0 + LIVENESS_TIMEOUT_S) == [SessionClosed(SERVER, "peer lost")]


def test_ClientCore_liveness_timeout_zero_is_off():
    """--liveness-timeout 0: a peer that never sends (Linux's own ESP) does not end it."""
    client = static_client(Timeouts(liveness_s=0))
    client.connect(0.0)
    client.tunnel_up(0.0)
    now = 0.0
    while now < 3600:
        now = client.next_timer()
        assert client.handle_timer(now) == []
    assert client.state is State.CONNECTED and client.counters.keepalives_sent > 1000
