"""The sans-IO cores: handshake, timers, counters, drops. No root, no sockets, no sleeping."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import CONNECT_TIMEOUT_S, KEEPALIVE_INTERVAL_S, LIVENESS_TIMEOUT_S
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.events import DatagramDropped, HandshakeCompleted, PacketReceived, SessionClosed
from vpnlab.core.server_core import AddressPool
from vpnlab.core.session import State, next_state
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.plain import PLAIN

from .helpers import CLIENT, SERVER, CorePair, ipv4_packet, seeded_random

PSK = bytes(range(32))
FORMATS = [PLAIN, make_format("esp-null", PSK), make_format("esp-aes-gcm", PSK)]


@pytest.fixture(params=FORMATS, ids=lambda f: f.name)
def fmt(request):
    """Every core test runs in every wire format."""
    return request.param


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


def test_Session_packets_cross_both_ways(fmt):
    pair = CorePair(fmt)
    pair.connect()
    up = ipv4_packet("10.8.0.2", "203.0.113.10")
    assert pair.client.send_packet(up, pair.now) == []
    pair.client_to_server()
    assert pair.server_events[-1] == PacketReceived(up)
    down = ipv4_packet("203.0.113.10", "10.8.0.2")
    assert pair.server.send_packet(down, pair.now) == []
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


def test_ServerCore_drops_silent_client_and_frees_its_address(fmt):
    pair = CorePair(fmt)
    pair.connect()
    server = pair.server
    now = pair.now
    while server.sessions:
        server.datagrams_to_send()
        now = server.next_timer()
        events = server.handle_timer(now)
    assert now == pytest.approx(LIVENESS_TIMEOUT_S)
    assert events == [SessionClosed(CLIENT, "peer lost")]
    assert server.state is State.CONNECTING  # listening again
    assert len(server.pool) == 253


def test_ServerCore_once_finishes_with_its_client(fmt):
    pair = CorePair(fmt, once=True)
    pair.connect()
    pair.client.close(pair.now)
    pair.client_to_server()
    assert pair.server_events[-1] == SessionClosed(CLIENT, "bye")
    assert pair.server.state is State.CLOSED


def test_ClientCore_bye_from_server_closes_at_once(fmt):
    pair = CorePair(fmt)
    pair.connect()
    pair.server.close(pair.now)
    pair.server_to_client()
    assert pair.client.state is State.CLOSED
    assert pair.client.close_reason == "bye"


def test_ServerCore_drops_spoofed_inner_source(fmt):
    pair = CorePair(fmt)
    pair.connect()
    pair.client.send_packet(ipv4_packet("10.8.0.77", "203.0.113.10"), pair.now)
    pair.client_to_server()
    assert pair.server_events[-1] == DatagramDropped("spoofed source", CLIENT)
    assert pair.server.counters.drops["spoofed source"] == 1


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"hello\n", b"\xff", b"VPNLAB/1 WHAT\n", b"\x45" + b"\x00" * 5, bytes(1500)],
)
def test_ServerCore_counts_garbage_from_unknown_and_known_peers(garbage, fmt):
    pair = CorePair(fmt)
    pair.connect()
    events = pair.server.receive_datagram(garbage, ("192.0.2.99", 1234), pair.now)
    assert events == [DatagramDropped("unknown peer", ("192.0.2.99", 1234))]
    events = pair.server.receive_datagram(garbage, CLIENT, pair.now)
    assert len(events) == 1 and isinstance(events[0], DatagramDropped)
    assert pair.server.sessions  # still connected


def test_ServerCore_nat_keepalive_is_not_liveness(fmt):
    pair = CorePair(fmt)
    pair.connect()
    server = pair.server
    for t in range(1, 7):  # a 0xFF every second: the client must still be declared lost
        server.receive_datagram(b"\xff", CLIENT, float(t) - 0.5)
        server.handle_timer(float(t) - 0.5)
        server.datagrams_to_send()
    assert server.counters.drops["nat keepalive"] == 6
    assert server.handle_timer(LIVENESS_TIMEOUT_S) == [SessionClosed(CLIENT, "peer lost")]


def test_ClientCore_drops_datagrams_from_strangers_and_non_ipv4_from_tun(fmt):
    pair = CorePair(fmt)
    pair.connect()
    assert pair.client.receive_datagram(b"x", ("203.0.113.66", 4500), pair.now) == [
        DatagramDropped("unknown peer", ("203.0.113.66", 4500))
    ]
    router_solicitation = bytes([0x60]) + bytes(47)
    assert pair.client.send_packet(router_solicitation, pair.now) == [
        DatagramDropped("tun: not ipv4")
    ]


def test_ServerCore_routes_by_destination_and_drops_unknown(fmt):
    pair = CorePair(fmt)
    pair.connect()
    events = pair.server.send_packet(ipv4_packet("203.0.113.10", "10.8.0.99"), pair.now)
    assert events == [DatagramDropped("tun: no client for destination")]


def test_ServerCore_pool_exhaustion_is_counted():
    pair = CorePair(PLAIN)
    pair.server.pool._free.clear()
    events = pair.server.receive_datagram(b"VPNLAB/1 HELLO\n", CLIENT, 0.0)
    assert events == [DatagramDropped("address pool exhausted", CLIENT)]


def test_AddressPool_skips_the_server_address():
    pool = AddressPool(IPv4Interface("10.8.0.1/29"))
    taken = [str(pool.take()) for _ in range(5)]
    assert taken == [f"10.8.0.{n}/29" for n in range(2, 7)]
    assert pool.take() is None


def test_next_state_missing_transition_raises():
    with pytest.raises(LocalProtocolError):
        next_state(State.CLOSED, "welcome")


def test_ClientCore_needs_exactly_one_of_handshake_or_keys():
    with pytest.raises(LocalProtocolError):
        ClientCore(SERVER, None)


def test_describe_reports_state_and_counters(fmt):
    pair = CorePair(fmt)
    pair.connect()
    client = pair.client.describe(pair.now)
    assert client["state"] == "connected" and client["tunnel_address"] == "10.8.0.2/24"
    server = pair.server.describe(pair.now)
    assert server["state"] == "connected"
    assert server["clients"][0]["tunnel_address"] == "10.8.0.2/24"


def test_ServerCore_hello_flood_from_one_source_is_rate_limited():
    """Plain Hellos are not authenticated: without a limit, one host could take every address."""
    pair = CorePair(PLAIN)
    server = pair.server
    for port in range(10_000):
        server.receive_datagram(b"VPNLAB/1 HELLO\n", ("203.0.113.66", 1024 + port), 0.0)
    assert len(server.sessions) == 20
    assert server.counters.drops["hello rate limit"] == 10_000 - 20
    assert len(server.datagrams_to_send()) == 20


@pytest.mark.parametrize("fmt", FORMATS[1:], ids=lambda f: f.name)  # plain has no MAC to forge
def test_ServerCore_forged_hellos_leave_no_state(fmt):
    pair = CorePair(fmt)
    server = pair.server
    hello = fmt.client_handshake(lambda n: bytes(n)).hello(0.0)
    for n in range(5_000):
        forged = bytearray(hello)
        forged[-1 - n % 16] ^= 1 + n % 255  # a wrong MAC
        server.receive_datagram(bytes(forged), (f"198.51.100.{n % 200}", n), 0.0)
    assert not server.sessions and not server._replies
    assert server.datagrams_to_send() == []
    assert sum(server.counters.drops.values()) == 5_000


def test_ServerCore_retransmitted_hello_costs_no_token(fmt):
    pair = CorePair(fmt)
    pair.client.connect(0.0)
    ((hello, _),) = pair.client.datagrams_to_send()
    for _ in range(200):
        pair.server.receive_datagram(hello, CLIENT, 0.0)
    assert len(pair.server.sessions) == 1
    assert pair.server.counters.drops["hello rate limit"] == 0
    assert len(pair.server.datagrams_to_send()) == 200  # the same Welcome, again and again


def second_client(pair: CorePair, fmt, peer=("192.0.2.3", 4500)) -> ClientCore:
    """Another client of the pair's server, connected."""
    client = ClientCore(SERVER, fmt.client_handshake(seeded_random(3)))
    client.connect(pair.now)
    for datagram, _ in client.datagrams_to_send():
        pair.server.receive_datagram(datagram, peer, pair.now)
    for datagram, to in pair.server.datagrams_to_send():
        assert to == peer
        client.receive_datagram(datagram, SERVER, pair.now)
    assert client.state is State.CONNECTED
    return client


