"""Init(PORT): the UDP socket of the notes, and the counter-example: the same datagrams over
one TCP connection per client; both behind one small interface, :class:`Transport`.

The select loop (``tunnel.py``) sees a transport as a file descriptor to select on, a batch of
datagrams received (grouped in runs from one peer), a batch sent, and a close; TCP adds three
hooks (a timer, and a session opened or closed for a peer) that UDP does not need.

The design notes choose UDP "to avoid TCP meltdown": when the tunnel is itself TCP, a lost
outer segment stalls every inner packet behind it until the outer TCP has retransmitted it,
while the inner TCP (which lost nothing) sees its round-trip time jump, times out and
retransmits too: two control loops fighting over one loss. ``--transport tcp`` builds exactly
that tunnel so the experiment (``vpnlab.meltdown``, notebook 07) can measure it. Do not use it
for anything else.

    stream:  | length (2, big endian) | datagram ... | length (2) | datagram ... | ...

Each frame carries one datagram exactly as UDP would (Hello, Welcome, ESP, keepalive, Bye), so
the sans-IO cores, the handshake and the 2.5 s / 6 s timeouts are unchanged. The framing is
pure (``wire/framing.py``); :class:`TcpClientTransport` and :class:`TcpServerTransport` are
the I/O shell, over IPv4 or IPv6. Their ``fileno`` is an epoll descriptor holding the listener,
every connection and an eventfd readable while frames read wait to be taken.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import time
from collections import Counter, deque
from typing import Protocol

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.errors import LocalProtocolError, SetupError
from vpnlab.core.events import Address
from vpnlab.core.reasons import Drop, DropLabel
from vpnlab.shell.queues import QUEUE_BYTES, SESSION_ROOM_BYTES
from vpnlab.wire import handshake, identity
from vpnlab.wire.framing import FrameDecoder, encode_frame

TRANSPORTS = ("udp", "tcp")
DEFAULT_TRANSPORT = "udp"
MAX_PENDING_BYTES = 512 * 1024
"""Frames queued for a connection whose socket buffer is full; beyond this we drop (as UDP)."""
MAX_CONNECTIONS = 256
"""Connections the server keeps; when full, the oldest without a session makes room for a new
one (counted), and only if every one has a session is the new one closed at once."""
FIRST_FRAME_S = 5.0
"""A connection that has sent no complete frame this long after accept() is closed."""
IDLE_TIMEOUT_S = 30.0
"""A connection without a frame for this long is closed (a session sends one every 2 s)."""
SWEEP_S = 0.5
"""How often the server looks for connections to close (``handle_timer``)."""
RECV_BYTES = 65536
"""Bytes asked of one TCP connection per read."""
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # linux/socket.h: as root, past net.core.*mem_max
Run = tuple[Address, list[bytes]]
"""Datagrams received in a row from one peer: the cores open them in one call."""


class Transport(Protocol):
    """Init(PORT)'s socket as the select loop sees it (``tunnel.SelectLoop``)."""

    def fileno(self) -> int:
        """What the loop selects on: readable when :meth:`receive` has datagrams."""
        ...

    def receive(self, limit: int) -> list[Run]:
        """SockSelected: up to ``limit`` receives' datagrams, in order, grouped in runs of
        one peer; [] when none waits."""
        ...

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send datagrams, each to its peer; a refused one is counted as a drop, never raised."""
        ...

    def handle_timer(self, now: float) -> None:
        """Called every turn of the loop (TCP closes the connections that overstayed)."""
        ...

    def session_opened(self, peer: Address) -> None:
        """The core made a session for ``peer`` (or moved one there: roaming)."""
        ...

    def session_closed(self, peer: Address) -> None:
        """The core ended ``peer``'s session (or moved it away: roaming)."""
        ...

    def close(self) -> None:
        """CleanUp: close the socket(s)."""
        ...


def add_run(runs: list[Run], peer: Address, datagrams: list[bytes]) -> None:
    """Append datagrams from ``peer``: to the last run if it is that peer's, else a new run."""
    if runs and runs[-1][0] == peer:
        runs[-1][1].extend(datagrams)
    else:
        runs.append((peer, datagrams))


