"""ServerCore (vpnlab/core/server_core.py) and its AddressPool, in every wire format.

Liveness, drops, the Hello rate limit, client to client and site to site; no root, no sockets,
no sleeping.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import (
    HELLO_BURST,
    LIVENESS_TIMEOUT_S,
    PORT,
    SERVER_TIMER_STEP_S,
    SESSION_TIMERS_PER_WAKEUP,
)
from vpnlab.core.events import DatagramDropped, PacketReceived, SessionClosed
from vpnlab.core.pool import AddressPool
from vpnlab.core.server_core import MAX_SESSIONS_PER_IP, ServerCore
from vpnlab.core.session import Session, State, Timeouts
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.plain import PLAIN

from .helpers import (
    CLIENT,
    FORMATS,
    PSK,
    SERVER,
    SERVER_TUNNEL_ADDRESS,
    CorePair,
    ipv4_packet,
    ipv6_packet,
    receive_one,
    seeded_random,
)


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
    assert server.state is State.LISTENING
    assert len(server.pool) == 253


def test_ServerCore_once_finishes_with_its_client(fmt):
    pair = CorePair(fmt, once=True)
    pair.connect()
    pair.client.close(pair.now)
    pair.client_to_server()
    assert pair.server_events[-1] == SessionClosed(CLIENT, "bye")
    assert pair.server.state is State.CLOSED


def test_ServerCore_drops_spoofed_inner_source(fmt):
    pair = CorePair(fmt)
    pair.connect()
    pair.client.send_packets([ipv4_packet("10.8.0.77", "203.0.113.10")], pair.now)
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
    events = receive_one(pair.server, garbage, ("192.0.2.99", 1234), pair.now)
    assert events == [DatagramDropped("unknown peer", ("192.0.2.99", 1234))]
    events = receive_one(pair.server, garbage, CLIENT, pair.now)
    assert len(events) == 1 and isinstance(events[0], DatagramDropped)
    assert pair.server.sessions  # still connected


def test_ServerCore_nat_keepalive_is_not_liveness(fmt):
    pair = CorePair(fmt)
    pair.connect()
    server = pair.server
    for t in range(1, 7):  # a 0xFF every second: the client must still be declared lost
        receive_one(server, b"\xff", CLIENT, float(t) - 0.5)
        server.handle_timer(float(t) - 0.5)
        server.datagrams_to_send()
    assert server.counters.drops["nat keepalive"] == 6
    assert server.handle_timer(LIVENESS_TIMEOUT_S) == [SessionClosed(CLIENT, "peer lost")]


def test_ServerCore_routes_by_destination_and_drops_unknown(fmt):
    pair = CorePair(fmt)
    pair.connect()
    events = pair.server.send_packets([ipv4_packet("203.0.113.10", "10.8.0.99")], pair.now)
    assert events == [DatagramDropped("tun: no client for destination")]


def test_ServerCore_pool_exhaustion_is_counted():
    pair = CorePair(PLAIN)
    while pair.server.pool.take() is not None:
        pass
    events = receive_one(pair.server, b"VPNLAB/1 HELLO\n", CLIENT, 0.0)
    assert events == [DatagramDropped("address pool exhausted", CLIENT)]


def test_AddressPool_skips_the_server_address():
    pool = AddressPool(IPv4Interface("10.8.0.1/29"))
    taken = [str(pool.take()) for _ in range(5)]
    assert taken == [f"10.8.0.{n}/29" for n in range(2, 7)]
    assert pool.take() is None


def test_ServerCore_hello_flood_from_one_source_is_rate_limited():
    """Plain Hellos are not authenticated: without a limit, one host could take every address."""
    pair = CorePair(PLAIN)
    server = pair.server
    for port in range(10_000):
        receive_one(server, b"VPNLAB/1 HELLO\n", ("203.0.113.66", 1024 + port), 0.0)
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
        receive_one(server, bytes(forged), (f"198.51.100.{n % 200}", n), 0.0)
    assert not server.sessions and not server._replies
    assert server.datagrams_to_send() == []
    assert sum(server.counters.drops.values()) == 5_000


def test_ServerCore_retransmitted_hello_is_answered_within_the_rate_limit(fmt):
    """A lost Welcome is sent again for the same Hello, but only within the Hello rate limit:
    unlimited re-sends made the server a reflector (1.93x amplification in plain)."""
    pair = CorePair(fmt)
    pair.client.connect(0.0)
    ((hello, _),) = pair.client.datagrams_to_send()
    for _ in range(200):
        receive_one(pair.server, hello, CLIENT, 0.0)
    assert len(pair.server.sessions) == 1
    welcomes = pair.server.datagrams_to_send()
    assert len(welcomes) == HELLO_BURST  # the first answer, then re-sends from the burst
    assert len({datagram for datagram, _ in welcomes}) == 1  # the same Welcome every time
    assert pair.server.counters.drops["hello rate limit"] == 200 - HELLO_BURST


def second_client(pair: CorePair, fmt, peer=("192.0.2.3", 4500)) -> ClientCore:
    """Another client of the pair's server, connected."""
    client = ClientCore(SERVER, fmt.client_handshake(seeded_random(3)))
    client.connect(pair.now)
    for datagram, _ in client.datagrams_to_send():
        receive_one(pair.server, datagram, peer, pair.now)
    for datagram, to in pair.server.datagrams_to_send():
        assert to == peer
        receive_one(client, datagram, SERVER, pair.now)
    assert client.state is State.CONNECTED
    return client


