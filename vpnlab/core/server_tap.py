"""ServerConnection in TAP mode (``--mode tap``): the server's tap0 and every client form one
Ethernet segment, switched by destination MAC (``bridge.Switch``).

A part of :class:`~vpnlab.core.server_core.ServerCore` kept in its own file, as wireguard-go
keeps a device's send and receive paths apart: the layer-3 core never needs these methods.
"""

from __future__ import annotations

from vpnlab.core.bridge import LOCAL, Switch, claimed_sender, frame_macs, is_group
from vpnlab.core.events import Address, Event, PacketReceived
from vpnlab.core.packet import ETHERNET_HEADER_BYTES
from vpnlab.core.session import CoreBase, Counters, Session


class TapSwitching(CoreBase):
    """The TAP-mode methods of ServerCore, which provides the attributes named below and
    ``_speaks_for`` (a client may claim its tunnel address and its LAN's)."""

    switch: Switch | None
    sessions: dict[Address, Session]
    counters: Counters
    isolate_clients: bool

    def set_local_mac(self, mac: bytes) -> None:
        """Ifconfig, TAP mode: the MAC of the server's tap0, which no client may claim."""
        if self.switch is not None:
            self.switch.add_static(mac, LOCAL)

    def _switch_frame(self, session: Session, frame: bytes, now: float) -> list[Event]:
        """SockSelected, TAP mode: learn the frame's source MAC, then forward it by its
        destination MAC: to tap0 (a PacketReceived), to other clients (sealed), or both."""
        assert self.switch is not None
        peer = session.peer
        claim = claimed_sender(frame)  # ARP's sender or IPv4's source: its own address only
        if claim is not None and not self._speaks_for(session, claim[1]):
            return self._drop(claim[0], peer)
        destination, source = frame_macs(frame)
        if not self.switch.learn(source, peer, now):
            reason = "bad source mac" if is_group(source) else "spoofed source mac"
            return self._drop(reason, peer)
        if not self.switch.flood_allowed(destination, peer, now):
            return self._drop("flood rate limit", peer)
        events: list[Event] = []
        for port in self.switch.forward(destination, peer, now):
            if port == LOCAL:
                self.counters.packets_to_tun += 1
                self.counters.bytes_to_tun += len(frame)
                events.append(PacketReceived(frame))
            elif self.isolate_clients:
                if not is_group(destination):
                    events += self._drop("client to client denied", peer)
            else:
                events += self._seal(self.sessions[port], frame, now, "tap")
        return events

    def _switch_from_tap(self, frame: bytes, now: float) -> list[Event]:
        """TunSelected, TAP mode: switch one frame from tap0 by its destination MAC (flooded
        to every client if unknown)."""
        assert self.switch is not None
        if len(frame) < ETHERNET_HEADER_BYTES:
            return self._drop("tap: runt frame")
        destination, source = frame_macs(frame)
        self.switch.learn(source, LOCAL, now, take_over=True)
        events: list[Event] = []
        for port in self.switch.forward(destination, LOCAL, now):
            events += self._seal(self.sessions[port], frame, now, "tap")
        return events