@pytest.mark.parametrize("isolate", [False, True])
def test_ServerCore_client_to_client_allowed_or_isolated(fmt, isolate):
    pair = CorePair(fmt, isolate_clients=isolate)
    pair.connect()
    second_client(pair, fmt)
    assert set(pair.server.by_address) == {IPv4Address("10.8.0.2"), IPv4Address("10.8.0.3")}
    pair.client.send_packet(ipv4_packet("10.8.0.2", "10.8.0.3"), pair.now)
    pair.client.send_packet(ipv4_packet("10.8.0.2", "10.8.0.1"), pair.now)  # the server: fine
    pair.client_to_server()
    assert pair.server.counters.drops["client to client denied"] == (1 if isolate else 0)
    assert pair.server.counters.packets_to_tun == (1 if isolate else 2)


def test_ServerCore_site_to_site_routes_client_networks(fmt):
    """The network behind a client (as OpenVPN's iroute): routed to it, allowed from it."""
    lan = IPv4Network("172.16.1.0/24")
    pair = CorePair(fmt, client_networks={IPv4Address("10.8.0.2"): [lan]})
    pair.connect()
    pair.client.send_packet(ipv4_packet("172.16.1.10", "172.16.2.10"), pair.now)  # h1 -> h2
    pair.client.send_packet(ipv4_packet("172.16.9.10", "172.16.2.10"), pair.now)  # not its LAN
    pair.client_to_server()
    assert pair.server.counters.packets_to_tun == 1
    assert pair.server.counters.drops["spoofed source"] == 1
    assert pair.server.send_packet(ipv4_packet("172.16.2.10", "172.16.1.10"), pair.now) == []
    assert pair.server.send_packet(ipv4_packet("172.16.2.10", "172.16.3.1"), pair.now) == [
        DatagramDropped("tun: no client for destination")
    ]
    pair.server_to_client()
    assert pair.client_events[-1] == PacketReceived(ipv4_packet("172.16.2.10", "172.16.1.10"))
