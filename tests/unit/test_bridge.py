"""TAP mode without root: the learning switch, frame sealing, the cores switching frames."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from vpnlab.core.bridge import (
    FLOOD_BURST,
    LOCAL,
    MAX_PER_IP,
    MAX_PER_PORT,
    Switch,
    format_mac,
    is_group,
)
from vpnlab.core.client_core import ClientCore
from vpnlab.core.errors import LocalProtocolError, RemoteProtocolError
from vpnlab.core.events import DatagramDropped, PacketReceived
from vpnlab.core.formats import Established, Kind
from vpnlab.core.server_core import ServerCore
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.crypto import SaKeys
from vpnlab.wire.esp import NH_ETHERNET, EspSession, generate_static_keys
from vpnlab.wire.plain import PLAIN, PlainProtection

from .helpers import CLIENT, SERVER, CorePair, ipv4_packet, receive_one, seeded_random

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
SRV = bytes.fromhex("02000000fffe")
BROADCAST = b"\xff" * 6
CLIENT2 = ("192.0.2.3", 4500)


def frame(dst: bytes, src: bytes, payload: bytes = b"\x88\xb5" + b"a" * 28) -> bytes:
    """A frame of the local experimental EtherType (IEEE 802): the switch reads only its MACs."""
    return dst + src + payload


def arp(src: bytes, sender_ip: str, dst: bytes = b"\xff" * 6, **fields) -> bytes:
    """An ARP request (or, with op=2, a reply) from ``src`` claiming ``sender_ip``."""
    mac = format_mac(src)
    packet = ARP(op=fields.pop("op", 1), hwsrc=fields.pop("hwsrc", mac), psrc=sender_ip, **fields)
    return bytes(Ether(dst=format_mac(dst), src=mac) / packet)


def ip_frame(src: bytes, source_ip: str, dst: bytes = SRV) -> bytes:
    packet = IP(src=source_ip, dst="10.8.0.1") / UDP(sport=1, dport=2)
    return bytes(Ether(dst=format_mac(dst), src=format_mac(src)) / packet)


# --- the switch ---------------------------------------------------------------------------------


def test_Switch_floods_unknown_and_broadcast_to_every_other_port():
    sw = Switch()
    for port in (LOCAL, "p1", "p2"):
        sw.add_port(port)
    assert sw.forward(BROADCAST, "p1", 0.0) == sorted([LOCAL, "p2"], key=repr)
    assert sw.forward(A, "p1", 0.0) == sorted([LOCAL, "p2"], key=repr)


def test_Switch_learns_and_forwards_unicast_to_one_port():
    sw = Switch()
    for port in (LOCAL, "p1", "p2"):
        sw.add_port(port)
    assert sw.learn(A, "p1", 0.0)
    assert sw.forward(A, "p2", 1.0) == ["p1"]
    assert sw.forward(A, "p1", 1.0) == []  # back where it came from: nowhere
    assert sw.lookup(A, 1.0) == "p1"


def test_Switch_refuses_a_fresh_mac_claimed_by_another_port():
    sw = Switch()
    assert sw.learn(A, "p1", 0.0)
    assert not sw.learn(A, "p2", 1.0)
    assert sw.lookup(A, 1.0) == "p1"
    assert sw.learn(A, "p2", 1.0, take_over=True)
    assert sw.lookup(A, 1.0) == "p2"


def test_Switch_static_mac_is_never_taken_over_nor_aged():
    sw = Switch(aging_s=10.0)
    sw.add_static(SRV, LOCAL)
    assert not sw.learn(SRV, "p1", 0.0, take_over=True)
    assert sw.expire(1e6) == 0
    assert sw.lookup(SRV, 1e6) == LOCAL


def test_Switch_refuses_group_source():
    sw = Switch()
    assert not sw.learn(BROADCAST, "p1", 0.0)
    assert not sw.learn(bytes.fromhex("333300000001"), "p1", 0.0)
    assert len(sw) == 0
    assert is_group(BROADCAST) and not is_group(A)


def test_Switch_ages_entries_out():
    sw = Switch(aging_s=300.0)
    sw.add_port("p2")
    sw.learn(A, "p1", 0.0)
    assert sw.lookup(A, 299.9) == "p1"
    assert sw.lookup(A, 300.0) is None  # aged: flooded again
    assert "p1" in sw.forward(A, "p2", 300.0)
    sw.learn(B, "p1", 0.0)
    sw.learn(C, "p1", 200.0)
    assert sw.expire(300.0) == 1 and len(sw) == 1
    assert sw.learn(B, "p2", 301.0)  # an aged MAC may move


def test_Switch_refresh_keeps_an_entry_alive():
    sw = Switch(aging_s=10.0)
    sw.learn(A, "p1", 0.0)
    sw.learn(A, "p1", 8.0)
    assert sw.lookup(A, 15.0) == "p1"


def test_Switch_table_size_is_bounded_and_a_full_table_evicts_no_live_mac():
    """Full: a new MAC is not learned (its frames still go: replies to it are flooded) rather
    than pushing out the MAC of a client that is still there."""
    sw = Switch(max_entries=8, max_per_port=100, aging_s=300.0)
    sw.add_static(SRV, LOCAL)
    for n in range(20):
        assert sw.learn(bytes([2, 0, 0, 0, 1, n]), f"p{n}", float(n))
    assert len(sw) == 8
    assert sw.lookup(SRV, 20.0) == LOCAL  # the static entry stays
    assert sw.lookup(bytes([2, 0, 0, 0, 1, 0]), 20.0) == "p0"  # the first stay
    assert sw.lookup(bytes([2, 0, 0, 0, 1, 19]), 20.0) is None  # the last were refused
    assert sw.refused["mac table full"] == 13
    assert sw.learn(C, "p20", 300.5)  # p0's MAC has aged out: room for one
    assert sw.lookup(C, 300.5) == "p20" and len(sw) == 8


def test_Switch_one_port_only_pushes_out_its_own_macs():
    sw = Switch(max_entries=100, max_per_port=4)
    sw.learn(A, "victim", 0.0)
    for n in range(50):
        sw.learn(bytes([2, 0, 0, 0, 2, n]), "flooder", 1.0 + n)
    assert len(sw) == 5
    assert sw.lookup(A, 60.0) == "victim"


def test_Switch_caps_macs_per_source_ip_not_only_per_port():
    """32 sessions from one address, each with 64 MACs, fill no more than MAX_PER_IP entries,
    and a client on another address still gets its MAC learned."""
    sw = Switch()
    for port in range(32):
        for n in range(MAX_PER_PORT):
            sw.learn(bytes([2, 1, 0, port, 0, n]), ("198.51.100.7", 1000 + port), float(n))
    assert len(sw) == MAX_PER_IP
    assert sw.refused["too many macs from one address"] == 32 * MAX_PER_PORT - MAX_PER_IP
    assert sw.learn(A, CLIENT, 100.0) and sw.lookup(A, 100.0) == CLIENT


def test_Switch_rate_limits_floods_per_source_ip():
    sw = Switch()
    for port in (LOCAL, ("198.51.100.7", 1), ("198.51.100.7", 2), CLIENT):
        sw.add_port(port)
    sw.learn(B, CLIENT, 0.0)
    floods = [sw.flood_allowed(BROADCAST, ("198.51.100.7", 1 + n % 2), 0.0) for n in range(1000)]
    assert sum(floods) == FLOOD_BURST  # both of its ports share the address's bucket
    assert sw.flood_allowed(C, ("198.51.100.7", 1), 0.0) is False  # unknown unicast floods too
    assert sw.flood_allowed(B, ("198.51.100.7", 1), 0.0)  # a known unicast MAC is no flood
    assert sw.flood_allowed(BROADCAST, CLIENT, 0.0)  # another address has its own bucket
    assert sw.flood_allowed(BROADCAST, LOCAL, 0.0)  # the server's own tap0 is not limited
    assert sw.flood_allowed(BROADCAST, ("198.51.100.7", 1), 1.0)  # tokens come back


def test_Switch_remove_port_forgets_its_macs():
    sw = Switch()
    sw.add_port("p2")
    sw.learn(A, "p1", 0.0)
    sw.learn(B, "p1", 0.0)
    sw.remove_port("p1")
    assert len(sw) == 0 and sw.forward(BROADCAST, "p2", 1.0) == []
    assert sw.entries(1.0) == []


def test_Switch_entries_for_the_status_file():
    sw = Switch()
    sw.add_static(SRV, LOCAL)
    sw.learn(A, ("192.0.2.2", 4500), 1.0)
    assert sw.entries(3.0) == [
        {"mac": format_mac(SRV), "port": "local", "age_s": None},
        {"mac": "02:00:00:00:00:01", "port": "192.0.2.2:4500", "age_s": 2.0},
    ]


# --- protections --------------------------------------------------------------------------------


def esp_pair(cipher: str = "esp-aes-gcm") -> tuple[EspSession, EspSession]:
    size = 20 if cipher == "esp-aes-gcm" else 32
    a, b = SaKeys(0x1001, b"\x01" * size), SaKeys(0x1002, b"\x02" * size)
    return EspSession(cipher, a, b), EspSession(cipher, b, a)


@pytest.mark.parametrize("cipher", ["esp-null", "esp-aes-gcm"])
def test_EspSession_seal_frame_round_trip_next_header_143(cipher):
    client, server = esp_pair(cipher)
    data = frame(BROADCAST, A)
    datagram = client.seal_frame(data)
    assert server.open_frame(datagram) == (Kind.PACKET, data)
    if cipher == "esp-null":
        assert datagram[-17] == NH_ETHERNET


def test_EspSession_frames_and_packets_do_not_mix():
    client, server = esp_pair()
    with pytest.raises(RemoteProtocolError, match="bad next header"):
        server.open(client.seal_frame(frame(BROADCAST, A)))
    with pytest.raises(RemoteProtocolError, match="bad next header"):
        server.open_frame(client.seal(ipv4_packet("10.8.0.2", "10.8.0.1")))
    assert server.open_frame(client.seal_keepalive()) == (Kind.KEEPALIVE, b"")
    assert server.open_frame(client.seal_bye()) == (Kind.BYE, b"")
    with pytest.raises(LocalProtocolError, match="runt"):
        client.seal_frame(b"\x00" * 13)


def test_PlainProtection_frames():
    p = PlainProtection()
    data = frame(BROADCAST, A)
    assert p.open_frame(p.seal_frame(data)) == (Kind.PACKET, data)
    assert p.open_frame(p.seal_keepalive()) == (Kind.KEEPALIVE, b"")
    assert p.open_frame(p.seal_bye()) == (Kind.BYE, b"")
    with pytest.raises(RemoteProtocolError):
        p.open_frame(b"\x00" * 10)
    with pytest.raises(LocalProtocolError):
        p.seal_frame(b"\x00" * 10)


# --- the cores in TAP mode ----------------------------------------------------------------------


class TapPair(CorePair):
    """A CorePair whose cores carry frames, plus a second client."""

    def __init__(self, fmt, **server_kw) -> None:
        super().__init__(fmt, layer2=True, **server_kw)
        self.client = ClientCore(SERVER, fmt.client_handshake(seeded_random(2)), layer2=True)
        self.client2 = ClientCore(SERVER, fmt.client_handshake(seeded_random(3)), layer2=True)
        self.server.set_local_mac(SRV)

    def connect2(self) -> None:
        self.client2.connect(self.now)
        for datagram, _ in self.client2.datagrams_to_send():
            receive_one(self.server, datagram, CLIENT2, self.now)
        self.deliver()

    def deliver(self) -> dict:
        """Hand everything the server queued to its client; return what each tap got."""
        got: dict = {CLIENT: [], CLIENT2: []}
        for datagram, peer in self.server.datagrams_to_send():
            core = self.client if peer == CLIENT else self.client2
            for event in receive_one(core, datagram, SERVER, self.now):
                if isinstance(event, PacketReceived):
                    got[peer].append(event.packet)
        return got

    def from_client(self, core: ClientCore, peer, data: bytes) -> list:
        core.send_packets([data], self.now)
        events = []
        for datagram, _ in core.datagrams_to_send():
            events += receive_one(self.server, datagram, peer, self.now)
        return events


FORMATS = [PLAIN, make_format("esp-aes-gcm", b"k" * 32)]


@pytest.mark.parametrize("fmt", FORMATS, ids=["plain", "esp-aes-gcm"])
def test_ServerCore_tap_arp_request_floods_and_reply_is_unicast(fmt):
    pair = TapPair(fmt)
    pair.connect()
    pair.connect2()
    request = arp(A, "10.8.0.2", pdst="10.8.0.1")
    events = pair.from_client(pair.client, CLIENT, request)
    assert [e.packet for e in events if isinstance(e, PacketReceived)] == [request]
    assert pair.deliver()[CLIENT2] == [request]  # flooded to the other client too
    reply = frame(A, SRV)
    assert pair.server.send_packets([reply], pair.now) == []
    got = pair.deliver()
    assert got == {CLIENT: [reply], CLIENT2: []}  # learned: unicast to one client
    assert pair.client.counters.drops == {}


def test_ServerCore_tap_client_to_client_and_isolation():
    pair = TapPair(PLAIN)
    pair.connect()
    pair.connect2()
    pair.from_client(pair.client2, CLIENT2, frame(BROADCAST, B))
    pair.deliver()
    events = pair.from_client(pair.client, CLIENT, frame(B, A))
    assert not [e for e in events if isinstance(e, PacketReceived)]  # not for the server
    assert pair.deliver()[CLIENT2] == [frame(B, A)]

    isolated = TapPair(PLAIN, isolate_clients=True)
    isolated.connect()
    isolated.connect2()
    isolated.from_client(isolated.client2, CLIENT2, frame(BROADCAST, B))
    assert isolated.deliver()[CLIENT] == []  # broadcast reaches only the server
    events = isolated.from_client(isolated.client, CLIENT, frame(B, A))
    assert DatagramDropped("client to client denied", CLIENT) in events


def test_ServerCore_tap_drops_a_claimed_mac():
    pair = TapPair(PLAIN)
    pair.connect()
    pair.connect2()
    pair.from_client(pair.client, CLIENT, frame(BROADCAST, A))
    events = pair.from_client(pair.client2, CLIENT2, frame(BROADCAST, A))
    assert events == [DatagramDropped("spoofed source mac", CLIENT2)]
    events = pair.from_client(pair.client2, CLIENT2, frame(BROADCAST, SRV))
    assert events == [DatagramDropped("spoofed source mac", CLIENT2)]
    events = pair.from_client(pair.client2, CLIENT2, frame(BROADCAST, BROADCAST))
    assert events == [DatagramDropped("bad source mac", CLIENT2)]
    assert pair.server.counters.drops["spoofed source mac"] == 2


def test_ServerCore_tap_forgets_a_lost_clients_macs():
    pair = TapPair(PLAIN)
    pair.connect()
    pair.from_client(pair.client, CLIENT, frame(BROADCAST, A))
    assert pair.server.forwarder.switch.lookup(A, pair.now) == CLIENT
    pair.server.close(pair.now)
    assert pair.server.forwarder.switch.lookup(A, pair.now) is None
    assert "mac_table" in pair.server.describe(pair.now)


def test_ClientCore_tap_carries_any_frame_but_not_runts():
    core = ClientCore(SERVER, PLAIN.client_handshake(seeded_random(2)), layer2=True)
    server = ServerCore(PLAIN, IPv4Interface("10.8.0.1/24"), seeded_random(1), layer2=True)
    core.connect(0.0)
    for datagram, _ in core.datagrams_to_send():
        receive_one(server, datagram, CLIENT, 0.0)
    for datagram, _ in server.datagrams_to_send():
        receive_one(core, datagram, SERVER, 0.0)
    ipv6_frame = frame(bytes.fromhex("333300000002"), A, b"\x86\xdd" + b"\x60" + b"\0" * 39)
    assert core.send_packets([ipv6_frame], 0.0) == []
    assert core.send_packets([b"\x00" * 5], 0.0) == [DatagramDropped("tun: runt frame")]


# --- TAP mode: a client speaks only for its own addresses ---------------------------------------


def delivered(events) -> list[bytes]:
    return [event.packet for event in events if isinstance(event, PacketReceived)]


@pytest.mark.parametrize(
    "spoof",
    [
        arp(A, "10.8.0.1"),  # gratuitous ARP: "the server's address is at my MAC"
        arp(A, "10.8.0.3", op=2, dst=SRV),  # a reply for the other client's address
        arp(A, "10.8.0.2", hwsrc="02:00:00:00:00:09"),  # its own address, someone else's MAC
        bytes(
            Ether(dst="ff:ff:ff:ff:ff:ff", src=format_mac(A))
            / Dot1Q(vlan=0)
            / ARP(hwsrc=format_mac(A), psrc="10.8.0.1")
        ),  # priority-tagged: the kernel treats VLAN 0 as untagged
        arp(A, "10.8.0.2")[:30],  # cut short: no sender address to check
    ],
    ids=["gratuitous-server", "reply-other-client", "other-mac", "vlan0", "runt"],
)
def test_ServerCore_tap_drops_arp_claiming_an_address_not_its_own(spoof):
    pair = TapPair(PLAIN)
    pair.connect()
    pair.connect2()
    events = pair.from_client(pair.client, CLIENT, spoof)
    assert events == [DatagramDropped("spoofed arp sender", CLIENT)]
    assert pair.deliver() == {CLIENT: [], CLIENT2: []}  # flooded to nobody
    assert pair.server.forwarder.switch.lookup(A, pair.now) is None  # and its MAC was not learned


def test_ServerCore_tap_drops_ipv4_from_an_address_not_its_own():
    pair = TapPair(PLAIN)
    pair.connect()
    for source in ("10.8.0.1", "10.8.0.3", "192.0.2.99", "0.0.0.0"):
        events = pair.from_client(pair.client, CLIENT, ip_frame(A, source))
        assert events == [DatagramDropped("spoofed source", CLIENT)], source
    events = pair.from_client(pair.client, CLIENT, ip_frame(A, "10.8.0.2")[:20])
    assert events == [DatagramDropped("spoofed source", CLIENT)]  # no IPv4 header to check
    assert pair.server.counters.drops["spoofed source"] == 5


def test_ServerCore_tap_passes_a_clients_own_arp_and_ipv4():
    pair = TapPair(PLAIN, client_networks={IPv4Address("10.8.0.2"): [IPv4Network("172.16.1.0/24")]})
    pair.connect()
    own = [
        arp(A, "10.8.0.2", pdst="10.8.0.1"),
        arp(A, "0.0.0.0", pdst="10.8.0.2"),  # an RFC 5227 probe claims no address
        arp(A, "10.8.0.2", op=2, dst=SRV, hwdst=format_mac(SRV), pdst="10.8.0.1"),
        ip_frame(A, "10.8.0.2"),
        ip_frame(B, "172.16.1.5"),  # site to site: a host of its LAN, bridged
        arp(B, "172.16.1.5"),
        frame(SRV, A, b"\x86\xdd" + b"\x60" + b"\0" * 39),  # not ARP nor IPv4: MACs only
    ]
    for data in own:
        assert delivered(pair.from_client(pair.client, CLIENT, data)) == [data]
    assert pair.server.counters.drops == {}


def test_ServerCore_tap_static_keys_add_a_port_only_after_a_datagram_opens():
    """Strangers' datagrams before the client binds leave no switch port (each used to add
    one, and the next flooded frame raised KeyError looking up its session)."""
    keys = generate_static_keys("esp-aes-gcm", seeded_random(5))
    server = ServerCore(
        None,
        IPv4Interface("10.8.0.1/24"),
        seeded_random(1),
        static=Established(keys.server(), keys.client_address),
        layer2=True,
    )
    server.set_local_mac(SRV)
    for n in range(100):
        events = receive_one(server, b"\x00\x00\xc0\x01" + bytes(40), ("198.51.100.7", n), 0.0)
        assert events and isinstance(events[0], DatagramDropped)
    assert server.forwarder.switch.ports == {LOCAL}
    assert server.send_packets([frame(BROADCAST, SRV)], 0.0) == []  # flooded to nobody, no KeyError
    client = ClientCore(SERVER, None, established=keys.client(), layer2=True)
    client.connect(0.0)
    client.send_packets([arp(A, "10.8.0.2")], 0.0)
    for datagram, _ in client.datagrams_to_send():
        receive_one(server, datagram, CLIENT, 0.0)
    assert server.forwarder.switch.ports == {LOCAL, CLIENT}
    server.send_packets([frame(BROADCAST, SRV)], 0.0)
    assert [peer for _, peer in server.datagrams_to_send()] == [CLIENT]


def test_ServerCore_tap_broadcast_flood_is_rate_limited():
    pair = TapPair(PLAIN)
    pair.connect()
    pair.connect2()
    events = []
    for _ in range(FLOOD_BURST + 50):
        events += pair.from_client(pair.client, CLIENT, arp(A, "10.8.0.2", pdst="10.8.0.1"))
    assert len(delivered(events)) == FLOOD_BURST
    assert pair.server.counters.drops["flood rate limit"] == 50
    assert len(pair.deliver()[CLIENT2]) == FLOOD_BURST  # the fan-out is bounded as well
    unicast = ip_frame(A, "10.8.0.2", dst=SRV)  # to a known MAC: not a flood
    assert delivered(pair.from_client(pair.client, CLIENT, unicast)) == [unicast]
