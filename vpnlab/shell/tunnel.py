"""TunSelected / SockSelected: the select loop that both daemons run (the notes' while loop).

The same loop carries ClientConnection's Hello exchange (before tun0 exists: the socket and the
timers only) and then the session:

    1. ask the core for its next deadline (a keepalive to send, or the liveness timeout)
    2. select() on tun0, the UDP socket and the signal pipe, until that deadline
    3. TunSelected: read every packet waiting on tun0, hand each to the core (it seals them)
    4. SockSelected: receive every datagram waiting on the socket, hand each to the core,
       write the packets it opened to tun0
    5. deadline passed: let the core send its keepalive or declare the peer lost (and let a
       TCP transport close the connections that overstayed, ``transport.py``)
    6. send what the core queued; stop when the core is closed or a signal arrived

This module moves bytes and nothing else: what a datagram means is decided in ``core/``.
Tests hand it one end of a ``socket.socketpair()`` in place of tun0. ``--datapath fast`` is
a subclass (``vpnlab/fast/loop.py``) that overrides its four I/O methods; the daemons are handed
the class by the CLI (``ClientOptions.datapath``) and never import it. Init(PORT) is in
``transport.py``; CleanUp, the same for both daemons, is :func:`clean_up` below.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.events import Address, Event, HandshakeCompleted, PacketReceived, SessionClosed
from vpnlab.core.packet import clamp_mss
from vpnlab.core.session import Counters, State
from vpnlab.shell.report import Reporter
from vpnlab.shell.routing import Routing

BATCH = 64
"""Packets drained per wake-up from each file descriptor before looking at the other."""
SOCK_HOOKS = {HandshakeCompleted: "session_opened", SessionClosed: "session_closed"}
"""What a TCP server transport is told (with the peer), so a connection lives as its session."""


class Core(Protocol):
    """What the loop needs of ClientCore and ServerCore."""

    state: State
    counters: Counters
    clock_offset_s: float
    """Wall-clock minus monotonic time, for the handshake's timestamps (the loop re-measures)."""

    def receive_datagrams(
        self,
        datagrams: list[bytes],
        peer: Address,
        now: float,
        on_bug: Callable[[Exception], None] | None = None,
    ) -> tuple[list[bytes], list[Event]]: ...
    def send_packets(self, packets: list[bytes], now: float) -> list[Event]: ...
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]: ...
    def next_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> list[Event]: ...
    def close(self, now: float) -> list[Event]: ...
    def describe(self, now: float) -> dict[str, object]: ...


def send_queued(core: Core, sock: socket.socket) -> None:
    """Send every datagram the core queued; a refused send is counted, not raised."""
    for datagram, peer in core.datagrams_to_send():
        try:
            sock.sendto(datagram, peer)
        except OSError as exc:
            core.counters.drops[f"send: {exc.strerror}"] += 1


