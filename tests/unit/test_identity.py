"""wire/identity.py: every peer its own key. Through real cores, with a fake clock.

What the identity mode promises (and what the shared PSK could not): a client with an unknown
or revoked key gets nothing; a client cannot take another's address or read its traffic; a
recorded Hello is never answered again; each client's address is its key's, whatever order
the clients come in.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Interface

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.errors import RemoteProtocolError, VpnlabError
from vpnlab.core.events import (
    DatagramDropped,
    EndpointMoved,
    HandshakeCompleted,
    PacketReceived,
    SessionClosed,
)
from vpnlab.core.formats import Peer
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import State
from vpnlab.wire.identity import (
    HELLO_BYTES,
    WELCOME_BYTES,
    ClientIdentity,
    IdentityFormat,
    ServerIdentity,
    check_peers,
)
from vpnlab.wire.noise import public_key

from .helpers import SERVER, SERVER_TUNNEL_ADDRESS, ipv4_packet, receive_one, seeded_random

NOW = 1_800_000_000.0
rng = random.Random(5)
SERVER_KEY = rng.randbytes(32)
KEYS = {name: rng.randbytes(32) for name in ("alice", "bob", "mallory")}
ADDRESSES = {"alice": "10.8.0.7/24", "bob": "10.8.0.9/24"}
PEERS = tuple(
    Peer(name, public_key(KEYS[name]), IPv4Interface(ADDRESSES[name])) for name in ADDRESSES
)
SERVER_FORMAT = IdentityFormat("esp-aes-gcm", server=ServerIdentity(SERVER_KEY, PEERS))


def client_format(name: str, server_key: bytes = SERVER_KEY, cipher="esp-aes-gcm"):
    identity = ClientIdentity(KEYS[name], public_key(server_key))
    return IdentityFormat(cipher, client=identity)


def server_core() -> ServerCore:
    return ServerCore(SERVER_FORMAT, SERVER_TUNNEL_ADDRESS, seeded_random(1), clock_offset_s=NOW)


def connect(
    server: ServerCore, name: str, port: int, seed: int = 2, now: float = 0.0, **kw
) -> ClientCore:
    client = ClientCore(
        SERVER,
        client_format(name, **kw).client_handshake(seeded_random(seed)),
        clock_offset_s=NOW,
    )
    client.connect(now)
    exchange(server, client, ("192.0.2.2", port), now)
    return client


def exchange(server: ServerCore, client: ClientCore, peer, now: float = 0.0) -> list:
    events = []
    for datagram, _ in client.datagrams_to_send():
        events += receive_one(server, datagram, peer, now)
    while server.hello_queue:  # what the loop does at the end of each round
        events += server.handle_timer(now)
    for datagram, _ in server.datagrams_to_send():
        events += receive_one(client, datagram, SERVER, now)
    return events


def test_identity_each_client_gets_its_own_address_in_any_order():
    server = server_core()
    bob = connect(server, "bob", 4001)
    alice = connect(server, "alice", 4002)
    assert bob.session.tunnel_address == IPv4Interface("10.8.0.9/24")
    assert alice.session.tunnel_address == IPv4Interface("10.8.0.7/24")
    assert {s.identity.name for s in server.sessions.values()} == {"alice", "bob"}


def test_identity_messages_have_their_fixed_sizes_and_the_non_esp_marker():
    server = server_core()
    client = ClientCore(SERVER, client_format("alice").client_handshake(seeded_random(3)))
    client.connect(0.0)
    ((hello, _),) = client.datagrams_to_send()
    assert len(hello) == HELLO_BYTES and hello[:5] == bytes(4) + b"\x03"
    receive_one(server, hello, ("192.0.2.2", 4500), 0.0)
    ((welcome, _),) = server.datagrams_to_send()
    assert len(welcome) == WELCOME_BYTES and welcome[:5] == bytes(4) + b"\x04"


def test_identity_unknown_key_gets_nothing():
    server = server_core()
    mallory = connect(server, "mallory", 4003)
    assert mallory.state is State.CONNECTING and server.datagrams_to_send() == []
    assert server.counters.drops["unknown peer key"] == 1


def test_identity_a_client_pinning_another_server_key_gets_nothing():
    server = server_core()
    wrong = connect(server, "alice", 4004, server_key=bytes(range(32)))
    assert wrong.state is State.CONNECTING and server.counters.drops["bad mac1"] == 1


def test_identity_a_recorded_hello_is_never_answered_again():
    server = server_core()
    client = ClientCore(
        SERVER, client_format("alice").client_handshake(seeded_random(4)), clock_offset_s=NOW
    )
    client.connect(0.0)
    ((hello, _),) = client.datagrams_to_send()
    receive_one(server, hello, ("192.0.2.2", 4500), 0.0)
    server.datagrams_to_send()
    for i in range(5000):  # many other Hellos in between do not make it fresh again
        connect(server, "bob", 5000 + i % 7, seed=10 + i) if i < 3 else None
    events = receive_one(server, hello, ("203.0.113.66", 4500), 1.0)  # replayed elsewhere
    assert events == [DatagramDropped("replayed hello", ("203.0.113.66", 4500))]
    assert server.datagrams_to_send() == []


def test_identity_a_peer_cannot_use_another_peers_address_or_read_its_traffic():
    server = server_core()
    alice = connect(server, "alice", 4005, seed=21)
    bob = connect(server, "bob", 4006, seed=22)
    alice_peer, bob_peer = ("192.0.2.2", 4005), ("192.0.2.2", 4006)
    # bob sends from alice's tunnel address: dropped as spoofed
    bob.send_packets([ipv4_packet("10.8.0.7", "203.0.113.10")], 0.0)
    ((datagram, _),) = bob.datagrams_to_send()
    assert receive_one(server, datagram, bob_peer, 0.0) == [
        DatagramDropped("spoofed source", bob_peer)
    ]
    # traffic for alice is sealed with alice's keys: bob's session cannot open it
    server.send_packets([ipv4_packet("203.0.113.10", "10.8.0.7")], 0.0)
    ((to_alice, peer),) = server.datagrams_to_send()
    assert peer == alice_peer
    assert receive_one(bob, to_alice, SERVER, 0.0)[0].reason == "unknown spi"
    assert type(receive_one(alice, to_alice, SERVER, 0.0)[0]) is PacketReceived


def test_identity_a_peer_that_restarts_on_another_port_keeps_its_address():
    server = server_core()
    connect(server, "alice", 4007, seed=5)
    again = connect(server, "alice", 4008, seed=6, now=3.0)  # restarted: a later Hello
    assert again.session.tunnel_address == IPv4Interface("10.8.0.7/24")
    assert list(server.sessions) == [("192.0.2.2", 4007)]  # until a datagram proves the move
    again.tunnel_up(3.0)  # its first keepalive, under the new keys, from the new port
    events = exchange(server, again, ("192.0.2.2", 4008), 3.0)
    assert EndpointMoved(("192.0.2.2", 4007), ("192.0.2.2", 4008)) in events
    assert list(server.sessions) == [("192.0.2.2", 4008)]


def test_identity_the_status_follows_a_moved_session():
    """The status's texts are formatted once per session and address (issue 27: 12 ms a
    second for 250 clients), and again when the session moves."""
    server = server_core()
    connect(server, "alice", 4007, seed=5)
    (before,) = server.describe(1.0)["clients"]
    again = connect(server, "alice", 4008, seed=6, now=3.0)
    again.tunnel_up(3.0)
    exchange(server, again, ("192.0.2.2", 4008), 3.0)
    (after,) = server.describe(4.0)["clients"]
    assert before["peer"] == "192.0.2.2:4007" and after["peer"] == "192.0.2.2:4008"
    assert after["tunnel_address"] == "10.8.0.7/24" == before["tunnel_address"]
    assert after["tunnel_address6"] == "fd10:8::7/64"


def test_identity_a_copied_hello_from_elsewhere_ends_nothing():
    """Issue 27: a valid Hello copied off the wire and sent from another address used to end
    the live session ("moved") before any key was confirmed. Now the session keeps its keys
    and its address; the copy's keys wait, unconfirmed, and nobody can use them."""
    server = server_core()
    alice = connect(server, "alice", 4020, seed=5)
    alice.tunnel_up(0.0)
    exchange(server, alice, ("192.0.2.2", 4020), 0.0)
    rekey = client_format("alice").client_handshake(seeded_random(30))
    copied = rekey.hello(NOW + 1.0)  # alice's next Hello, seen on the wire by mallory
    events = receive_one(server, copied, ("203.0.113.66", 4500), 1.0)
    assert not any(isinstance(e, SessionClosed) for e in events)
    assert list(server.sessions) == [("192.0.2.2", 4020)]
    alice.send_packets([ipv4_packet("10.8.0.7", "203.0.113.10")], 1.5)
    events = exchange(server, alice, ("192.0.2.2", 4020), 1.5)  # the old keys still carry
    assert any(isinstance(e, PacketReceived) for e in events)
    receive_one(server, b"\x00" * 64, ("203.0.113.66", 4500), 1.6)  # no keys: no move
    assert list(server.sessions) == [("192.0.2.2", 4020)]


