"""What both cores share (vpnlab/core/session.py): a session's packets and keepalives, the
state machine, describe(). Each side alone: test_client_core.py and test_server_core.py.

Every core test runs in every wire format (the ``fmt`` fixture); no root, no sockets, no sleeping.
"""

from __future__ import annotations

import pytest

from vpnlab.core.constants import KEEPALIVE_INTERVAL_S
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.events import PacketReceived
from vpnlab.core.session import State, next_state

from .helpers import CorePair, ipv4_packet


def test_Session_packets_cross_both_ways(fmt):
    pair = CorePair(fmt)
    pair.connect()
    up = ipv4_packet("10.8.0.2", "203.0.113.10")
    assert pair.client.send_packets([up], pair.now) == []
    pair.client_to_server()
    assert pair.server_events[-1] == PacketReceived(up)
    down = ipv4_packet("203.0.113.10", "10.8.0.2")
    assert pair.server.send_packets([down], pair.now) == []
    pair.server_to_client()
    assert pair.client_events[-1] == PacketReceived(down)
    assert pair.client.counters.packets_from_tun == 1
    assert pair.client.counters.bytes_to_tun == len(down)
    assert pair.server.counters.packets_to_tun == 1


def test_Session_idle_sides_send_keepalives_and_stay_up(fmt):
    pair = CorePair(fmt)
    pair.connect()
    pair.advance(60.0)
    assert pair.client.state is State.CONNECTED
    assert len(pair.server.sessions) == 1
    expected = 60.0 / KEEPALIVE_INTERVAL_S
    assert pair.client.counters.keepalives_sent == pytest.approx(expected, abs=1)
    assert pair.server.counters.keepalives_received == pair.client.counters.keepalives_sent


def test_next_state_missing_transition_raises():
    with pytest.raises(LocalProtocolError):
        next_state(State.CLOSED, "welcome")


def test_describe_reports_state_and_counters(fmt):
    pair = CorePair(fmt)
    pair.connect()
    client = pair.client.describe(pair.now)
    assert client["state"] == "connected" and client["tunnel_address"] == "10.8.0.2/24"
    server = pair.server.describe(pair.now)
    assert server["state"] == "connected"
    assert server["clients"][0]["tunnel_address"] == "10.8.0.2/24"
    assert server["clients"][0]["tunnel_address6"] == "fd10:8::2/64"  # its IPv6 twin


def test_describe_writes_an_ipv6_peer_in_brackets(fmt):
    pair = CorePair(fmt)
    pair.connect()
    (session,) = pair.server.sessions.values()
    pair.server.sessions = {("2001:db8:1::2", 4500): session}
    assert pair.server.describe(pair.now)["clients"][0]["peer"] == "[2001:db8:1::2]:4500"


def test_describe_writes_an_ipv4_client_of_a_dual_stack_socket_as_ipv4(fmt):
    pair = CorePair(fmt)
    pair.connect()
    (session,) = pair.server.sessions.values()
    pair.server.sessions = {("::ffff:192.0.2.2", 4500): session}
    assert pair.server.describe(pair.now)["clients"][0]["peer"] == "192.0.2.2:4500"
