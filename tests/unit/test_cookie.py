"""core/cookie.py and the server's proof-before-cost path (issue 27): mac1, cookies, queue.

Through real cores with a fake clock. Before issue 27 a Hello cost the server its
Diffie-Hellman before any check: every test here failed then (no mac1, no cookie reply).
"""

from __future__ import annotations

import pytest

from vpnlab.core import constants
from vpnlab.core.client_core import ClientCore
from vpnlab.core.cookie import COOKIE_SECRET_LIFE_S, CookieChecker, CookieGenerator, mac
from vpnlab.core.errors import RemoteProtocolError
from vpnlab.core.events import DatagramDropped, HandshakeCompleted
from vpnlab.core.ratelimit import HandshakeLoad
from vpnlab.core.session import Session, State
from vpnlab.wire.identity import COOKIE_REPLY_BYTES, HELLO_BYTES
from vpnlab.wire.noise import public_key

from .helpers import SERVER, ipv4_packet, receive_one, seeded_random
from .test_identity import NOW, SERVER_KEY, client_format, connect, exchange, server_core

ALICE_AT = ("192.0.2.2", 4100)


def loaded_server():
    """A server that is always under load: every Hello must carry its cookie."""
    server = server_core()
    server.load = HandshakeLoad(hellos_per_s=0)
    return server


def alice(seed: int = 2) -> ClientCore:
    client = ClientCore(
        SERVER, client_format("alice").client_handshake(seeded_random(seed)), clock_offset_s=NOW
    )
    client.connect(0.0)
    return client


def test_mac_is_keyed_blake2s_128():
    """WireGuard's MAC: keyed BLAKE2s with a 16-byte digest (RFC 7693 test: key 0..31,
    empty message, 32-byte digest starts 48a8997d; here the 16-byte variant is its own)."""
    import hashlib

    key = bytes(range(32))
    assert mac(key, b"") == hashlib.blake2s(b"", key=key, digest_size=16).digest()
    assert len(mac(key, b"x")) == 16 and mac(key, b"x") != mac(bytes(32), b"x")


def test_ServerCore_drops_a_hello_without_mac1_before_any_diffie_hellman(monkeypatch):
    server = server_core()
    client = alice()
    ((hello, _),) = client.datagrams_to_send()
    junk = hello[:-32] + bytes(32)  # a Hello whose sender does not know the server's key
    spent = []
    monkeypatch.setattr(server.handshake, "check", lambda *a: spent.append(a))
    for port in range(1000):
        receive_one(server, junk, ("203.0.113.66", port), 0.0)
    assert spent == [] and server.counters.drops["bad mac1"] == 1000
    assert server.datagrams_to_send() == [] and not server.hello_queue


def test_ServerCore_under_load_answers_with_a_cookie_and_the_client_comes_back_with_mac2():
    server = loaded_server()
    client = alice()
    exchange(server, client, ALICE_AT)  # Hello -> cookie reply -> the Hello again, with mac2
    assert server.counters.drops["under load: cookie reply sent"] == 1
    assert client.counters.cookies_received == 1 and client.state is State.CONNECTING
    exchange(server, client, ALICE_AT)
    assert client.state is State.CONNECTED


def test_ServerCore_a_cookie_works_only_from_the_address_it_was_sent_to():
    server = loaded_server()
    client = alice()
    exchange(server, client, ALICE_AT)
    ((with_mac2, _),) = client.datagrams_to_send()
    assert with_mac2[-16:] != bytes(16)
    receive_one(server, with_mac2, ("192.0.2.99", 4100), 0.0)  # another source
    ((reply, _),) = server.datagrams_to_send()
    assert len(reply) == COOKIE_REPLY_BYTES and not server.sessions
    assert server.counters.drops["under load: cookie reply sent"] == 2


def test_ServerCore_the_cookie_secret_changes_every_two_minutes():
    checker = CookieChecker(public_key(SERVER_KEY), seeded_random(3))
    hello = bytes(HELLO_BYTES)
    generator = CookieGenerator(public_key(SERVER_KEY))
    signed = generator.add_macs(hello[:-32], 0.0)
    cookie = checker.cookie(b"src", 0.0)
    assert checker.check_mac1(signed) and not checker.check_mac2(signed, cookie)
    generator.consume_reply(checker.reply(bytes(6), signed, cookie)[6:], 0.0)
    signed = generator.add_macs(hello[:-32], 1.0)
    assert checker.check_mac2(signed, checker.cookie(b"src", 1.0))
    assert not checker.check_mac2(signed, checker.cookie(b"other", 1.0))
    assert not checker.check_mac2(signed, checker.cookie(b"src", COOKIE_SECRET_LIFE_S + 1.0))


