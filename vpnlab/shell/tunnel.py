"""TunSelected / SockSelected: the select loop that both daemons run (the notes' while loop).

The same loop carries ClientConnection's Hello exchange (before tun0 exists: the socket and the
timers only) and then the session. One turn of it (:meth:`SelectLoop.turn`):

    1. ask the core for its next deadline (a keepalive to send, or the liveness timeout)
    2. select() on tun0, the socket and the signal pipe, until that deadline
    3. TunSelected: read a packet from tun0, hand it to the core (it seals it), send the
       datagram to the peer; again, until BATCH packets were read (one after a pause)
    4. SockSelected: receive the datagrams waiting on the socket (up to BATCH; one after a
       pause, as in 3), hand them to
       the core in runs of one peer (the server opens the data before the Hellos), write the
       packets it opened to tun0
    5. deadline passed: let the core send its keepalive or declare the peer lost (and let a
       TCP transport close the connections that overstayed, ``transport.py``)
    6. send what the core queued; stop when the core is closed or a signal arrived

The loop works on two ends: a device (tun0: :class:`TunDevice`, one packet per read) and a
transport (the socket: ``transport.UdpTransport``, one datagram per system call). Together they
are the simple data path, :class:`SimpleDatapath`: every call into the core is a batch of one
packet from tun0, or of the datagrams one wake-up received. ``--datapath fast``
(``vpnlab/fast/datapath.py``) gives the same loop ends that move many packets per system call;
the daemons are handed the data path by the CLI and never import it.

This module moves bytes and nothing else: what a datagram means is decided in ``core/``.
Tests hand it one end of a ``socket.socketpair()`` in place of tun0. Init(PORT) is in
``transport.py``; CleanUp, the same for both daemons, is :func:`clean_up` below.
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.events import (
    Address,
    EndpointMoved,
    Event,
    HandshakeCompleted,
    PacketReceived,
    SessionClosed,
)
from vpnlab.core.reasons import STATE_CLOSED, Drop, DropLabel, State
from vpnlab.core.session import Counters
from vpnlab.shell.report import Reporter
from vpnlab.shell.routing import Routing
from vpnlab.shell.transport import Run, Transport, UdpTransport

BATCH = 64
"""Packets read from tun0 (a super-packet counts its segments: one read of 43 would otherwise
hold back the socket's side, the inner TCP's ACKs, for up to 64 x 43 packets, and the ACKs
then arrive in bursts that make BBR's window grow) and receives from the socket per wake-up
before looking at the other."""

IDLE_GAP_S = 0.001
"""A wake-up this long after the last one that found a packet reads one packet (or one
receive) from each end that is readable and goes back to select(), instead of reading on
until the kernel says there is no more (EAGAIN). The packet that ends a pause is nearly
always alone, and after a pause every system call is slow: on the 2-core VM of 2026-12-06 a
recvfrom that finds nothing took 2.8 us after 0.5 ms and 64 us after 50 ms (its exception
included), and the server's data socket and Hello lane each ended an idle echo request's
receive with one, before the packet reached tun0 (issue 29 item 1, idle ping). Busy, the loop
reads up to :data:`BATCH` as before: select() says at once if a second packet waits."""

SESSION_CHANGES = (HandshakeCompleted, SessionClosed, EndpointMoved)
"""Events that make the once-a-second work due at once (it still waits for
:data:`STATUS_QUIET_S`): a session opened, closed or moved is in the status file a pause
later, not up to a second later (``vpnlab lab start-vpn`` printed the server still
"listening" with no client after both clients said connected)."""

Periodic = Callable[[float], list[Event]]
"""Work the loop does on a timer or once a second: ``now`` in, the events it made out."""

STATUS_QUIET_S = 0.010
"""The once-a-second work (status file, the server's peers file and Hello timestamps: up to
a few ms, tens for a class) waits for a pause this long in packets, so that it never holds up
the second half of a round trip (an echo request just written to tun0 and its reply about to
be read): idle pings had spikes of 0.5-3.5 ms once a second without it (issue 29 item 1)."""
STATUS_LATE_S = 1.0
"""... but never waits longer than this after it fell due: a bulk transfer never pauses."""


def status_due(now: float, due_at: float, busy_at: float) -> bool:
    """Whether the once-a-second work runs now: it fell due at ``due_at`` and either the
    loop has seen no packet since ``busy_at`` for :data:`STATUS_QUIET_S`, or it is
    :data:`STATUS_LATE_S` late."""
    if now < due_at:
        return False
    return now - busy_at >= STATUS_QUIET_S or now >= due_at + STATUS_LATE_S


class Core(Protocol):
    """What the loop needs of ClientCore and ServerCore."""

    @property
    def state(self) -> State:
        """ClientCore's attribute, ServerCore's property: the loop only reads it."""
        ...

    counters: Counters
    clock_offset_s: float
    """Wall-clock minus monotonic time, for the handshake's timestamps (the loop re-measures)."""

    def receive_runs(
        self, runs: list[Run], now: float, on_bug: Callable[[Exception], None] | None = None
    ) -> tuple[list[bytes], list[Event]]:
        """SockSelected's one entry: a wake-up's datagrams (one per system call on the simple
        path, UDP GRO batches on the fast one), in runs of one peer."""
        ...

    def send_packets(self, packets: list[bytes], now: float) -> list[Event]:
        """TunSelected's one entry: one read's packets (one on the simple path, a
        super-packet's segments on the fast one)."""
        ...

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]: ...
    def next_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> list[Event]: ...
    def close(self, now: float) -> list[Event]: ...
    def describe(self, now: float) -> dict[str, object]: ...