@pytest.mark.parametrize("isolate", [False, True])
def test_ServerCore_client_to_client_allowed_or_isolated(fmt, isolate):
    pair = CorePair(fmt, isolate_clients=isolate)
    pair.connect()
    second_client(pair, fmt)
    assert set(pair.server.router.by_address) == {
        *map(IPv4Address, ("10.8.0.2", "10.8.0.3")),
        *map(IPv6Address, ("fd10:8::2", "fd10:8::3")),  # each client's IPv6 twin
    }
    pair.client.send_packets([ipv4_packet("10.8.0.2", "10.8.0.3")], pair.now)
    pair.client.send_packets([ipv4_packet("10.8.0.2", "10.8.0.1")], pair.now)  # the server: fine
    pair.client_to_server()
    assert pair.server.counters.drops["client to client denied"] == (1 if isolate else 0)
    assert pair.server.counters.packets_to_tun == (1 if isolate else 2)


def test_ServerCore_sends_in_the_order_it_sealed_whatever_the_client(fmt):
    """One outbox for the server and its sessions: the datagrams for two clients leave in the
    order tun0 gave their packets, each to the address its session had then."""
    pair = CorePair(fmt)
    pair.connect()
    other = ("192.0.2.3", 4500)
    second_client(pair, fmt, other)
    order = ["10.8.0.3", "10.8.0.2", "10.8.0.3", "10.8.0.2"]
    for destination in order:
        assert pair.server.send_packets([ipv4_packet("203.0.113.10", destination)], 0.0) == []
    sent = pair.server.datagrams_to_send()
    assert [peer for _, peer in sent] == [other, CLIENT, other, CLIENT]
    assert pair.server.datagrams_to_send() == []  # taken once


def test_ServerCore_seals_one_read_from_tun0_in_order_with_its_refusals_counted(fmt):
    """One batch from tun0 (a fast-path read) for two clients, interleaved, with a packet for
    no client, one that is not IP and one too large to seal among them: each client's run is
    sealed at once, yet the datagrams leave in tun0's order and each refusal is counted."""
    pair = CorePair(fmt)
    pair.connect()
    other = ("192.0.2.3", 4500)
    second_client(pair, fmt, other)
    oversize = ipv4_packet("203.0.113.10", "10.8.0.2", b"x" * 65_500)  # past MAX_DATAGRAM sealed
    refuses_oversize = fmt.name != "plain"  # plain carries what it is given
    batch = [
        ipv4_packet("203.0.113.10", "10.8.0.3"),
        ipv4_packet("203.0.113.10", "10.8.0.3", b"y" * 20),
        ipv4_packet("203.0.113.10", "10.8.0.2"),
        oversize,
        ipv4_packet("203.0.113.10", "10.8.0.2", b"y" * 20),
        ipv4_packet("203.0.113.10", "10.8.0.99"),  # no client
        b"\x00" * 40,  # not IP
        ipv4_packet("203.0.113.10", "10.8.0.3", b"z" * 20),
    ]
    before = pair.server.counters.packets_from_tun
    events = pair.server.send_packets(batch, pair.now)
    sent = pair.server.datagrams_to_send()
    expected = [other, other, CLIENT, *([] if refuses_oversize else [CLIENT]), CLIENT, other]
    assert [peer for _, peer in sent] == expected
    assert pair.server.counters.packets_from_tun - before == len(expected)
    drops = pair.server.counters.drops
    assert drops["tun: no client for destination"] == 1 and drops["tun: not ip"] == 1
    assert drops["tun: oversize"] == (1 if refuses_oversize else 0)
    assert len(events) == (3 if refuses_oversize else 2)  # one DatagramDropped each