class SignalPipe:
    """SIGINT/SIGTERM wake the select loop through a socket pair instead of raising."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.received: int | None = None
        self._old = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        self._old_fd = signal.set_wakeup_fd(self.writer.fileno())

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self.reader.close()
        self.writer.close()


class Tunnel:
    """``--datapath simple``: the select loop, moving packets between tun0 and the socket
    through a core, one packet per system call.

    Args:
        core: ClientCore or ServerCore.
        tun_fd: tun0 (non-blocking), one end of a socket pair in tests, or None while
            ClientConnection waits for the Welcome (tun0 does not exist yet).
        sock: the UDP socket from Init (non-blocking), or a TCP transport that looks like one;
            a transport's ``handle_timer(now)`` is called every round, its ``session_opened``
            and ``session_closed`` (:data:`SOCK_HOOKS`) with a session's peer.
        reporter: log and status file.
        signals: the signal pipe; the loop ends when it fires.
        on_event: called with every event that is not a packet (a handshake, a closed
            session, a drop), after the reporter has logged it.
        mss_clamp: lower the MSS option of TCP SYNs read from tun0 to this (None: leave it).
        every_second: called with ``now`` once a second, with the status report (the server
            reads its peers file again there).
    """

    name = "simple"
    tun_flags = 0
    """What this data path adds to IFF_TUN | IFF_NO_PI at CreateTunDev."""
    read_bytes = MAX_DATAGRAM
    """The most one read from tun0 returns."""

    def __init__(
        self,
        core: Core,
        tun_fd: int | None,
        sock: socket.socket,
        reporter: Reporter,
        signals: SignalPipe,
        on_event: Callable[[Event], None] | None = None,
        *,
        mss_clamp: int | None = None,
        every_second: Callable[[float], list[Event]] | None = None,
    ) -> None:
        self.core = core
        self.mss_clamp = mss_clamp
        self.every_second = every_second
        self.on_event = on_event
        self.tun_fd = tun_fd
        self.sock = sock
        self.reporter = reporter
        self.signals = signals
        self.selector = selectors.DefaultSelector()
        if tun_fd is not None:
            self.selector.register(tun_fd, selectors.EVENT_READ, self.tun_selected)
        self.selector.register(sock, selectors.EVENT_READ, self.sock_selected)
        self.sock_timer: Callable[[float], None] | None = getattr(sock, "handle_timer", None)
        self.selector.register(signals.reader, selectors.EVENT_READ, self._drain_signals)
        self._status_at = 0.0

    def run(self, until: State | None = None) -> None:
        """Loop until the core closes (peer lost, Bye), a signal asks us to stop, or the core
        has left state ``until`` (ClientConnection: ``State.CONNECTING``)."""
        core = self.core
        self.flush()  # what the core queued before the loop (ClientConnection's first Hello)
        while (
            core.state is not State.CLOSED
            and self.signals.received is None
            and (until is None or core.state is until)
        ):
            deadline = core.next_timer()
            now = time.monotonic()
            timeout = None if deadline is None else max(0.0, deadline - now)
            for key, _ in self.selector.select(min(timeout, 1.0) if timeout is not None else 1.0):
                key.data(time.monotonic())
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.periodic(core.handle_timer, now)
            self.flush()
            if self.sock_timer is not None:
                self.sock_timer(now)
            if until is None and now >= self._status_at:  # ClientConnection reports itself
                core.clock_offset_s = time.time() - time.monotonic()  # the wall clock may step
                if self.every_second is not None:
                    self.periodic(self.every_second, now)
                    self.flush()
                self.report_status(now)
                self._status_at = now + 1.0
        self.flush()
        self.selector.close()

    def tun_selected(self, now: float) -> None:
        """TunSelected: read packets from tun0, hand each read to :meth:`tun_read`."""
        for _ in range(BATCH):
            try:
                data = os.read(self.tun_fd, self.read_bytes)
            except BlockingIOError:
                return
            except OSError as exc:
                self.core.counters.drops[f"tun read: {exc.strerror}"] += 1
                return
            try:
                self.tun_read(data, now)
            except Exception as exc:  # a bug costs this packet, never the daemon
                self.count_bug(exc)

    def tun_read(self, packet: bytes, now: float) -> None:
        """One packet from tun0: its MSS clamped (TCP SYN), then to the core to seal."""
        if self.mss_clamp:
            packet = clamp_mss(packet, self.mss_clamp)
        self.dispatch(self.core.send_packets([packet], now))

    def sock_selected(self, now: float) -> None:
        """SockSelected: receive datagrams, hand them to the core, write packets to tun0."""
        for _ in range(BATCH):
            try:
                datagram, peer = self.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.core.counters.drops[f"socket: {exc.strerror}"] += 1
                continue
            except Exception as exc:  # a bug in a transport's parsing (TCP): this wake-up only
                self.count_bug(exc)
                return
            try:
                packets, events = self.core.receive_datagrams([datagram], peer[:2], now)
                self.dispatch([*events, *map(PacketReceived, packets)])
            except Exception as exc:  # a bug costs this datagram, never the daemon
                self.count_bug(exc)

    def periodic(self, task: Callable[[float], list[Event]], now: float) -> None:
        """A timer or the once-a-second work: a bug in it is counted and logged, and the
        loop goes on (it runs again next time), as for a bad packet."""
        try:
            self.dispatch(task(now))
        except Exception as exc:
            self.count_bug(exc)

    def count_bug(self, exc: Exception) -> None:
        """A bug (ours, or a parser's) met one packet: count it as a drop, log the first of
        each type, and carry on; no packet can end the loop."""
        key = f"bug: {type(exc).__name__}"
        drops = self.core.counters.drops
        drops[key] += 1
        if drops[key] == 1:
            self.reporter.log(f"{key} ({exc!r}): packet dropped; later ones are only counted")

    def dispatch(self, events: list[Event]) -> None:
        """Write opened packets to tun0; everything else goes to the log."""
        for event in events:
            if type(event) is PacketReceived:
                try:
                    os.write(self.tun_fd, event.packet)
                except OSError as exc:
                    self.core.counters.drops[f"tun write: {exc.strerror}"] += 1
            else:
                hook = SOCK_HOOKS.get(type(event))
                if hook is not None and hasattr(self.sock, hook):
                    getattr(self.sock, hook)(event.peer)
                self.reporter.event(event)
                if self.on_event is not None:
                    self.on_event(event)

    def flush(self) -> None:
        send_queued(self.core, self.sock)

    def report_status(self, now: float) -> None:
        self.reporter.update(**self.core.describe(now))
        self.reporter.write_status(force=True)

    def _drain_signals(self, now: float) -> None:
        try:
            while self.signals.reader.recv(64):
                pass
        except BlockingIOError:
            pass


def clean_up(
    core: Core,
    sock: socket.socket | None,
    tun_fd: int | None,
    routing: Routing | None,
    reporter: Reporter,
    summary: str,
) -> None:
    """CleanUp: Bye to the peer(s), routes (and NAT) restored, tun0 and the socket closed.

    Both daemons run it in ``finally``, whatever stopped them; each step copes with the
    steps before it never having run (``None``).
    """
    now = time.monotonic()
    for event in core.close(now):
        reporter.event(event)
    if sock is not None:
        send_queued(core, sock)
        sock.close()
    if routing is not None:
        routing.restore()
    if tun_fd is not None:
        os.close(tun_fd)
    reporter.update(**{k: v for k, v in core.describe(now).items() if k != "state"})
    reporter.state("closed", summary)
    reporter.log(f"counters {core.counters.as_dict()}")
