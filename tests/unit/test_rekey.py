"""Rekeying and the end of a session's keys: new handshakes on a timer, no loss at the switch.

The client starts a new handshake every REKEY_AFTER_S (or after half the sequence space); the
session goes on with its old keys meanwhile. The client sends with the new keys as soon as the
Welcome arrives; the server once it sees them used. Old keys still open late datagrams for
KEEP_OLD_KEYS_S. A session whose sequence space is used up closes instead of raising.
"""

from __future__ import annotations

import io
from ipaddress import IPv4Interface

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import KEEP_OLD_KEYS_S, REKEY_AFTER_PACKETS, REKEY_AFTER_S
from vpnlab.core.events import PacketReceived, SessionClosed
from vpnlab.core.formats import Peer
from vpnlab.core.session import State
from vpnlab.shell.client import Exit, exit_code
from vpnlab.shell.report import Reporter
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.crypto import MAX_SEQ
from vpnlab.wire.identity import ClientIdentity, IdentityFormat, ServerIdentity
from vpnlab.wire.noise import public_key

from .helpers import CLIENT, PSK, SERVER, CorePair, ipv4_packet, receive_one, seeded_random

_CLIENT_KEY, _SERVER_KEY = bytes(range(32)), bytes(range(1, 33))
IDENTITY = IdentityFormat(
    "esp-aes-gcm",
    client=ClientIdentity(_CLIENT_KEY, public_key(_SERVER_KEY)),
    server=ServerIdentity(
        _SERVER_KEY, (Peer("r1", public_key(_CLIENT_KEY), IPv4Interface("10.8.0.2/24")),)
    ),
)
ESP_FORMATS = [make_format("esp-null", PSK), make_format("esp-aes-gcm", PSK), IDENTITY]
CLIENT_IP, WEB_IP = "10.8.0.2", "203.0.113.10"


def rekeying_pair(fmt) -> CorePair:
    pair = CorePair(fmt)
    rng = seeded_random(7)
    pair.client = ClientCore(
        SERVER, fmt.client_handshake(rng), new_handshake=lambda: fmt.client_handshake(rng)
    )
    pair.connect()
    assert pair.client.state is State.CONNECTED
    return pair


def both_ways(pair: CorePair, n: int = 1) -> tuple[int, int]:
    """Send ``n`` packets each way; return how many arrived at the server and at the client."""
    seen_server, seen_client = len(pair.server_events), len(pair.client_events)
    for _ in range(n):
        pair.client.send_packets([ipv4_packet(CLIENT_IP, WEB_IP)], pair.now)
        pair.server.send_packets([ipv4_packet(WEB_IP, CLIENT_IP)], pair.now)
    pair.client_to_server()
    pair.server_to_client()
    at_server = [e for e in pair.server_events[seen_server:] if isinstance(e, PacketReceived)]
    at_client = [e for e in pair.client_events[seen_client:] if isinstance(e, PacketReceived)]
    return len(at_server), len(at_client)


def spi_out(core_session) -> int:
    return core_session.protection._out_spi


@pytest.mark.parametrize("fmt", ESP_FORMATS, ids=["esp-null", "esp-aes-gcm", "identity"])
def test_Session_rekeys_on_the_timer_without_losing_a_packet(fmt):
    pair = rekeying_pair(fmt)
    client_session = pair.client.session
    server_session = pair.server.sessions[CLIENT]
    first = (spi_out(client_session), spi_out(server_session))
    for step in range(1, 30):  # 30 s apart: the rekey falls somewhere in the middle
        pair.advance(step * REKEY_AFTER_S / 10)
        assert both_ways(pair, 3) == (3, 3), f"loss at {pair.now} s"
    assert pair.client.counters.rekeys >= 2 and pair.server.counters.rekeys >= 2
    assert (spi_out(client_session), spi_out(server_session)) != first
    assert pair.client.session is client_session  # one session, new keys
    assert pair.client.state is State.CONNECTED and list(pair.server.sessions) == [CLIENT]