class Device(Protocol):
    """tun0 (or tap0) as the loop sees it."""

    def fileno(self) -> int: ...
    def read(self, limit: int) -> list[bytes]:
        """Packets from the kernel, about ``limit`` at most (the simple path reads one per
        call, the fast path a super-packet's segments or a run of single packets); [] when
        none waits."""
        ...

    def write(self, packets: list[bytes]) -> None:
        """Write packets to the kernel, counting each refused write as a drop."""
        ...

    def describe(self) -> dict[str, object]:
        """What the status file shows of this device."""
        ...


class TunDevice:
    """CreateTunDev's tun0 for the simple path: one packet per read, one per write.

    Args:
        fd: tun0 (non-blocking), or one end of a datagram socket pair in tests.
        drops: the core's drop counters (a read or write the kernel refused).
    """

    def __init__(self, fd: int, drops: Counter[DropLabel]) -> None:
        self.fd = fd
        self.drops = drops

    def fileno(self) -> int:
        return self.fd

    def read(self, limit: int) -> list[bytes]:
        """One packet (``limit`` is at least one): the seed's one read per TunSelected."""
        try:
            return [os.read(self.fd, MAX_DATAGRAM)]
        except BlockingIOError:
            return []
        except OSError as exc:
            self.drops[Drop.TUN_READ.detail(exc.strerror)] += 1
            return []

    def write(self, packets: list[bytes]) -> None:
        for packet in packets:
            try:
                os.write(self.fd, packet)
            except OSError as exc:
                self.drops[Drop.TUN_WRITE.detail(exc.strerror)] += 1

    def describe(self) -> dict[str, object]:
        return {}


class Datapath(Protocol):
    """A data path: how tun0 is opened and read, and how the UDP socket moves datagrams."""

    name: str
    tun_flags: int
    """What this data path adds to IFF_TUN | IFF_NO_PI at CreateTunDev."""
    super_packet_bytes: int
    """The largest packet a tun0 read returns when beyond the MTU (TSO), else 0: what one
    entry of tun0's ring can hold (``queues.ring_entries``)."""

    def __init__(self, reporter: Reporter) -> None: ...
    def device(self, fd: int, drops: Counter[DropLabel]) -> Device: ...
    def udp(self, sock: socket.socket, drops: Counter[DropLabel]) -> Transport: ...


class SimpleDatapath:
    """``--datapath simple``: (:class:`TunDevice`, ``transport.UdpTransport``)."""

    name = "simple"
    tun_flags = 0
    super_packet_bytes = 0

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def device(self, fd: int, drops: Counter[DropLabel]) -> TunDevice:
        self.reporter.log("datapath simple: one packet per system call")
        return TunDevice(fd, drops)

    def udp(self, sock: socket.socket, drops: Counter[DropLabel]) -> UdpTransport:
        return UdpTransport(sock, drops)


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


