"""batch.py (vpnlab/fast/batch.py) and offload.py's control messages: UDP GSO grouping, GRO
batches through a real core.

A GRO batch is opened by a ClientCore with static keys, as the daemon does: one bad ICV in the
middle drops and counts that datagram only.
"""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import DatagramDropped
from vpnlab.fast.batch import gro_segment_size, gso_batches, gso_control, split_gro
from vpnlab.wire.esp import generate_static_keys

from .helpers import CLIENT, SERVER, CorePair, ipv4_packet


def test_gso_batches_same_size_then_a_shorter_last():
    peer = ("192.0.2.2", 4500)
    sizes = [100, 100, 100, 60, 100, 100, 120, 50]
    queued = [(bytes(n), peer) for n in sizes]
    batches = gso_batches(queued)
    assert [(size, [len(d) for d in run]) for _, size, run in batches] == [
        (100, [100, 100, 100, 60]),
        (100, [100, 100]),
        (120, [120, 50]),
    ]
    assert [d for _, _, run in batches for d in run] == [d for d, _ in queued]  # order kept


def test_gso_batches_split_by_peer_count_and_bytes():
    a, b = ("192.0.2.2", 4500), ("192.0.2.3", 4500)
    queued = [(bytes(10), a)] * 3 + [(bytes(10), b)] * 2
    assert [(p, len(r)) for p, _, r in gso_batches(queued)] == [(a, 3), (b, 2)]
    many = [(bytes(1000), a)] * 150
    runs = gso_batches(many, max_segments=64, max_bytes=65000)
    assert [len(r) for _, _, r in runs] == [64, 64, 22]
    big = gso_batches([(bytes(1400), a)] * 50, max_bytes=65000)
    assert [len(r) for _, _, r in big] == [46, 4]


def test_split_gro_and_the_control_messages():
    buffer = bytes(range(250))
    assert [len(d) for d in split_gro(buffer, 100)] == [100, 100, 50]
    assert split_gro(buffer, 0) == [buffer]
    assert split_gro(buffer, 250) == [buffer]
    assert gro_segment_size([(17, 104, (1472).to_bytes(4, "little"))]) == 1472
    assert gro_segment_size([]) == 0
    assert gso_control(1472) == [(17, 103, (1472).to_bytes(2, "little"))]


def test_gro_batch_bad_icv_in_mid_batch_drops_only_that_one():
    keys = generate_static_keys("esp-aes-gcm", random.Random(7).randbytes)
    server = keys.server()
    client = ClientCore(SERVER, None, established=keys.client())
    client.connect(0.0)
    packets = [
        bytes(IP(src="203.0.113.10", dst="10.8.0.2", id=i) / TCP() / bytes(1000)) for i in range(5)
    ]
    datagrams = [server.seal(p) for p in packets]
    bad = bytearray(datagrams[2])
    bad[-1] ^= 1
    datagrams[2] = bytes(bad)
    size = len(datagrams[0])
    assert all(len(d) == size for d in datagrams)
    batch = split_gro(b"".join(datagrams), size)
    opened, events = client.receive_datagrams(batch, SERVER, 1.0)
    assert opened == packets[:2] + packets[3:]
    assert events == [DatagramDropped("bad icv", SERVER)]
    assert client.counters.drops["bad icv"] == 1
    assert client.counters.packets_to_tun == 4


def test_gro_batch_short_last_datagram():
    keys = generate_static_keys("esp-null", random.Random(8).randbytes)
    server = keys.server()
    client = ClientCore(SERVER, None, established=keys.client())
    client.connect(0.0)
    packets = [bytes(IP(dst="10.8.0.2") / TCP() / bytes(n)) for n in (1200, 1200, 1200, 40)]
    datagrams = [server.seal(p) for p in packets]
    batch = split_gro(b"".join(datagrams), len(datagrams[0]))
    opened, events = client.receive_datagrams(batch, SERVER, 1.0)
    assert opened == packets and events == []