SITES = {  # a client's LAN, an address in it, one outside it, the LAN behind the server, a stranger
    4: (IPv4Network("172.16.1.0/24"), "172.16.1.10", "172.16.9.10", "172.16.2.10", "172.16.3.1"),
    6: (IPv6Network("fd16:1::/64"), "fd16:1::10", "fd16:9::10", "fd16:2::10", "fd16:3::1"),
}


@pytest.mark.parametrize("family", [4, 6])
def test_ServerCore_site_to_site_routes_client_networks(fmt, family):
    """The network behind a client (as OpenVPN's iroute): routed to it, allowed from it."""
    lan, h1, outside, h2, stranger = SITES[family]
    packet = ipv4_packet if family == 4 else ipv6_packet
    pair = CorePair(fmt, client_networks={IPv4Address("10.8.0.2"): [lan]})
    pair.connect()
    pair.client.send_packets([packet(h1, h2)], pair.now)  # h1 -> h2
    pair.client.send_packets([packet(outside, h2)], pair.now)  # not its LAN
    pair.client_to_server()
    assert pair.server.counters.packets_to_tun == 1
    assert pair.server.counters.drops["spoofed source"] == 1
    assert pair.server.send_packets([packet(h2, h1)], pair.now) == []
    assert pair.server.send_packets([packet(h2, stranger)], pair.now) == [
        DatagramDropped("tun: no client for destination")
    ]
    pair.server_to_client()
    assert pair.client_events[-1] == PacketReceived(packet(h2, h1))


@pytest.mark.parametrize("fmt", FORMATS[1:], ids=lambda f: f.name)
def test_ServerCore_forged_hellos_cost_the_victim_no_tokens(fmt):
    """Forged Hellos spoofed from a victim's address used to take its rate-limit tokens before
    the MAC was checked: 20 of them locked the victim out. Now only authentic Hellos count."""
    pair = CorePair(fmt)
    pair.client.connect(0.0)
    ((hello, _),) = pair.client.datagrams_to_send()
    forged = hello[:-1] + bytes((hello[-1] ^ 1,))
    for _ in range(HELLO_BURST * 3):
        receive_one(pair.server, forged, CLIENT, 0.0)
    assert pair.server.counters.drops["hello rate limit"] == 0
    assert receive_one(pair.server, hello, CLIENT, 0.0)[0].tunnel_address is not None


def test_ServerCore_one_address_cannot_drain_the_pool():
    """Plain Hellos from one IP and many source ports used to take every tunnel address."""
    pair = CorePair(PLAIN)
    before = len(pair.server.pool)
    for port in range(1, 200):
        receive_one(pair.server, b"VPNLAB/1 HELLO\n", ("192.0.2.66", port), port * 0.2)
    assert len(pair.server.sessions) == MAX_SESSIONS_PER_IP
    assert pair.server.counters.drops["too many sessions from one address"] > 0
    assert len(pair.server.pool) == before - MAX_SESSIONS_PER_IP
    events = receive_one(pair.server, b"VPNLAB/1 HELLO\n", ("192.0.2.77", 4500), 41.0)
    assert events[0].tunnel_address is not None  # another host still gets one


def test_AddressPool_hands_out_a_large_network_lazily():
    """A /14 (262,142 addresses) used to be listed whole at start: 22 s and 87 MiB."""
    started = time.monotonic()
    pool = AddressPool(IPv4Interface("10.64.0.1/14"))
    assert len(pool) == 2**18 - 3 and str(pool.take()) == "10.64.0.2/14"
    assert time.monotonic() - started < 0.1


