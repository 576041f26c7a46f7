"""SockSelected for a UDP_GRO batch, sans-IO: the server's data packets without an event each.

A part of :class:`~vpnlab.core.server_core.ServerCore` kept in its own file (as
``server_tap.py``): the fast path's receive entry. A batch holds the datagrams of one peer, so
its session is looked up once; a data packet from it is opened, its source checked, counted and
returned as bytes. Everything else (a Hello, a stranger, static keys, a TAP frame, a keepalive,
a Bye, a packet from the client's LAN) takes the general ``_receive``, so both paths
make the same decisions. Measured in process (43 AES-GCM datagrams of 1,400 bytes per batch,
with the tun write's coalescing): 5.9 -> 5.2 us per packet.
"""

from __future__ import annotations

from vpnlab.core.bridge import Switch
from vpnlab.core.errors import RemoteProtocolError
from vpnlab.core.events import Address, Event
from vpnlab.core.formats import Format, Kind
from vpnlab.core.session import CoreBase, Counters, OnBug, Session, sort_events


def _no_hello(datagram: bytes) -> bool:
    """Static keys: no datagram is a Hello."""
    return False


class BatchReceiving(CoreBase):
    """The batch receive entry of ServerCore, which provides the attributes named below and
    ``_deliver`` (the general path for what is not a plain data packet)."""

    format: Format | None
    switch: Switch | None
    sessions: dict[Address, Session]
    counters: Counters
    isolate_clients: bool

    def _deliver(self, session: Session, kind: Kind, packet: bytes, now: float) -> list[Event]:
        raise NotImplementedError

    def receive_datagrams(
        self, datagrams: list[bytes], peer: Address, now: float, on_bug: OnBug | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """SockSelected for a GRO batch from one peer (``CoreBase.receive_datagrams``): its
        session is looked up once, and a data packet from it costs no event: it is opened,
        its source checked, counted and returned as bytes. Hellos, strangers, static keys,
        TAP frames and the rest take ``_receive``."""
        packets: list[bytes] = []
        events: list[Event] = []
        session = self.sessions.get(peer)
        is_hello = self.format.is_hello if self.format is not None else _no_hello
        counters = self.counters
        for datagram in datagrams:
            try:
                if session is None or self.switch is not None or is_hello(datagram):
                    sort_events(self._receive(datagram, peer, now), packets, events)
                    session = self.sessions.get(peer)
                    continue
                try:
                    kind, packet = session.open(datagram, now)
                except RemoteProtocolError as exc:
                    events += self._drop(exc.reason, peer)
                    continue
                if (
                    kind is Kind.PACKET
                    and packet[12:16] == session.source_bytes
                    and packet[0] >> 4 == 4
                    and not self.isolate_clients
                ):
                    packets.append(packet)
                    counters.packets_to_tun += 1
                    counters.bytes_to_tun += len(packet)
                else:  # a keepalive, a Bye, another source: the general path
                    sort_events(self._deliver(session, kind, packet, now), packets, events)
                    session = self.sessions.get(peer)
            except Exception as exc:  # a bug costs this datagram, not the batch
                if on_bug is None:
                    raise
                on_bug(exc)
        return packets, events