def server_batch_pair(fmt):
    """A connected CorePair and a mixed batch from its client: data, a keepalive, a spoofed
    source, a bad ICV, a replay, a Hello (a rekey) and more data."""
    pair = CorePair(fmt)
    pair.connect()
    pair.server.datagrams_to_send()
    own = str(pair.client.session.tunnel_address.ip)
    pair.client.send_packets([ipv4_packet(own, "203.0.113.10")], pair.now)
    pair.client.session.send_keepalive(pair.now)
    pair.client.send_packets([ipv4_packet("10.8.0.99", "203.0.113.10")], pair.now)  # spoofed
    pair.client.send_packets([ipv4_packet(own, "203.0.113.10", b"y" * 30)], pair.now)
    datagrams = [d for d, _ in pair.client.datagrams_to_send()]
    bad = bytearray(datagrams[-1])
    bad[-1] ^= 1
    batch = [*datagrams, bytes(bad), datagrams[0]]  # a bad ICV, a replay
    return pair, batch


def test_server_batch_entry_decides_as_one_datagram_at_a_time(fmt):
    one, batch = server_batch_pair(fmt)
    many, again = server_batch_pair(fmt)
    assert batch == again  # seeded: the same datagrams for both
    packets, events = [], []
    for datagram in batch:  # the select loop's batches of one
        opened, happened = one.server.receive_datagrams([datagram], CLIENT, one.now)
        packets += opened
        events += happened
    assert many.server.receive_datagrams(batch, CLIENT, many.now) == (packets, events)
    assert many.server.counters == one.server.counters
    assert many.server.counters.drops["spoofed source"] == 1
    esp = many.server.counters.drops["bad icv"] == 1  # plain has no ICV and no replay window
    assert len(packets) == (2 if esp else 4) and (many.server.counters.drops["replayed"] == esp)


def test_server_batch_entry_counts_a_bug_and_opens_the_rest(fmt):
    pair, batch = server_batch_pair(fmt)
    batch = batch[:-1]  # no replay: the first datagram is never opened here
    session = pair.server.sessions[CLIENT]
    real = session.open
    calls = []

    def flaky(datagram, now):
        calls.append(datagram)
        if len(calls) == 1:
            raise ValueError("a parser bug")
        return real(datagram, now)

    session.open = flaky
    bugs = []
    packets, _ = pair.server.receive_datagrams(batch, CLIENT, pair.now, on_bug=bugs.append)
    assert [type(b) for b in bugs] == [ValueError]
    clean, _ = server_batch_pair(fmt)[0].server.receive_datagrams(batch, CLIENT, pair.now)
    assert packets == clean[1:]  # the bug cost the first data packet only


def test_server_batch_entry_a_bug_in_the_forwarder_costs_the_packets_it_was_given(fmt):
    """The data packets of a run reach the forwarder together, up to the next datagram that
    is not data (here the keepalive): a bug there costs those packets, not the others."""
    pair, batch = server_batch_pair(fmt)
    batch = batch[:-1]
    real = pair.server.forwarder.from_client
    given = []

    def flaky(session, packets, now, to_tun):
        given.append(len(packets))
        if len(given) == 1:
            raise ValueError("a forwarder bug")
        return real(session, packets, now, to_tun)

    pair.server.forwarder.from_client = flaky
    bugs = []
    packets, _ = pair.server.receive_datagrams(batch, CLIENT, pair.now, on_bug=bugs.append)
    assert [type(b) for b in bugs] == [ValueError]
    assert given[0] == 1  # the data before the keepalive, alone
    clean, _ = server_batch_pair(fmt)[0].server.receive_datagrams(batch, CLIENT, pair.now)
    assert packets == clean[1:]


def test_server_batch_entry_after_a_bye_the_rest_of_the_run_is_a_strangers(fmt):
    """A Bye in the middle of a run ends the session there: the datagrams after it are from
    an address without a session, as if they had come one at a time."""
    one, _ = server_batch_pair(fmt)
    many, _ = server_batch_pair(fmt)
    batches = []
    for pair in (one, many):
        own = str(pair.client.session.tunnel_address.ip)
        pair.client.send_packets([ipv4_packet(own, "203.0.113.10")], pair.now)
        pair.client.close(pair.now)
        datagrams = [d for d, _ in pair.client.datagrams_to_send()]
        batches.append([*datagrams, datagrams[0]])
    assert batches[0] == batches[1]
    packets, events = [], []
    for datagram in batches[0]:
        opened, happened = one.server.receive_datagrams([datagram], CLIENT, one.now)
        packets += opened
        events += happened
    assert many.server.receive_datagrams(batches[1], CLIENT, many.now) == (packets, events)
    assert len(packets) == 1 and CLIENT not in many.server.sessions
    assert many.server.counters.drops["unknown peer"] == 1