class SelectLoop:
    """The select loop, moving packets between a device (tun0) and a transport (the socket)
    through a core.

    Args:
        core: ClientCore or ServerCore.
        device: tun0, or None while ClientConnection waits for the Welcome (no tun0 yet).
        transport: the socket of Init(PORT), UDP or TCP.
        reporter: log and status file.
        signals: the signal pipe; the loop ends when it fires.
        on_event: called with every event that is not a packet (a handshake, a closed
            session, a drop), after the reporter has logged it.
        every_second: called with ``now`` once a second, with the status report (the server
            reads its peers file again there).
        on_events: called once per batch (a wake-up's datagrams, a timer) with all its events
            that are not packets, after ``on_event``: work that a batch needs once, not once
            per event (the server's key export and Hello timestamps).
    """

    def __init__(
        self,
        core: Core,
        device: Device | None,
        transport: Transport,
        reporter: Reporter,
        signals: SignalPipe,
        on_event: Callable[[Event], None] | None = None,
        *,
        every_second: Periodic | None = None,
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self.core = core
        self.device = device
        self.transport = transport
        self.reporter = reporter
        self.signals = signals
        self.on_event = on_event
        self.every_second = every_second
        self.on_events = on_events
        self.poll = select.epoll()
        """select() of the notes, as Linux's epoll: ``selectors.DefaultSelector`` is the same
        epoll behind a layer of Python objects, about 1 us a wake-up (issue 29 item 2)."""
        self._selected: dict[int, Callable[[float], None]] = {}
        self._device_fd = -1 if device is None else device.fileno()
        if device is not None:
            self.register(device.fileno(), self.tun_selected)
        self.register(transport.fileno(), self.sock_selected)
        self.register(signals.reader.fileno(), self._drain_signals)
        self._status_at = 0.0
        self._busy_at = 0.0  # the last wake-up that found a packet (see status_due)
        self._batch = BATCH  # this wake-up's reads from each end (see IDLE_GAP_S)

    def register(self, fd: int, selected: Callable[[float], None]) -> None:
        """Call ``selected(now)`` whenever ``fd`` is readable."""
        self.poll.register(fd, select.EPOLLIN)
        self._selected[fd] = selected

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (the client's tun0 once the kernel is the data plane)."""
        self.poll.unregister(fd)
        del self._selected[fd]

    def run(self, until: State | None = None) -> None:
        """Loop until the core closes (peer lost, Bye), a signal asks us to stop, or the core
        has left state ``until`` (ClientConnection: ``State.CONNECTING``)."""
        self.send_queued()  # what the core queued before the loop (ClientConnection's Hello)
        while (
            self.core.state is not STATE_CLOSED
            and self.signals.received is None
            and (until is None or self.core.state is until)
        ):
            self.turn(report=until is None)  # ClientConnection reports itself
        self.send_queued()
        self.poll.close()

    def turn(self, report: bool = True) -> None:
        """One turn of the loop: select until the core's deadline, TunSelected or
        SockSelected for what is readable, the core's timers, then send what it queued."""
        deadline = self.core.next_timer()
        now = time.monotonic()
        timeout = 1.0 if deadline is None else min(max(0.0, deadline - now), 1.0)
        if report:  # wake for the once-a-second work too, after its pause in packets
            status_at = max(self._status_at, self._busy_at + STATUS_QUIET_S)
            timeout = min(timeout, max(0.0, status_at - now))
        ready = self.poll.poll(math.ceil(timeout * 1e3) * 1e-3)  # epoll waits whole ms
        if ready:
            now = time.monotonic()  # one wake-up, one ``now`` for all it found readable
            self._batch = BATCH if now - self._busy_at < IDLE_GAP_S else 1
            self._busy_at = now
            selected = self._selected
            if len(ready) > 1:
                ready.sort(key=self._drain_first)
            for fd, _ in ready:
                selected[fd](now)
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            self.periodic(self.core.handle_timer, now)
        self.transport.handle_timer(now)
        if report and status_due(now, self._status_at, self._busy_at):
            self.core.clock_offset_s = time.time() - time.monotonic()  # the wall clock may step
            if self.every_second is not None:
                self.periodic(self.every_second, now)
            self.report_status(now)
            self._status_at = now + 1.0
        self.send_queued()

    def _drain_first(self, ready: tuple[int, int]) -> int:
        """TunSelected before SockSelected when both are readable: drain tun0's ring before
        writing more into it. SockSelected writes up to BATCH packets to tun0, and the kernel
        answers each (an echo reply, an ACK) into the ring at once; epoll lists the socket
        first (it stayed readable) so, socket first, the ring held a batch more than it had to
        (a class of 250 pinging at once overflowed a ring of 128, ``bench --flood``)."""
        return 0 if ready[0] == self._device_fd else 1

    def tun_selected(self, now: float) -> None:
        """TunSelected: read a packet from tun0, encapsulate it, send it to the peer; again,
        until :data:`BATCH` packets were read (one after a pause, :data:`IDLE_GAP_S`)."""
        assert self.device is not None
        read = 0
        while read < self._batch:
            packets = self.device.read(self._batch - read)
            if not packets:
                return
            read += len(packets)
            self.seal(packets, now)
            self.send_queued()

    def sock_selected(self, now: float) -> None:
        """SockSelected: receive datagrams from the socket, open them, write to tun0."""
        try:
            runs = self.transport.receive(self._batch)
        except Exception as exc:  # a bug in a transport's parsing (TCP): this wake-up only
            self.count_bug(exc)
            return
        self.open(runs, now)

    def seal(self, packets: list[bytes], now: float) -> None:
        """The packets of one read from tun0 to the core (it clamps their TCP SYNs' MSS and
        seals them)."""
        try:
            events = self.core.send_packets(packets, now)
            if events:  # nearly always none: a packet sealed is no event
                self.dispatch(events)
        except Exception as exc:  # a bug costs the packets read together, never the daemon
            self.count_bug(exc)

    def open(self, runs: list[Run], now: float) -> None:
        """A wake-up's datagrams (in runs of one peer) to the core; the packets it opened to
        tun0."""
        try:
            packets, events = self.core.receive_runs(runs, now, self.count_bug)
            if packets and self.device is not None:
                self.device.write(packets)
            if events:
                self.dispatch(events)
        except Exception as exc:  # a bug (in on_event, say) never ends the daemon
            self.count_bug(exc)

    def send_queued(self) -> None:
        """Send every datagram the core queued; a refused send is counted, not raised."""
        queued = self.core.datagrams_to_send()
        if queued:
            self.transport.send(queued)

    def periodic(self, task: Periodic, now: float) -> None:
        """A timer or the once-a-second work: a bug in it is counted and logged, and the
        loop goes on (it runs again next time), as for a bad packet."""
        try:
            self.dispatch(task(now))
        except Exception as exc:
            self.count_bug(exc)

    def count_bug(self, exc: Exception) -> None:
        """A bug (ours, or a parser's) met one packet: count it as a drop, log the first of
        each type, and carry on; no packet can end the loop."""
        key = Drop.BUG.detail(type(exc).__name__)
        drops = self.core.counters.drops
        drops[key] += 1
        if drops[key] == 1:
            self.reporter.log(f"{key} ({exc!r}): packet dropped; later ones are only counted")

    def dispatch(self, events: list[Event]) -> None:
        """Opened packets to tun0; a session's start and end to the transport; every other
        event to the log."""
        packets = [event.packet for event in events if type(event) is PacketReceived]
        if packets and self.device is not None:
            self.device.write(packets)
        others = [event for event in events if type(event) is not PacketReceived]
        for event in others:
            if type(event) is HandshakeCompleted:
                self.transport.session_opened(event.peer)
            elif type(event) is SessionClosed:
                self.transport.session_closed(event.peer)
            elif type(event) is EndpointMoved:  # roaming: the session is at its new address
                self.transport.session_closed(event.old)
                self.transport.session_opened(event.peer)
            if type(event) in SESSION_CHANGES:  # the status file says so at the next pause
                self._status_at = min(self._status_at, time.monotonic())
            self.reporter.event(event)
            if self.on_event is not None:
                self.on_event(event)
        if others and self.on_events is not None:
            self.on_events(others)

    def report_status(self, now: float) -> None:
        self.reporter.update(**self.core.describe(now))
        if self.device is not None:
            self.reporter.update(**self.device.describe())
        self.reporter.write_status(force=True)

    def _drain_signals(self, now: float) -> None:
        try:
            while self.signals.reader.recv(64):
                pass
        except BlockingIOError:
            pass


def clean_up(
    core: Core,
    transport: Transport | None,
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
    if transport is not None:
        queued = core.datagrams_to_send()
        if queued:
            transport.send(queued)
        transport.close()
    if routing is not None:
        routing.restore()
    if tun_fd is not None:
        os.close(tun_fd)
    reporter.update(**{k: v for k, v in core.describe(now).items() if k != "state"})
    reporter.state(State.CLOSED, summary)
    reporter.log(f"counters {core.counters.as_dict()}")