@pytest.mark.parametrize("fmt", ESP_FORMATS, ids=["esp-null", "esp-aes-gcm", "identity"])
def test_Session_old_keys_open_late_datagrams_then_are_forgotten(fmt):
    pair = rekeying_pair(fmt)
    pair.client.send_packets([ipv4_packet(CLIENT_IP, WEB_IP)], pair.now)
    ((late, _),) = pair.client.datagrams_to_send()  # sealed with the first keys, held back
    pair.advance(REKEY_AFTER_S + 1)
    assert pair.client.counters.rekeys == 1 and pair.server.counters.rekeys == 1
    events = receive_one(pair.server, late, CLIENT, pair.now)
    assert [type(e) for e in events] == [PacketReceived]
    pair.client.send_packets([ipv4_packet(CLIENT_IP, WEB_IP)], pair.now)
    fresh = pair.client.datagrams_to_send()[-1][0]
    assert [type(e) for e in receive_one(pair.server, fresh, CLIENT, pair.now)] == [PacketReceived]
    pair.advance(pair.now + KEEP_OLD_KEYS_S + 5)
    assert pair.server.sessions[CLIENT].previous is None
    assert receive_one(pair.server, late, CLIENT, pair.now)[0].reason == "unknown spi"


@pytest.mark.parametrize("fmt", ESP_FORMATS, ids=["esp-null", "esp-aes-gcm", "identity"])
def test_Session_a_lost_rekey_welcome_is_retried_and_the_old_keys_carry_on(fmt):
    pair = rekeying_pair(fmt)
    pair.advance(REKEY_AFTER_S - 1)
    pair.now = REKEY_AFTER_S + 0.01
    pair.client.handle_timer(pair.now)
    assert pair.client.rekeying is not None
    pair.client_to_server()
    pair.server_to_client(drop=True)  # the Welcome is lost
    assert both_ways(pair, 2) == (2, 2)  # the server has not switched: nothing is lost
    pair.advance(pair.now + 1.0)  # the Hello is sent again; the cached Welcome answers it
    assert pair.client.rekeying is None and pair.client.counters.rekeys == 1
    assert both_ways(pair, 2) == (2, 2)


def test_Session_rekey_is_due_after_half_the_sequence_space():
    pair = rekeying_pair(ESP_FORMATS[1])
    session = pair.client.session
    assert not session.rekey_due(pair.now)
    session.sealed = REKEY_AFTER_PACKETS
    assert session.rekey_due(pair.now)


@pytest.mark.parametrize("fmt", ESP_FORMATS, ids=["esp-null", "esp-aes-gcm", "identity"])
def test_Session_exhausted_keys_close_the_session_instead_of_raising(fmt):
    """Without a rekey (static keys, or a server that never answers), the 2^32-1st datagram
    used to raise out of handle_timer, and CleanUp raised again."""
    pair = CorePair(fmt)
    pair.connect()
    for session in (pair.client.session, pair.server.sessions[CLIENT]):
        session.protection._next_seq = MAX_SEQ + 1
    pair.client.send_packets([ipv4_packet(CLIENT_IP, WEB_IP)], pair.now)
    assert pair.client.counters.drops["tun: sequence number exhausted: a new SA is needed"] == 1
    pair.now = 3.0  # past the keepalive (2 s), not the liveness (6 s): it cannot be sealed
    events = pair.client.handle_timer(pair.now) + pair.server.handle_timer(pair.now)
    assert SessionClosed(SERVER, "keys exhausted") in events
    assert SessionClosed(CLIENT, "keys exhausted") in events
    assert pair.client.state is State.CLOSED and pair.client.close_reason == "keys exhausted"
    assert pair.client.close(pair.now) == [] and pair.server.close(pair.now) == []
    log = io.StringIO()
    assert exit_code(pair.client, Reporter("client", None, log)) == Exit.KEYS_EXHAUSTED == 6
    assert "keys exhausted: the sequence numbers are used up" in log.getvalue()
