"""ServerCore with ``kernel_dataplane`` (``vpnlab server --kernel-dataplane``), sans-IO.

The kernel's xfrm carries the data, so the core sees only Hellos: a rekey's keys are in use at
once, an authentic Hello from another address moves its session at once, and the Hello is the
client's sign of life. ``keys_in_use`` and ``end_session`` are what the shell installs and
removes by. The xfrm states themselves: ``tests/lab/test_kernel_vm.py``.
"""

from __future__ import annotations

from ipaddress import IPv4Interface

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import EndpointMoved, HandshakeCompleted, SessionClosed
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import Timeouts
from vpnlab.wire.ciphers import make_format

from .helpers import (
    CLIENT,
    PSK,
    SERVER,
    SERVER_TUNNEL_ADDRESS,
    CorePair,
    receive_one,
    seeded_random,
)
from .test_identity import SERVER_FORMAT, client_format, exchange

NOW = 1_800_000_000.0


def kernel_pair(**kw) -> CorePair:
    return CorePair(make_format("esp-aes-gcm", PSK), kernel_dataplane=True, **kw)


def rekey(pair: CorePair, seed: int) -> list:
    """A fresh handshake from the same client (what its rekey timer starts)."""
    handshake = make_format("esp-aes-gcm", PSK).client_handshake(seeded_random(seed))
    hello = handshake.hello(pair.now)
    pair.server.datagrams_to_send()  # the keepalives of its timers
    events = receive_one(pair.server, hello, CLIENT, pair.now)
    ((welcome, _),) = pair.server.datagrams_to_send()
    handshake.receive(welcome, pair.now)
    return events


def test_kernel_dataplane_a_rekeys_keys_are_in_use_at_once():
    """The kernel sends with the newest state: the core must not wait for a datagram."""
    pair = kernel_pair()
    pair.connect()
    first = pair.server.keys_in_use(CLIENT)
    assert first is not None
    events = rekey(pair, seed=9)
    assert events == [HandshakeCompleted(CLIENT, IPv4Interface("10.8.0.2/24"))]
    second = pair.server.keys_in_use(CLIENT)
    assert second is not None and second is not first
    assert pair.server.sessions[CLIENT].pending is None
    assert pair.server.counters.rekeys == 1


def test_without_kernel_dataplane_a_rekey_waits_for_its_first_datagram():
    pair = CorePair(make_format("esp-aes-gcm", PSK))
    pair.connect()
    first = pair.server.keys_in_use(CLIENT)
    rekey(pair, seed=9)
    assert pair.server.keys_in_use(CLIENT) is first  # pending until the client uses them
    assert pair.server.sessions[CLIENT].pending is not None


def test_kernel_dataplane_a_hello_is_a_sign_of_life():
    """With a liveness timeout given, the rekeys' Hellos keep a session the core sees no
    datagram of; without them it ends."""
    pair = kernel_pair(timeouts=Timeouts(liveness_s=30.0))
    pair.connect()
    for t in (20.0, 40.0):
        pair.now = t
        pair.server.handle_timer(t)
        rekey(pair, seed=int(t))
    assert CLIENT in pair.server.sessions
    pair.now = 71.0
    assert pair.server.handle_timer(71.0) == [SessionClosed(CLIENT, "peer lost")]


def test_kernel_dataplane_an_authentic_hello_moves_its_session_at_once():
    """Identity mode: the peer's Hello from a new port is the proof (no datagram follows)."""
    server = ServerCore(
        SERVER_FORMAT,
        SERVER_TUNNEL_ADDRESS,
        seeded_random(1),
        clock_offset_s=NOW,
        kernel_dataplane=True,
    )
    old, new = ("192.0.2.2", 4007), ("192.0.2.2", 4008)
    for port, seed in ((4007, 5), (4008, 6)):
        client = ClientCore(
            SERVER, client_format("alice").client_handshake(seeded_random(seed)), clock_offset_s=NOW
        )
        client.connect(float(seed))
        events = exchange(server, client, ("192.0.2.2", port), float(seed))
    assert events[:2] == [
        EndpointMoved(old, new),
        HandshakeCompleted(new, IPv4Interface("10.8.0.7/24")),
    ]
    assert list(server.sessions) == [new]
    assert server.keys_in_use(new) is not None and server.keys_in_use(old) is None


def test_end_session_ends_it_and_frees_its_address():
    pair = kernel_pair()
    pair.connect()
    assert pair.server.end_session(CLIENT) == [SessionClosed(CLIENT, "closed")]
    assert pair.server.sessions == {} and len(pair.server.pool) == 253
    assert pair.server.end_session(CLIENT) == []
    assert pair.server.datagrams_to_send() == []  # nothing said: the kernel had no keys
