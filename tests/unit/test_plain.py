"""The design notes' plain format: text control messages, raw IP as the payload."""

import contextlib
from ipaddress import IPv4Interface

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnlab.core.errors import RemoteProtocolError
from vpnlab.core.formats import Kind
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.plain import BYE, HELLO, KEEPALIVE, PLAIN, PlainProtection

from .helpers import ipv4_packet, seeded_random


def test_plain_control_messages_never_look_like_ip():
    for message in (HELLO, KEEPALIVE, BYE, b"VPNLAB/1 WELCOME 10.8.0.2/24\n"):
        assert message[0] >> 4 not in (4, 6)


def test_plain_handshake_round_trip():
    client = PLAIN.client_handshake(seeded_random())
    server = PLAIN.server_handshake(seeded_random())
    hello = client.hello(0.0)
    assert PLAIN.is_hello(hello)
    reply, _ = server.respond(hello, IPv4Interface("10.8.0.2/24"), 0.0)
    assert reply == b"VPNLAB/1 WELCOME 10.8.0.2/24\n"
    assert client.receive(reply, 0.0).client_address == IPv4Interface("10.8.0.2/24")


@pytest.mark.parametrize(
    "reply", [b"VPNLAB/1 WELCOME nonsense\n", b"VPNLAB/1 BYE\n", b"WELCOME 10.8.0.2/24"]
)
def test_plain_client_rejects_bad_welcome(reply):
    with pytest.raises(RemoteProtocolError):
        PLAIN.client_handshake(seeded_random()).receive(reply, 0.0)


def test_plain_protection_round_trip():
    protection = PlainProtection()
    packet = ipv4_packet("10.8.0.2", "203.0.113.10")
    assert protection.open(protection.seal(packet)) == (Kind.PACKET, packet)
    assert protection.open(protection.seal_keepalive()) == (Kind.KEEPALIVE, b"")
    assert protection.open(protection.seal_bye()) == (Kind.BYE, b"")


@given(st.binary(max_size=200))
def test_plain_open_never_raises_anything_else(data):
    with contextlib.suppress(RemoteProtocolError):
        PlainProtection().open(data)


def test_make_format_rejects_unknown_cipher():
    with pytest.raises(Exception, match="unknown cipher"):
        make_format("rot13")