def family_of(address: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon (``::`` takes IPv4 peers too), else IPv4."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def init_socket(
    address: str, port: int, buffer_bytes: int = QUEUE_BYTES, *, reuse_port: bool = False
) -> socket.socket:
    """Init(PORT): a UDP socket (SOCK_DGRAM) bound to ``address``:``port``, non-blocking.

    Its receive and send buffers are ``buffer_bytes`` (``--queue-bytes``, ``queues.py``): a
    full receive buffer drops, which bounds the datagrams waiting for this daemon.

    UDP needs no listen() or accept(): datagrams from any peer simply arrive (see the notes).
    An IPv6 address makes the socket, and the outer packets, IPv6 (:func:`family_of`).
    ``reuse_port``: SO_REUSEPORT, so that the server's Hello lane can share the port.

    Raises:
        SetupError: the address is not ours, or the port is taken.
    """
    sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
    for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
        with contextlib.suppress(OSError):  # not root: the kernel's default buffers
            sock.setsockopt(socket.SOL_SOCKET, option, buffer_bytes)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise SetupError(f"cannot bind UDP {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
HELLO_TYPES = (handshake.HELLO_TYPE, identity.HELLO_TYPE)
"""The message types after the non-ESP marker that the server's Hello lane takes."""


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)  # struct sock_filter


HELLO_STEERING = b"".join(
    (
        _bpf(0x80, 0, 0, 0),  # A = the UDP payload's length
        _bpf(0x35, 0, 5, 5),  # A >= 5, or: the data socket
        _bpf(0x20, 0, 0, 0),  # A = its first 4 bytes
        _bpf(0x15, 0, 3, 0),  # the non-ESP marker (zero), or: the data socket
        _bpf(0x30, 0, 0, 4),  # A = its fifth byte, the message type
        _bpf(0x15, 2, 0, HELLO_TYPES[0]),  # a PSK Hello: the lane
        _bpf(0x15, 1, 0, HELLO_TYPES[1]),  # an identity Hello: the lane
        _bpf(0x06, 0, 0, 0),  # return 0: the data socket (the group's first)
        _bpf(0x06, 0, 0, 1),  # return 1: the Hello lane (its second)
    )
)
"""A classic BPF program the kernel runs on each datagram for the port's SO_REUSEPORT group
(its payload at offset 0): the index of the socket that gets it."""


def hello_lane(sock: socket.socket, address: str, buffer_bytes: int) -> socket.socket:
    """The server's Hello lane: a second UDP socket on ``sock``'s port (both SO_REUSEPORT) to
    which the kernel steers every Hello (:data:`HELLO_STEERING`), so that a flood of Hellos
    queues there and never in front of the tunnel's datagrams (issue 27). Its buffers are the
    data socket's (``--queue-bytes``): a full lane drops Hellos, and a client says Hello again.

    Raises:
        SetupError: the kernel refused the program or the second socket.
    """
    program = ctypes.create_string_buffer(HELLO_STEERING)
    fprog = struct.pack("HL", len(HELLO_STEERING) // 8, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise SetupError(f"cannot steer Hellos to a lane of their own: {exc.strerror}") from None
    return init_socket(address, sock.getsockname()[1], buffer_bytes, reuse_port=True)


class UdpTransport:
    """Init(PORT)'s UDP socket for the simple data path: one datagram per system call.

    The server adds a Hello lane (:func:`hello_lane`): then ``fileno`` is an epoll
    descriptor holding both sockets, and each ``receive`` takes the data socket's datagrams
    first, then at most as many from the lane.

    Args:
        sock: the socket of :func:`init_socket`.
        drops: the core's drop counters (a send the kernel refused, an ICMP error).
    """

    def __init__(self, sock: socket.socket, drops: Counter[DropLabel]) -> None:
        self.sock = sock
        self.drops = drops
        self.hellos: socket.socket | None = None
        self._both: select.epoll | None = None
        self._peers: set[Address] = set()  # with a session: each adds SESSION_ROOM_BYTES
        # the budget init_socket asked for (the kernel reports it doubled)
        self._buffer_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2

    def add_hello_lane(self, lane: socket.socket) -> None:
        self.hellos = lane
        self._both = select.epoll()
        self._both.register(self.sock, select.EPOLLIN)
        self._both.register(lane, select.EPOLLIN)

    def fileno(self) -> int:
        return self._both.fileno() if self._both is not None else self.sock.fileno()

    def receive(self, limit: int) -> list[Run]:
        runs: list[Run] = []
        self.receive_hellos(runs, limit, self._receive_from(self.sock, runs, limit))
        return runs

    def receive_hellos(self, runs: list[Run], limit: int, data: int) -> None:
        """Up to ``limit`` datagrams from the Hello lane, if there is one, after the ``data``
        datagrams received from the data socket. A receive of one (the loop after a pause)
        that found a datagram leaves the lane to the next turn: select() is still readable
        then if a Hello waits, and the datagram's way to tun0 has no empty read in front."""
        if self.hellos is not None and (limit > 1 or not data):
            self._receive_from(self.hellos, runs, limit)

    def _receive_from(self, sock: socket.socket, runs: list[Run], limit: int) -> int:
        """Up to ``limit`` datagrams from ``sock`` into ``runs``; how many there were."""
        received = 0
        for _ in range(limit):
            try:
                datagram, sender = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.drops[Drop.SOCKET.detail(exc.strerror)] += 1
                continue
            add_run(runs, sender[:2], [datagram])
            received += 1
        return received

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        for datagram, peer in datagrams:
            try:
                self.sock.sendto(datagram, peer)
            except OSError as exc:
                self.drops[Drop.SEND.detail(exc.strerror)] += 1

    def handle_timer(self, now: float) -> None:
        """UDP has no connections to sweep."""

    def session_opened(self, peer: Address) -> None:
        """The receive buffer grows by ``SESSION_ROOM_BYTES`` (a rekey of ``peer``: unchanged)."""
        if peer not in self._peers:
            self._peers.add(peer)
            self._fit_receive_buffer()

    def session_closed(self, peer: Address) -> None:
        """The receive buffer gives back ``peer``'s room."""
        if peer in self._peers:
            self._peers.remove(peer)
            self._fit_receive_buffer()

    def _fit_receive_buffer(self) -> None:
        """SO_RCVBUF: the budget of :func:`init_socket` and room for one small datagram per
        session (not root: the kernel's default, as there)."""
        room = self._buffer_bytes + SESSION_ROOM_BYTES * len(self._peers)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, room)

    def close(self) -> None:
        self.sock.close()
        if self.hellos is not None and self._both is not None:
            self.hellos.close()
            self._both.close()