def test_ServerCore_looks_at_its_sessions_timers_at_most_every_step():
    """Deadlines 0.05 s apart are looked at together, the later one up to 0.1 s late; a
    datagram that moves a deadline later leaves next_timer an earlier (harmless) bound."""
    server = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random(1))
    for i, at in enumerate((0.0, 0.05)):
        client = ClientCore(SERVER, PLAIN.client_handshake(seeded_random(2)))
        client.connect(at)
        receive_one(server, client.datagrams_to_send()[0][0], (f"192.0.2.{10 + i}", PORT), at)
    server.datagrams_to_send()
    assert server.next_timer() == 2.0  # the first keepalive
    server.handle_timer(2.0)
    assert len(server.datagrams_to_send()) == 1
    assert server.next_timer() == pytest.approx(2.0 + SERVER_TIMER_STEP_S)  # not 2.05
    server.handle_timer(2.1)
    assert [peer for _, peer in server.datagrams_to_send()] == [("192.0.2.11", PORT)]
    receive_one(server, b"VPNLAB/1 KEEPALIVE\n", ("192.0.2.10", PORT), 3.0)
    assert server.next_timer() == pytest.approx(4.0)  # still the first's old keepalive time


def test_ServerCore_a_wake_up_walks_the_sessions_only_once_a_timer_may_be_due(monkeypatch):
    """Issue 27: every turn of the loop asked each of 250 sessions for its timer (0.3-0.7 ms a
    turn), and while Hellos waited each turn walked them all in ``handle_timer`` too; and a
    class that connected together sent its 250 keepalives in one wake-up (3-4 ms of CPU)."""
    server = CorePair(PLAIN).server
    for host in range(10, 60):
        receive_one(server, b"VPNLAB/1 HELLO\n", (f"192.0.2.{host}", 4500), 0.0)
    assert len(server.datagrams_to_send()) == 50  # the Welcomes
    asked = []
    monkeypatch.setattr(Session, "next_timer", spy(Session.next_timer, asked))
    monkeypatch.setattr(Session, "handle_timer", spy(Session.handle_timer, asked))
    due = server.next_timer()
    assert due == 2.0  # the keepalives (KEEPALIVE_INTERVAL_S after the start)
    server.handle_timer(1.0)
    assert asked == []
    server.handle_timer(due)  # all 50 due: a keepalive each, SESSION_TIMERS_PER_WAKEUP now
    assert asked.count("handle_timer") == SESSION_TIMERS_PER_WAKEUP < 50
    assert server.next_timer() == due  # the others at once, in the next wake-up
    assert len(server.datagrams_to_send()) == SESSION_TIMERS_PER_WAKEUP
    server.handle_timer(due)
    assert asked.count("handle_timer") == 50 and server.next_timer() == 4.0
    assert len(server.datagrams_to_send()) == 50 - SESSION_TIMERS_PER_WAKEUP


def test_ServerCore_old_keys_are_forgotten_on_time_with_a_long_keepalive():
    """The bound on the sessions' timers comes down when a key switch gives old keys a
    deadline before any other timer (here: keepalives every 60 s, no liveness timeout)."""
    fmt, rng = make_format("esp-aes-gcm", PSK), seeded_random(7)
    timeouts = Timeouts(keepalive_s=60.0, liveness_s=0.0, rekey_s=10.0)
    pair = CorePair(fmt, timeouts=timeouts)
    pair.client = ClientCore(
        SERVER,
        fmt.client_handshake(rng),
        new_handshake=lambda: fmt.client_handshake(rng),
        timeouts=timeouts,
    )
    pair.connect()
    pair.advance(11.0)  # the rekey: the server switches on the client's first new datagram
    pair.client.send_packets([ipv4_packet("10.8.0.2", "203.0.113.10")], pair.now)
    pair.client_to_server()
    session = pair.server.sessions[CLIENT]
    assert session.previous is not None
    assert pair.server.next_timer() == session.previous_until
    pair.server.handle_timer(session.previous_until)
    assert session.previous is None


def spy(method, calls: list):
    """``method``, noting each call in ``calls`` (the real one still runs)."""

    def noted(self, *args):
        calls.append(method.__name__)
        return method(self, *args)

    return noted