def test_identity_a_hello_from_an_address_held_by_another_peer_is_refused():
    server = server_core()
    connect(server, "alice", 4009)
    bob = ClientCore(
        SERVER, client_format("bob").client_handshake(seeded_random(8)), clock_offset_s=NOW
    )
    bob.connect(0.0)
    events = exchange(server, bob, ("192.0.2.2", 4009))  # bob spoofs alice's UDP address
    assert DatagramDropped("peer address taken", ("192.0.2.2", 4009)) in events
    assert server.sessions[("192.0.2.2", 4009)].identity.name == "alice"


def test_identity_the_cipher_is_bound_into_the_handshake():
    server = server_core()
    client = connect(server, "alice", 4010, cipher="esp-null")
    assert client.state is State.CONNECTING and server.counters.drops["wrong cipher"] == 1


def test_identity_welcome_from_anyone_but_the_server_key_is_refused():
    handshake = client_format("alice").client_handshake(seeded_random(9))
    handshake.hello(NOW)
    impostor = IdentityFormat(
        "esp-aes-gcm", server=ServerIdentity(bytes(range(32)), PEERS)
    ).server_handshake(seeded_random(1))
    with pytest.raises(RemoteProtocolError):
        impostor.check(handshake.hello(NOW), NOW)  # not for the impostor's key at all


