"""instruments/loadclients.py without root: the echo a load client sends and the reply it
accepts, checked against scapy; a load client's handshake against a real ServerCore over UDP
on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import time
from ipaddress import IPv4Address, IPv6Address

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from vpnlab.core.client_core import ClientCore
from vpnlab.core.server_core import ServerCore
from vpnlab.instruments.loadclients import LoadDriver, echo_request, is_echo_reply
from vpnlab.wire.ciphers import make_format

from .helpers import PSK, SERVER_TUNNEL_ADDRESS, receive_one, seeded_random

ME, SERVER_IP = IPv4Address("10.8.0.7"), IPv4Address("10.8.0.1")


def test_echo_request_is_a_valid_icmp_echo():
    packet = IP(echo_request(ME, SERVER_IP, 3))
    assert packet[ICMP].type == 8 and packet[ICMP].seq == 3 and packet.src == str(ME)
    again = IP(bytes(packet))
    del again.chksum, again[ICMP].chksum
    again = IP(bytes(again))
    assert again.chksum == packet.chksum and again[ICMP].chksum == packet[ICMP].chksum


def test_only_the_matching_reply_is_accepted():
    reply = bytes(
        IP(src=str(SERVER_IP), dst=str(ME)) / ICMP(type=0, id=0x7601, seq=3) / b"vpnlab class load"
    )
    assert is_echo_reply(reply, ME, SERVER_IP, 3)
    assert not is_echo_reply(reply, ME, SERVER_IP, 4)  # an older ping's
    assert not is_echo_reply(reply, IPv4Address("10.8.0.8"), SERVER_IP, 3)
    assert not is_echo_reply(echo_request(SERVER_IP, ME, 3), ME, SERVER_IP, 3)  # a request


def test_a_load_client_connects_to_a_real_server_core_over_udp():
    fmt = make_format("esp-aes-gcm", PSK)
    server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server_sock.bind(("127.0.0.1", 0))
    server_sock.settimeout(2)
    server = ServerCore(fmt, SERVER_TUNNEL_ADDRESS, seeded_random(1))
    address = server_sock.getsockname()
    driver = LoadDriver(
        address, lambda: ClientCore(address, fmt.client_handshake(os.urandom)), SERVER_IP
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    client = driver.add(sock)
    try:
        driver.connect(client)
        hello, peer = server_sock.recvfrom(2048)
        receive_one(server, hello, peer, time.monotonic())
        for datagram, to in server.datagrams_to_send():
            server_sock.sendto(datagram, to)
        assert driver.run(lambda: client.connected_at is not None, 2.0)
        assert client.handshake_s is not None and client.handshake_s > 0
    finally:
        sock.close()
        server_sock.close()


ME6, SERVER_IP6 = IPv6Address("fd10:8::104"), IPv6Address("fd10:8::1")


def test_an_ipv6_only_client_s_echo_request_is_a_valid_icmpv6_echo():
    packet = IPv6(echo_request(ME6, SERVER_IP6, 3))
    assert packet[ICMPv6EchoRequest].seq == 3 and packet.src == str(ME6) and packet.hlim == 64
    again = packet.copy()
    del again[ICMPv6EchoRequest].cksum
    assert IPv6(bytes(again))[ICMPv6EchoRequest].cksum == packet[ICMPv6EchoRequest].cksum


def test_only_the_matching_icmpv6_reply_is_accepted():
    reply = bytes(
        IPv6(src=str(SERVER_IP6), dst=str(ME6))
        / ICMPv6EchoReply(id=0x7601, seq=3, data=b"vpnlab class load")
    )
    assert is_echo_reply(reply, ME6, SERVER_IP6, 3)
    assert not is_echo_reply(reply, ME6, SERVER_IP6, 4)
    assert not is_echo_reply(reply, IPv6Address("fd10:8::105"), SERVER_IP6, 3)
    assert not is_echo_reply(echo_request(SERVER_IP6, ME6, 3), ME6, SERVER_IP6, 3)