class _Connection:
    """One TCP connection: its peer, its decoder and the frames not yet sent."""

    def __init__(self, sock: socket.socket, peer: Address) -> None:
        self.sock = sock
        self.peer = peer
        self.decoder = FrameDecoder()
        self.out = bytearray()
        self.connecting = False
        self.opened = time.monotonic()
        self.last_frame: float | None = None
        self.session = False
        """The core made a session for its peer (``session_opened``)."""
        self.ended = False
        """Its session ended: closed once what was queued for it has been sent."""


class TcpTransport:
    """What both ends of the TCP transport share: the epoll set, the inbox of frames read,
    flushing, closing. A :class:`Transport`; the hooks it does not need do nothing."""

    def __init__(self, drops: Counter[DropLabel] | None = None) -> None:
        self.drops: Counter[DropLabel] = drops if drops is not None else Counter()
        self._poll = select.epoll()
        self._ready = os.eventfd(0, os.EFD_NONBLOCK)
        self._poll.register(self._ready, select.EPOLLIN)
        self._conns: dict[int, _Connection] = {}
        self._inbox: deque[tuple[bytes, Address]] = deque()

    # --- the Transport interface ---------------------------------------------------------------
    def fileno(self) -> int:
        return self._poll.fileno()

    def receive(self, limit: int) -> list[Run]:
        """Up to ``limit`` frames from any connection, as runs of one peer."""
        if not self._inbox:
            self._pump()
        runs: list[Run] = []
        while self._inbox and limit > 0:
            frame, peer = self._inbox.popleft()
            add_run(runs, peer, [frame])
            limit -= 1
        self._signal(bool(self._inbox))
        return runs

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Queue one frame per datagram to its peer and send what the sockets take now; no
        connection to the peer (ENOTCONN) or a full queue (ENOBUFS) is a drop, as a refused
        UDP send would be."""
        for datagram, peer in datagrams:
            failed = self._queue(datagram, peer)
            if failed:
                self.drops[Drop.SEND.detail(os.strerror(failed))] += 1

    def _queue(self, datagram: bytes, peer: Address) -> int:
        """One frame to ``peer``'s connection; returns 0, or the errno that refused it."""
        conn = self._connection_for(peer)
        if conn is None:
            return errno.ENOTCONN
        if len(conn.out) > MAX_PENDING_BYTES:
            return errno.ENOBUFS
        try:
            conn.out += encode_frame(datagram)
        except LocalProtocolError:
            return errno.EMSGSIZE
        if not conn.connecting:
            self._flush(conn)
        return 0

    def handle_timer(self, now: float) -> None:
        """Nothing to sweep (the server's transport closes what overstayed)."""

    def session_opened(self, peer: Address) -> None:
        """Only the server's transport follows sessions."""

    def session_closed(self, peer: Address) -> None:
        """Only the server's transport follows sessions."""

    def close(self) -> None:
        for conn in list(self._conns.values()):
            if conn.out and not conn.connecting:
                self._flush(conn)
            self._close(conn, None)
        self._poll.close()
        os.close(self._ready)

    # --- the shell ------------------------------------------------------------------------------
    def _connection_for(self, peer: Address) -> _Connection | None:
        raise NotImplementedError

    def _on_listener(self) -> None:
        """Readable listening socket (server only)."""

    def _pump(self) -> None:
        """Accept, read and flush whatever epoll says is ready, without blocking."""
        for fd, mask in self._poll.poll(0):
            if fd == self._ready:
                continue
            conn = self._conns.get(fd)
            if conn is None:
                self._on_listener()
                continue
            if conn.connecting and mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._close(conn, Drop.TCP_CONNECT.detail(os.strerror(err)))
                    continue
                conn.connecting = False
            if mask & select.EPOLLOUT:
                self._flush(conn)
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self._read(conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(conn, Drop.TCP.detail(exc.strerror))
            return
        if not data:
            self._close(conn, Drop.TCP_CLOSED_BY_PEER)
            return
        try:
            frames = conn.decoder.feed(data)
        except Exception as exc:  # a bug in the framing costs this connection, not the daemon
            self._close(conn, Drop.BUG.detail(type(exc).__name__))
            return
        for frame in frames:
            self._inbox.append((frame, conn.peer))
        if frames:
            conn.last_frame = time.monotonic()
        if conn.decoder.error:
            self._close(conn, conn.decoder.error)

    def _flush(self, conn: _Connection) -> None:
        if not conn.out:
            self._watch(conn)
            return
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._close(conn, Drop.TCP.detail(exc.strerror))
            return
        del conn.out[:sent]
        self._watch(conn)

    def _watch(self, conn: _Connection) -> None:
        mask = select.EPOLLIN
        if conn.out or conn.connecting:
            mask |= select.EPOLLOUT
        self._poll.modify(conn.sock, mask)

    def _add(self, conn: _Connection) -> None:
        conn.sock.setblocking(False)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conns[conn.sock.fileno()] = conn
        self._poll.register(conn.sock, select.EPOLLIN)

    def _close(self, conn: _Connection, reason: DropLabel | None) -> None:
        """CleanUp of one connection; ``reason`` (if any) is counted as a drop."""
        if reason:
            self.drops[reason] += 1
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            self._poll.unregister(conn.sock)
        conn.sock.close()
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        """Hook: the connection is gone."""

    def _signal(self, waiting: bool) -> None:
        """Keep the epoll descriptor readable while frames wait in the inbox."""
        if waiting:
            os.eventfd_write(self._ready, 1)
        else:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._ready)