def test_identity_events_name_the_handshake():
    server = server_core()
    client = ClientCore(
        SERVER, client_format("bob").client_handshake(seeded_random(11)), clock_offset_s=NOW
    )
    client.connect(0.0)
    events = exchange(server, client, ("192.0.2.9", 4500))
    assert HandshakeCompleted(("192.0.2.9", 4500), IPv4Interface("10.8.0.9/24")) in events


def test_check_peers_refuses_shared_keys_and_addresses():
    check_peers(PEERS, SERVER_TUNNEL_ADDRESS)
    twin = Peer("twin", PEERS[0].public_key, IPv4Interface("10.8.0.50/24"))
    with pytest.raises(VpnlabError, match="twin: its public key"):
        check_peers((*PEERS, twin), SERVER_TUNNEL_ADDRESS)
    squatter = Peer("squatter", public_key(bytes(32)), IPv4Interface("10.8.0.1/24"))
    with pytest.raises(VpnlabError, match="squatter: address 10.8.0.1 is taken"):
        check_peers((*PEERS, squatter), SERVER_TUNNEL_ADDRESS)


def test_identity_a_revoked_peer_loses_its_session_and_gets_nothing_more():
    server = server_core()
    alice = connect(server, "alice", 4011, seed=31)
    connect(server, "bob", 4012, seed=32)
    events = server.update_peers([p for p in PEERS if p.name != "alice"])
    assert [e.reason for e in events] == ["revoked"]
    assert {s.identity.name for s in server.sessions.values()} == {"bob"}
    alice.send_packets([ipv4_packet("10.8.0.7", "203.0.113.10")], 1.0)
    ((datagram, _),) = alice.datagrams_to_send()
    assert receive_one(server, datagram, ("192.0.2.2", 4011), 1.0)[0].reason == "unknown peer"
    again = connect(server, "alice", 4013, seed=33, now=2.0)
    assert again.state is State.CONNECTING and server.counters.drops["unknown peer key"] == 1
    server.update_peers(PEERS)  # taken back in: answered again
    assert connect(server, "alice", 4014, seed=34, now=3.0).state is State.CONNECTED