def test_CookieGenerator_refuses_a_reply_to_someone_elses_hello():
    checker = CookieChecker(public_key(SERVER_KEY), seeded_random(3))
    generator = CookieGenerator(public_key(SERVER_KEY))
    mine = generator.add_macs(b"my hello", 0.0)
    theirs = CookieGenerator(public_key(SERVER_KEY)).add_macs(b"their hello", 0.0)
    reply = checker.reply(bytes(6), theirs, checker.cookie(b"src", 0.0))
    with pytest.raises(RemoteProtocolError, match="bad cookie reply"):
        generator.consume_reply(reply[6:], 0.0)
    assert not generator.has_cookie and mine[-16:] == bytes(16)


def test_ServerCore_queues_hellos_past_the_budget_and_answers_them_after_the_data():
    """At most HANDSHAKES_PER_WAKEUP Diffie-Hellmans per wake-up; the rest wait, bounded."""
    server = server_core()
    server.load = HandshakeLoad(hellos_per_s=10_000, queue_limit=10_000)  # no cookies here
    hellos = []
    for seed in range(constants.HANDSHAKES_PER_WAKEUP + 3):
        client = ClientCore(
            SERVER,
            client_format("bob").client_handshake(seeded_random(50 + seed)),
            clock_offset_s=NOW,
        )
        client.connect(seed * 1e-3)
        hellos += [h for h, _ in client.datagrams_to_send()]
    for port, hello in enumerate(hellos):
        receive_one(server, hello, ("192.0.2.7", 6000 + port), 0.0)
    assert len(server.hello_queue) == 3 and server.next_timer() == 0.0
    server.handle_timer(0.0)
    assert len(server.hello_queue) == 3 - constants.HANDSHAKES_PER_WAKEUP


def test_ServerCore_a_full_handshake_queue_drops_and_counts():
    server = server_core()
    server.load = HandshakeLoad(hellos_per_s=10**9, queue_limit=10**9)
    client = alice()
    ((hello, _),) = client.datagrams_to_send()
    server.limiter.rate_per_s = server.limiter.burst = 10**9
    for port in range(constants.HANDSHAKE_QUEUE + constants.HANDSHAKES_PER_WAKEUP + 5):
        receive_one(server, hello, ("192.0.2.8", port), 0.0)
    assert len(server.hello_queue) == constants.HANDSHAKE_QUEUE
    assert server.counters.drops["handshake queue full"] == 5


def test_HandshakeLoad_turns_on_above_the_rate_and_holds_for_a_second():
    load = HandshakeLoad(hellos_per_s=3, queue_limit=100, hold_s=1.0)
    assert [load.hello(0.0, 0) for _ in range(4)] == [False, False, False, True]
    assert load.hello(0.5, 0) and load.hello(1.5, 0) is False
    assert load.hello(2.0, 100)  # a queue that long means load, whatever the rate


def test_ServerCore_batch_screen_counts_a_run_of_junk_in_one_event(monkeypatch):
    """Issue 27: each junk Hello cost an exception and an event (and the loop a dispatch);
    a wake-up's run of them now costs one event with its count, and no Diffie-Hellman."""
    server = server_core()
    client = alice()
    ((hello, _),) = client.datagrams_to_send()
    junk = hello[:-32] + bytes(32)
    spent = []
    monkeypatch.setattr(server.handshake, "check", lambda *a: spent.append(a))
    source = ("192.0.2.200", 4500)
    packets, events = server.receive_runs([(source, [junk] * 64)], 0.0)
    assert packets == [] and spent == []
    assert events == [DatagramDropped("bad mac1", source, 64)]
    assert server.counters.drops["bad mac1"] == 64
    assert server.load.hello(0.0, 0)  # the junk counts towards "under load"


def test_ServerCore_opens_a_wake_ups_data_before_its_hellos(monkeypatch):
    """Issue 27: a Hello's Diffie-Hellman (0.34 ms) came before the tunnel's datagrams that
    arrived after it in the same wake-up; now the data of a batch goes first."""
    server = server_core()
    bob = connect(server, "bob", 4500, seed=9)
    bob.send_packets([ipv4_packet("10.8.0.9", "203.0.113.10")], 0.0)
    ((data, _),) = bob.datagrams_to_send()
    client = alice()
    ((hello, _),) = client.datagrams_to_send()
    order = []
    check, open_ = server.handshake.check, Session.open
    monkeypatch.setattr(server.handshake, "check", lambda *a: order.append("hello") or check(*a))
    monkeypatch.setattr(Session, "open", lambda *a: order.append("data") or open_(*a))
    runs = [(ALICE_AT, [hello]), (("192.0.2.2", 4500), [data])]
    packets, events = server.receive_runs(runs, 0.0)
    assert order == ["data", "hello"] and len(packets) == 1
    assert [type(e) for e in events] == [HandshakeCompleted]
