"""IPv6-only clients: once the IPv4 pool is used up, the server's Welcome gives an address of
fd10:8::/64 and no IPv4 (vpnlab/core/pool.py ``Ipv6OnlyPool``, vpnlab/wire/welcome_address.py),
in every wire format; the cores carry such a client's IPv6 and refuse IPv4 from it.

No root, no sockets, no sleeping: the cores are driven by hand, as in test_server_core.py.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError, SetupError
from vpnlab.core.events import DatagramDropped, HandshakeCompleted, PacketReceived
from vpnlab.core.pool import Ipv6OnlyPool
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import State
from vpnlab.shell.client import ClientOptions, tunnel_addresses
from vpnlab.wire.handshake import WELCOME
from vpnlab.wire.plain import PLAIN
from vpnlab.wire.welcome_address import pack_address, unpack_address

from .helpers import FORMATS, SERVER, ipv4_packet, ipv6_packet, receive_one, seeded_random
from .test_identity import NOW, SERVER_FORMAT, client_format

SMALL = IPv4Interface("10.8.0.1/29")
"""A server whose IPv4 pool holds five clients (10.8.0.2 to .6)."""


def test_Ipv6OnlyPool_starts_past_the_ipv4_network_and_is_bounded():
    pool = Ipv6OnlyPool(IPv4Interface("10.8.0.1/24"), count=3)
    taken = [pool.take() for _ in range(3)]
    assert taken == [IPv6Interface(f"fd10:8::{n:x}/64") for n in (256, 257, 258)]
    assert pool.take() is None and len(pool) == 0
    pool.give_back(taken[1])
    assert len(pool) == 1 and pool.take() == taken[1]  # given back: the next one taken
    assert Ipv6OnlyPool(SMALL, count=1).take() == IPv6Interface("fd10:8::8/64")


@pytest.mark.parametrize(
    "address", ["10.8.0.5/24", "10.8.0.5/0", "fd10:8::100/64", "fd10:8::1:0/64"]
)
def test_welcome_address_round_trips(address):
    given = IPv4Interface(address) if "." in address else IPv6Interface(address)
    ip, prefix = pack_address(given)
    assert len(ip) == 4 and unpack_address(ip, prefix) == given


@pytest.mark.parametrize(
    ("ip", "prefix"), [(bytes(4), 24), (bytes(4), 64), (b"\x0a\x08\x00\x05", 33), (b"\0\0\1\0", 65)]
)
def test_welcome_address_refuses_zero_and_other_prefixes(ip, prefix):
    with pytest.raises(RemoteProtocolError, match="bad welcome address"):
        unpack_address(ip, prefix)


@pytest.mark.parametrize("address", ["2001:db8::5/64", "fd10:8::1:0:0/64", "fd10:8::/64"])
def test_welcome_address_packs_only_the_tunnel_s_ipv6_hosts(address):
    with pytest.raises(LocalProtocolError):
        pack_address(IPv6Interface(address))


def _peer(port: int) -> tuple[str, int]:
    """Port 5000 + n comes from 192.0.2.<10 + n> (its own source: no Hello rate limit shared)."""
    return (f"192.0.2.{port - 4990}", port)


def _connect(server: ServerCore, fmt, port: int, now: float = 0.0) -> tuple[ClientCore, list]:
    """One client from ``_peer(port)``."""
    client = ClientCore(SERVER, fmt.client_handshake(seeded_random(port)))
    peer = _peer(port)
    client.connect(now)
    events = []
    for datagram, _ in client.datagrams_to_send():
        events += receive_one(server, datagram, peer, now)
    for datagram, _ in server.datagrams_to_send():
        events += receive_one(client, datagram, SERVER, now)
    return client, events


def test_a_full_ipv4_pool_gives_ipv6_only_welcomes_then_refuses(fmt):
    server = ServerCore(fmt, SMALL, seeded_random(1), ipv6_only_clients=2)
    clients = [_connect(server, fmt, 5000 + i)[0] for i in range(5)]
    assert [c.session.tunnel_address for c in clients] == [
        IPv4Interface(f"10.8.0.{n}/29") for n in range(2, 7)
    ]
    sixth, events = _connect(server, fmt, 5005)
    assert sixth.state is State.CONNECTED
    assert HandshakeCompleted(SERVER, IPv6Interface("fd10:8::8/64")) in events
    assert sixth.session.tunnel_address is None
    assert sixth.session.tunnel_address6 == IPv6Interface("fd10:8::8/64")
    assert sixth.describe(0.0)["tunnel_address"] == ""
    _connect(server, fmt, 5006)
    eighth, events = _connect(server, fmt, 5007)
    assert eighth.state is State.CONNECTING
    assert DatagramDropped("address pool exhausted", _peer(5007)) in events
    listed = {c["tunnel_address6"]: c["tunnel_address"] for c in server.describe(0.0)["clients"]}
    assert listed["fd10:8::8/64"] == "" and listed["fd10:8::2/64"] == "10.8.0.2/29"
    assert server.describe(0.0)["free_addresses"] == 0


def test_an_ipv6_only_client_carries_ipv6_both_ways_and_no_ipv4(fmt):
    server = ServerCore(fmt, SMALL, seeded_random(1), ipv6_only_clients=1)
    for i in range(5):
        _connect(server, fmt, 5000 + i)
    client, _ = _connect(server, fmt, 5005)
    peer = _peer(5005)
    request = ipv6_packet("fd10:8::8", "fd10:8::1")
    client.send_packets([request, ipv4_packet("10.8.0.8", "10.8.0.1")], 1.0)
    sealed = [d for d, _ in client.datagrams_to_send()]
    assert receive_one(server, sealed[0], peer, 1.0) == [PacketReceived(request)]
    assert receive_one(server, sealed[1], peer, 1.0) == [DatagramDropped("spoofed source", peer)]
    reply = ipv6_packet("fd10:8::1", "fd10:8::8")
    assert server.send_packets([reply], 1.0) == []
    (datagram, to), *_ = server.datagrams_to_send()
    assert to == peer and receive_one(client, datagram, SERVER, 1.0) == [PacketReceived(reply)]
    assert server.send_packets([ipv4_packet("10.8.0.1", "10.8.0.8")], 1.0) == [
        DatagramDropped("tun: no client for destination")
    ]


def test_an_ipv6_only_address_given_back_is_taken_again(fmt):
    server = ServerCore(fmt, SMALL, seeded_random(1), ipv6_only_clients=1)
    for i in range(5):
        _connect(server, fmt, 5000 + i)
    client, _ = _connect(server, fmt, 5005)
    client.close(1.0)
    for datagram, _ in client.datagrams_to_send():
        receive_one(server, datagram, _peer(5005), 1.0)
    assert len(server.pool6) == 1
    again, _ = _connect(server, fmt, 5006, now=2.0)
    assert again.session.tunnel_address6 == IPv6Interface("fd10:8::8/64")


def test_without_ipv6_only_addresses_a_full_pool_refuses_as_before(fmt):
    server = ServerCore(fmt, SMALL, seeded_random(1))
    for i in range(5):
        _connect(server, fmt, 5000 + i)
    sixth, events = _connect(server, fmt, 5005)
    assert sixth.state is State.CONNECTING
    assert DatagramDropped("address pool exhausted", _peer(5005)) in events


def test_esp_welcome_without_ipv4_has_the_usual_size():
    client = FORMATS[2].client_handshake(seeded_random(2))
    hello = client.hello(NOW)
    welcome, _ = (
        FORMATS[2]
        .server_handshake(seeded_random(1))
        .respond(hello, IPv6Interface("fd10:8::104/64"), NOW)
    )
    assert len(welcome) == WELCOME.size == 59
    assert client.receive(welcome, NOW).client_address == IPv6Interface("fd10:8::104/64")


def test_identity_welcome_can_carry_an_ipv6_only_address():
    client = client_format("alice").client_handshake(seeded_random(2))
    server = SERVER_FORMAT.server_handshake(seeded_random(1))
    checked = server.check(client.hello(NOW), NOW)
    welcome, _ = server.answer(checked, IPv6Interface("fd10:8::200/64"))
    assert len(welcome) == 63
    assert client.receive(welcome, NOW).client_address == IPv6Interface("fd10:8::200/64")


def test_the_client_daemon_takes_an_ipv6_only_address_only_on_a_tun0_with_ipv6():
    tap = ClientOptions(IPv4Address(SERVER[0]), PLAIN, mode="tap")
    with pytest.raises(SetupError, match="carries no IPv6"):
        tunnel_addresses(tap, IPv6Interface("fd10:8::100/64"))
    assert tunnel_addresses(tap, IPv4Interface("10.8.0.5/24")) == (
        IPv4Interface("10.8.0.5/24"),
        None,
    )
    small = ClientOptions(IPv4Address(SERVER[0]), PLAIN, mtu=1200)
    with pytest.raises(SetupError, match="carries no IPv6"):
        tunnel_addresses(small, IPv6Interface("fd10:8::100/64"))


@pytest.mark.parametrize("text", ["fd10:8::100/64", "10.8.0.9/24"])
def test_plain_welcome_carries_either_family_as_text(text):
    client = PLAIN.client_handshake(seeded_random(2))
    client.hello(0.0)
    address = client.receive(b"VPNLAB/1 WELCOME " + text.encode() + b"\n", 0.0).client_address
    assert str(address) == text


@pytest.mark.parametrize("text", ["2001:db8::5/64", "fd10:8::100/48", "fd10:8::100/128"])
def test_plain_welcome_refuses_ipv6_outside_the_tunnel_s_64(text):
    client = PLAIN.client_handshake(seeded_random(2))
    client.hello(0.0)
    with pytest.raises(RemoteProtocolError, match="bad welcome address"):
        client.receive(b"VPNLAB/1 WELCOME " + text.encode() + b"\n", 0.0)
