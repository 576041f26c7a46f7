"""SockSelected / TunSelected in TAP mode: the server's MAC-learning switch, sans-IO.

With ``--mode tap`` the tunnel carries Ethernet frames, and the server joins its own tap0 and
every client's tap0 into one layer-2 segment, as a bridge (``ip link add type bridge``) would.
Each client is one *port* (its UDP address), the server's tap0 is the port :data:`LOCAL`.

    1. a frame arrives on a port: its source MAC is *learned* (MAC -> port, time last seen);
       a client may not claim a MAC that is fresh on another port ("spoofed source mac")
    2. its destination MAC is looked up: a known unicast MAC goes to its one port (nothing if
       that is where it came from); broadcast, multicast (ARP requests, IPv6 neighbour
       discovery) and unknown MACs are *flooded* to every other port
    0. before that, ServerCore checks what a client's frame claims (:func:`claimed_sender`):
       the sender of an ARP frame and the source of an IPv4 packet must be its own address
    3. entries not seen for ``aging_s`` (300 s, as the Linux bridge) are forgotten; the table
       holds at most ``max_entries`` MACs, and one port at most ``max_per_port``: a client
       that invents MACs only pushes out its own oldest ones. One source IP (all its ports)
       holds at most ``max_per_ip``; beyond that, or when the table is full, a new MAC is
       not learned (its frames still pass, replies to it are flooded): no MAC of a live
       port is ever evicted for another's
    4. flooding costs a copy per port, so one source IP may flood ``FLOOD_RATE_PER_S``
       frames a second (``flood_allowed``); the server's own tap0 is not limited

Pure code: no socket, no clock (``now`` comes in), no os. The frames themselves are not
touched; ``ServerCore`` seals them for the ports this returns.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from vpnlab.core.ratelimit import HelloRateLimiter
from vpnlab.core.reasons import Drop, NotLearned

Port = Hashable
"""A switch port: a client's UDP address, or :data:`LOCAL`."""

LOCAL = "local"
"""The port of the server's own tap0."""

MAC_BYTES = 6
AGING_S = 300.0
"""How long a learned MAC stays without being seen again (Linux bridge ``ageing_time``)."""
MAX_ENTRIES = 4096
MAX_PER_PORT = 64
MAX_PER_IP = 128
"""MACs of all the ports (sessions) of one source IP: a classroom behind one NAT, a few each."""
FLOOD_RATE_PER_S = 100.0
FLOOD_BURST = 200
"""Flooded frames (broadcast, multicast, unknown unicast) one source IP may send: a token
bucket as the Hello's (``ratelimit.py``); ARP needs a few a second."""
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
VLAN_TAGS = (0x8100, 0x88A8)
"""802.1Q and 802.1ad: a tag of 4 bytes before the real EtherType (VLAN 0 counts as untagged)."""
ARP_IPV4 = bytes.fromhex("000108000604")
"""ARP's hardware type 1 (Ethernet), protocol type 0x0800, address lengths 6 and 4."""


def format_mac(mac: bytes) -> str:
    """``b"\\x02\\x00..."`` -> ``02:00:...`` (for logs and the status file)."""
    return mac.hex(":")


def is_group(mac: bytes) -> bool:
    """Broadcast or multicast: the I/G bit, the lowest bit of the first byte, is set."""
    return bool(mac[0] & 1)


def frame_macs(frame: bytes) -> tuple[bytes, bytes]:
    """(destination, source) MAC of an Ethernet frame of at least 14 bytes."""
    return frame[:MAC_BYTES], frame[MAC_BYTES : 2 * MAC_BYTES]


def frame_payload(frame: bytes) -> tuple[int, bytes]:
    """The EtherType of a frame of at least 14 bytes and what follows it, under any VLAN tags."""
    at = 2 * MAC_BYTES
    ethertype = int.from_bytes(frame[at : at + 2], "big")
    while ethertype in VLAN_TAGS and len(frame) >= at + 6:
        at += 4
        ethertype = int.from_bytes(frame[at : at + 2], "big")
    return ethertype, frame[at + 2 :]