class TcpClientTransport(TcpTransport):
    """Init(PORT), TCP client: one connection to the server, opened (again) on first send.

    A refused or broken connection is counted and forgotten; the next datagram (the Hello's
    retry, a keepalive) opens a new one, and the 2.5 s and 6 s timeouts decide as for UDP.
    """

    def __init__(self, server: Address, drops: Counter[DropLabel] | None = None) -> None:
        super().__init__(drops)
        self.server = server
        self._conn: _Connection | None = None

    def _connection_for(self, peer: Address) -> _Connection | None:
        if peer != self.server:
            return None
        if self._conn is None:
            sock = socket.socket(family_of(self.server[0]), socket.SOCK_STREAM)
            conn = _Connection(sock, self.server)
            self._add(conn)
            err = sock.connect_ex(self.server)
            if err not in (0, errno.EINPROGRESS):
                self._close(conn, Drop.TCP_CONNECT.detail(os.strerror(err)))
                return None
            conn.connecting = err != 0
            self._watch(conn)
            self._conn = conn
        return self._conn

    def _forget(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None


class TcpServerTransport(TcpTransport):
    """Init(PORT), TCP server: listen() and accept() (what UDP spares us, see the notes);
    each connection's peer address (client IP and port) stands for the client, as UDP's does."""

    def __init__(self, address: str, port: int, drops: Counter[DropLabel] | None = None) -> None:
        super().__init__(drops)
        self.listener = socket.socket(family_of(address), socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((address, port))
            self.listener.listen(64)
        except OSError as exc:
            self.listener.close()
            super().close()
            raise SetupError(f"cannot listen on TCP {address}:{port}: {exc.strerror}") from None
        self.listener.setblocking(False)
        self._poll.register(self.listener, select.EPOLLIN)
        self._by_peer: dict[Address, _Connection] = {}
        self._sweep_at = 0.0

    def _on_listener(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self.drops[Drop.TCP_ACCEPT.detail(exc.strerror)] += 1
                return
            if len(self._conns) >= MAX_CONNECTIONS and not self._make_room():
                self.drops[Drop.TCP_TOO_MANY] += 1
                sock.close()
                continue
            conn = _Connection(sock, peer[:2])
            self._add(conn)
            self._by_peer[conn.peer] = conn

    def _make_room(self) -> bool:
        """Full: close the oldest connection whose peer has no session; False if all have."""
        strangers = (conn for conn in self._conns.values() if not conn.session)
        oldest = min(strangers, key=lambda conn: conn.opened, default=None)
        if oldest is None:
            return False
        self._close(oldest, Drop.TCP_EVICTED)
        return True

    # --- the Transport hooks that TCP needs ------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Close what overstayed: no frame ``FIRST_FRAME_S`` after accept, no frame for
        ``IDLE_TIMEOUT_S``, or a session that ended (after a last try to send its Bye)."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + SWEEP_S
        for conn in list(self._conns.values()):
            if conn.ended:
                if conn.out and not conn.connecting:
                    self._flush(conn)
                self._close(conn, None)
            elif conn.last_frame is None and now - conn.opened >= FIRST_FRAME_S:
                self._close(conn, Drop.TCP_NO_FRAME_IN_TIME)
            elif conn.last_frame is not None and now - conn.last_frame >= IDLE_TIMEOUT_S:
                self._close(conn, Drop.TCP_IDLE)

    def session_opened(self, peer: Address) -> None:
        """The core made a session for ``peer``: its connection is no stranger any more."""
        conn = self._by_peer.get(peer)
        if conn is not None:
            conn.session, conn.ended = True, False

    def session_closed(self, peer: Address) -> None:
        """The core ended ``peer``'s session: close its connection at the next sweep."""
        conn = self._by_peer.get(peer)
        if conn is not None:
            conn.ended = True
            self._sweep_at = 0.0

    def _connection_for(self, peer: Address) -> _Connection | None:
        return self._by_peer.get(peer)

    def _forget(self, conn: _Connection) -> None:
        if self._by_peer.get(conn.peer) is conn:
            del self._by_peer[conn.peer]

    def close(self) -> None:
        super().close()
        self.listener.close()


class UdpMaker(Protocol):
    """What :func:`open_transport` needs of a data path (``tunnel.SimpleDatapath``,
    ``fast.datapath.FastDatapath``): its name, and its UDP transport made of the socket."""

    name: str

    def udp(self, sock: socket.socket, drops: Counter[DropLabel]) -> Transport: ...


def open_transport(
    kind: str,
    address: str,
    port: int,
    *,
    datapath: UdpMaker,
    drops: Counter[DropLabel],
    server: Address | None = None,
    buffer_bytes: int = QUEUE_BYTES,
) -> Transport:
    """Init(PORT) for ``--transport``: the UDP socket of the notes, or a TCP transport.

    ``server`` given: the client's side (TCP connects to it; UDP binds ``address``:``port``).
    ``buffer_bytes``: the UDP socket's buffers (:func:`init_socket`).

    Raises:
        SetupError: as :func:`init_socket` does; an unknown transport; tcp with the fast
            data path (its batches are UDP GSO/GRO).
    """
    if kind == "udp" and server is not None:
        return datapath.udp(init_socket(address, port, buffer_bytes), drops)
    if kind == "udp":  # the server: the data socket, then the Hello lane on the same port
        sock = init_socket(address, port, buffer_bytes, reuse_port=True)
        transport = datapath.udp(sock, drops)
        if isinstance(transport, UdpTransport):
            try:
                transport.add_hello_lane(hello_lane(sock, address, buffer_bytes))
            except SetupError:
                transport.close()
                raise
        return transport
    if kind != "tcp":
        raise SetupError(f"unknown transport {kind!r} (choose from {', '.join(TRANSPORTS)})")
    if datapath.name != "simple":
        raise SetupError(
            f"--transport tcp runs on the simple data path only, not --datapath {datapath.name}"
        )
    if server is not None:
        return TcpClientTransport(server, drops)
    return TcpServerTransport(address, port, drops)