def claimed_sender(frame: bytes) -> tuple[Drop, IPv4Address | None] | None:
    """The IPv4 address a frame speaks for, with the drop reason if it is not the sender's own.

    ARP (the sender protocol address, if the sender hardware address is the frame's source
    MAC) or IPv4 (the source address); None for other frames and for an ARP probe (sender
    0.0.0.0, RFC 5227), which claim no address. The address is None when there is none to
    read (a truncated header): such a frame is dropped too.
    """
    ethertype, payload = frame_payload(frame)
    if ethertype == ETHERTYPE_IPV4:
        ok = len(payload) >= 20 and payload[0] >> 4 == 4
        return Drop.SPOOFED_SOURCE, IPv4Address(payload[12:16]) if ok else None
    if ethertype != ETHERTYPE_ARP:
        return None
    ok = len(payload) >= 28 and payload[:6] == ARP_IPV4 and payload[8:14] == frame[6:12]
    sender = IPv4Address(payload[14:18]) if ok else None
    return None if sender == IPv4Address(0) else (Drop.SPOOFED_ARP_SENDER, sender)


@dataclass
class Entry:
    """One learned MAC: where it lives and when it was last seen (``None``: static, no aging)."""

    port: Port
    seen: float | None


class Switch:
    """The learning switch of the server's layer-2 segment (ServerConnection, TAP mode).

    Args:
        aging_s: forget a MAC not seen for this long.
        max_entries: the table's size limit (the least recently seen entry goes first).
        max_per_port: how many MACs one port may hold (its own oldest goes first).
        max_per_ip: how many MACs all the ports of one source IP may hold.
    """

    def __init__(
        self,
        aging_s: float = AGING_S,
        max_entries: int = MAX_ENTRIES,
        max_per_port: int = MAX_PER_PORT,
        max_per_ip: int = MAX_PER_IP,
    ) -> None:
        self.aging_s = aging_s
        self.max_entries = max_entries
        self.max_per_port = max_per_port
        self.max_per_ip = max_per_ip
        self.ports: set[Port] = set()
        self.refused: Counter[NotLearned] = Counter()
        """MACs not learned, by why: "mac table full", "too many macs from one address"."""
        self._per_ip: Counter[Hashable] = Counter()
        self._floods = HelloRateLimiter(FLOOD_RATE_PER_S, FLOOD_BURST)
        self._table: OrderedDict[bytes, Entry] = OrderedDict()  # least recently seen first
        self._by_port: dict[Port, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def add_port(self, port: Port) -> None:
        """A client connected (or the server's tap0 came up): flood to it from now on."""
        self.ports.add(port)
        self._by_port.setdefault(port, OrderedDict())

    def remove_port(self, port: Port) -> None:
        """A client left: forget the port and every MAC learned on it."""
        self.ports.discard(port)
        for mac in list(self._by_port.get(port, {})):
            self._remove(mac)
        self._by_port.pop(port, None)

    def _fresh(self, mac: bytes, now: float) -> Entry | None:
        entry = self._table.get(mac)
        if entry is None:
            return None
        if entry.seen is not None and now - entry.seen >= self.aging_s:
            self._remove(mac)
            return None
        return entry

    def _remove(self, mac: bytes) -> None:
        entry = self._table.pop(mac, None)
        if entry is not None:
            self._by_port.get(entry.port, OrderedDict()).pop(mac, None)
            self._per_ip[source_of(entry.port)] -= 1

    def _evict(self, macs: Iterable[bytes]) -> None:
        """Make room: forget the least recently seen MAC of ``macs`` that is not static."""
        for mac in macs:
            if self._table[mac].seen is not None:
                self._remove(mac)
                return

    def _room(self, now: float) -> bool:
        """Whether the table has room, after forgetting aged entries (the oldest come first)."""
        while len(self._table) >= self.max_entries:
            oldest = next(((m, e.seen) for m, e in self._table.items() if e.seen is not None), None)
            if oldest is None or now - oldest[1] < self.aging_s:
                return False
            self._remove(oldest[0])
        return True

    def add_static(self, mac: bytes, port: Port) -> None:
        """A MAC that never ages and no other port may claim (the server's own tap0)."""
        self._remove(mac)
        self.add_port(port)
        self._table[mac] = Entry(port, None)
        self._by_port[port][mac] = None
        self._per_ip[source_of(port)] += 1

    def learn(self, mac: bytes, port: Port, now: float, *, take_over: bool = False) -> bool:
        """Step 1: remember that ``mac`` lives behind ``port``.

        Returns:
            False (and learns nothing) when ``mac`` is a group address, or is fresh or static
            on another port and ``take_over`` is not given: a client claiming someone else's
            MAC. True otherwise, also when the MAC could not be learned (see ``refused``).
        """
        if is_group(mac):
            return False
        entry = self._fresh(mac, now)
        if entry is not None and entry.port != port:
            if not take_over or entry.seen is None:
                return False
            self._remove(mac)
            entry = None
        if entry is not None:
            if entry.seen is not None:
                entry.seen = now
                self._table.move_to_end(mac)
                self._by_port[port].move_to_end(mac)
            return True
        self.add_port(port)
        own = self._by_port[port]
        if len(own) >= self.max_per_port:
            self._evict(own)  # only its own oldest
        if self._per_ip[source_of(port)] >= self.max_per_ip and port != LOCAL:
            self.refused[NotLearned.TOO_MANY_MACS] += 1
        elif not self._room(now):
            self.refused[NotLearned.TABLE_FULL] += 1
        else:
            self._table[mac] = Entry(port, now)
            own[mac] = None
            self._per_ip[source_of(port)] += 1
        return True

    def lookup(self, mac: bytes, now: float) -> Port | None:
        """The port a unicast ``mac`` was learned on (None: unknown, aged out, or a group)."""
        if is_group(mac):
            return None
        entry = self._fresh(mac, now)
        return None if entry is None else entry.port

    def forward(self, destination: bytes, in_port: Port, now: float) -> list[Port]:
        """Step 2: the ports a frame for ``destination`` that came in on ``in_port`` goes out of.

        A known unicast MAC: its port (none if that is ``in_port``); otherwise every port but
        ``in_port`` (flooding), in a stable order.
        """
        port = self.lookup(destination, now)
        if port is not None:
            return [] if port == in_port else [port]
        return sorted((p for p in self.ports if p != in_port), key=repr)

    def flood_allowed(self, destination: bytes, in_port: Port, now: float) -> bool:
        """Step 4: whether a frame for ``destination`` from ``in_port`` may go out; a flood
        (group or unknown destination) takes a token of its source IP's bucket."""
        if in_port == LOCAL or self.lookup(destination, now) is not None:
            return True
        return self._floods.allow(str(source_of(in_port)), now)

    def expire(self, now: float) -> int:
        """Step 3: drop every entry older than ``aging_s``; returns how many went."""
        old = [
            mac
            for mac, entry in self._table.items()
            if entry.seen is not None and now - entry.seen >= self.aging_s
        ]
        for mac in old:
            self._remove(mac)
        return len(old)

    def entries(self, now: float) -> list[dict[str, object]]:
        """The MAC table for the status file (as ``bridge fdb show``): MAC, port, age."""
        return [
            {
                "mac": format_mac(mac),
                "port": port_name(entry.port),
                "age_s": None if entry.seen is None else round(now - entry.seen, 1),
            }
            for mac, entry in self._table.items()
        ]


def source_of(port: Port) -> Hashable:
    """The source IP of a client's port (its MACs and floods are counted per IP)."""
    return port[0] if isinstance(port, tuple) else port


def port_name(port: Port) -> str:
    """``("192.0.2.2", 4500)`` -> ``192.0.2.2:4500``; :data:`LOCAL` stays ``local``."""
    if isinstance(port, tuple) and len(port) == 2:
        return f"{port[0]}:{port[1]}"
    return str(port)
