"""tunnel.py without root: the SelectLoop with a socket pair as tun0 and UDP on 127.0.0.1.

A bug in a parser must cost one packet, never the daemon: the loop counts whatever a core
raises for one packet as a drop (``bug: <ExceptionType>``) and goes on with the next.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from collections.abc import Iterator

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import EndpointMoved, HandshakeCompleted, SessionClosed
from vpnlab.core.reasons import Close
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import State
from vpnlab.fast.datapath import FastDatapath
from vpnlab.shell import transport
from vpnlab.shell import tunnel as tunnel_module
from vpnlab.shell.queues import SESSION_ROOM_BYTES
from vpnlab.shell.report import Reporter
from vpnlab.shell.transport import TcpServerTransport
from vpnlab.shell.tunnel import (
    STATUS_QUIET_S,
    SelectLoop,
    SimpleDatapath,
    TunDevice,
    status_due,
)
from vpnlab.wire.framing import encode_frame
from vpnlab.wire.plain import PLAIN

from .helpers import (
    BOOM,
    SERVER_TUNNEL_ADDRESS,
    ipv4_packet,
    make_loop,
    seeded_random,
    wait_readable,
)


def test_SelectLoop_tun_selected_counts_a_core_bug_and_goes_on(loop_parts):
    tunnel = make_loop(loop_parts)
    _, tun_peer, _, _ = loop_parts
    for packet in (BOOM, ipv4_packet("10.8.0.1", "10.8.0.9"), BOOM):
        tun_peer.send(packet)
    tunnel.tun_selected(time.monotonic())
    drops = tunnel.core.counters.drops
    assert drops["bug: IndexError"] == 2
    assert drops["tun: no client for destination"] == 1  # the packet after the bug was handled
    assert "bug: IndexError" in tunnel.reporter.stream.getvalue()  # logged once


class SuperPacketTun(TunDevice):
    """tun0 as the fast path reads it: each read one TSO super-packet, cut into 43 segments
    (here 43 copies of the datagram read)."""

    def read(self, limit: int) -> list[bytes]:
        return [packet for packet in super().read(limit) for _ in range(43)]


def pending(end: socket.socket) -> int:
    """Datagrams still waiting on ``end`` (read and thrown away)."""
    count = 0
    while True:
        try:
            end.recv(65536)
        except BlockingIOError:
            return count
        count += 1


@pytest.mark.parametrize(("device", "reads"), [(TunDevice, 64), (SuperPacketTun, 2)])
def test_SelectLoop_tun_selected_reads_a_batch_of_packets_not_of_reads(loop_parts, device, reads):
    tun, tun_peer, _, _ = loop_parts
    tunnel = make_loop(loop_parts)
    tunnel.device = device(tun.fileno(), tunnel.core.counters.drops)
    for _ in range(70):
        tun_peer.send(ipv4_packet("10.8.0.1", "10.8.0.9"))
    tunnel.tun_selected(time.monotonic())  # then the socket's turn (the inner TCP's ACKs)
    assert pending(tun) == 70 - reads
    per_read = 43 if device is SuperPacketTun else 1
    assert tunnel.core.counters.drops["tun: no client for destination"] == reads * per_read


def test_SelectLoop_sock_selected_counts_a_core_bug_and_goes_on(loop_parts):
    tunnel = make_loop(loop_parts)
    _, _, sock, _ = loop_parts
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(BOOM, sock.getsockname())
        stranger.sendto(b"not boom", sock.getsockname())
        wait_readable(sock)
        time.sleep(0.05)  # both datagrams on the socket
        tunnel.sock_selected(time.monotonic())
    drops = tunnel.core.counters.drops
    assert drops["bug: KeyError"] == 1
    assert drops["unknown peer"] == 1


def test_SelectLoop_run_survives_a_bug_in_every_packet(loop_parts):
    """The whole loop: bugs from tun0 and from the socket, and it still stops on request."""
    _, tun_peer, sock, signals = loop_parts
    tunnel = make_loop(loop_parts)
    tun_peer.send(BOOM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(BOOM, sock.getsockname())
        wait_readable(sock)
    rounds = []

    def report_status(now: float) -> None:
        rounds.append(now)
        if len(rounds) == 2:
            signals.received = 15

    tunnel.report_status = report_status
    tunnel.run()
    drops = tunnel.core.counters.drops
    assert drops["bug: IndexError"] == 1 and drops["bug: KeyError"] == 1
    assert len(rounds) == 2


def test_SelectLoop_run_measures_the_wall_clock_offset_again(loop_parts, monkeypatch):
    """A wall-clock step (NTP, a suspended VM) reaches the core's handshake time within 1 s."""
    _, _, _, signals = loop_parts
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random(), clock_offset_s=0.0)
    tunnel = make_loop(loop_parts, core)
    assert core.state is State.LISTENING
    stepped = time.time() + 3600.0
    monkeypatch.setattr(time, "time", lambda: stepped)

    def report_status(now: float) -> None:
        signals.received = 15

    tunnel.report_status = report_status
    tunnel.run()
    assert abs(core.clock_offset_s - (stepped - time.monotonic())) < 1.0


def test_SelectLoop_drives_the_tcp_transports_timers_and_sessions(loop_parts, monkeypatch):
    """--transport tcp: the loop tells the server transport when a session starts and ends
    (it closes the connection) and lets it close a connection that never sends a frame."""
    monkeypatch.setattr(transport, "FIRST_FRAME_S", 0.3)
    tun, _, _, signals = loop_parts
    sock = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", sock.listener.getsockname()[1])
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    device = TunDevice(tun.fileno(), core.counters.drops)
    reporter = Reporter("server", None, io.StringIO())
    tunnel = SelectLoop(core, device, sock, reporter, signals)
    client = ClientCore(address, PLAIN.client_handshake(seeded_random(2)))
    silent = socket.create_connection(address)
    raw = socket.create_connection(address)
    client.connect(time.monotonic())
    raw.sendall(b"".join(encode_frame(d) for d, _ in client.datagrams_to_send()))
    rounds = []

    def report_status(now: float) -> None:
        rounds.append(now)
        if len(rounds) == 3:
            signals.received = 15

    tunnel.report_status = report_status
    try:
        tunnel.run()
        assert core.sessions and all(conn.session for conn in sock._by_peer.values())
        assert sock.drops["tcp: no frame in time"] == 1  # the silent one
        silent.settimeout(2.0)
        assert silent.recv(1) == b""
        tunnel.dispatch(core.close(time.monotonic()))  # the session ends: Bye, then closed
        tunnel.send_queued()
        sock.handle_timer(time.monotonic())
        assert not sock._conns
    finally:
        sock.close()
        for end in (silent, raw):
            end.close()


def test_SelectLoop_sock_selected_survives_a_bug_in_the_tcp_transport(loop_parts, monkeypatch):
    """The TCP transport parses (accept, framing) inside receive: a bug there is counted too."""
    tun, _, _, signals = loop_parts
    sock = TcpServerTransport("127.0.0.1", 0)
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    device = TunDevice(tun.fileno(), core.counters.drops)
    reporter = Reporter("server", None, io.StringIO())
    tunnel = SelectLoop(core, device, sock, reporter, signals)

    def broken() -> None:
        raise RuntimeError("accept bug")

    monkeypatch.setattr(sock, "_on_listener", broken)
    stranger = socket.create_connection(("127.0.0.1", sock.listener.getsockname()[1]))
    try:
        wait_readable(sock)
        tunnel.sock_selected(time.monotonic())
        assert core.counters.drops["bug: RuntimeError"] == 1
    finally:
        sock.close()
        stranger.close()


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], "fast"),
        (["--datapath", "simple"], "simple"),
        (["--mode", "tap"], "simple"),
        (["--transport", "tcp"], "simple"),
        (["--mode", "tap", "--datapath", "fast"], "fast"),  # refused later, at CreateTunDev
    ],
)
def test_the_default_data_path_is_fast_except_for_tap_and_tcp(argv, expected):
    from vpnlab.cli import build_parser
    from vpnlab.cli.daemons import datapath_of

    for command in (["server"], ["client", "--server", "198.51.100.2"]):
        args = build_parser(command[0]).parse_args([*command, *argv])
        assert datapath_of(args).name == expected, (command, argv)


@contextlib.contextmanager
def hellos_waiting(loop_parts, count: int) -> Iterator[None]:
    """``count`` PSK Hellos from as many clients, waiting on the loop's socket."""
    _, _, sock, _ = loop_parts
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for client in clients:
            client.sendto(b"VPNLAB/1 HELLO\n", sock.getsockname())
        time.sleep(0.1)
        yield
    finally:
        for client in clients:
            client.close()


def test_SelectLoop_on_events_once_per_wake_up_with_all_its_events(loop_parts, monkeypatch):
    """Issue 27: the server rewrote its key export once per event: 250 Byes arriving
    together cost 137 ms in one wake-up. A batch's events now come to ``on_events`` once.
    (A busy loop's wake-up: after a pause the first reads one, as the next test shows.)"""
    monkeypatch.setattr(tunnel_module, "IDLE_GAP_S", float("inf"))
    batches = []
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    tunnel = make_loop(loop_parts, core, on_events=batches.append)
    with hellos_waiting(loop_parts, 3):
        tunnel.turn(report=False)
    ((a, b, c),) = batches
    assert {type(a), type(b), type(c)} == {HandshakeCompleted}


def test_SelectLoop_reads_one_datagram_after_a_pause_and_the_rest_next_turn(loop_parts):
    """Issue 29 (idle ping): after a pause a wake-up receives one datagram and goes back to
    select(), which is still readable, instead of trying again until the socket is empty:
    after a pause that empty receive cost more than the datagram's own way to tun0."""
    batches = []
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    tunnel = make_loop(loop_parts, core, on_events=batches.append)
    with hellos_waiting(loop_parts, 2):
        tunnel.turn(report=False)
        assert [len(batch) for batch in batches] == [1]
        tunnel.turn(report=False)  # select() saw the second one waiting
    assert [len(batch) for batch in batches] == [1, 1]
    assert len(core.sessions) == 2


@pytest.mark.parametrize(
    ("now", "busy_at", "due"),
    [
        (9.9, 0.0, False),  # not yet due
        (10.0, 5.0, True),  # due, and the loop has been quiet for 5 s
        (10.0, 9.995, False),  # due, but a packet passed 5 ms ago: wait for the pause
        (10.011, 10.0, True),  # the pause came
        (11.0, 10.999, True),  # packets all the time: at most STATUS_LATE_S late
    ],
)
def test_status_due_waits_for_a_pause_in_packets(now, busy_at, due):
    assert status_due(now, 10.0, busy_at) is due


def test_SelectLoop_writes_the_status_after_a_pause_not_between_two_packets(loop_parts):
    """Issue 29: the once-a-second work ran right after the wake-up that wrote an echo request
    to tun0, so the reply waited behind it (idle ping spikes of 0.5-3.5 ms once a second)."""
    _, tun_peer, _, _ = loop_parts
    tunnel = make_loop(loop_parts)
    written = []
    tunnel.report_status = written.append
    tunnel.turn()  # nothing readable: the status is due and the loop is quiet
    assert len(written) == 1
    tunnel._status_at = time.monotonic()  # due again (not yet STATUS_LATE_S late)
    tun_peer.send(ipv4_packet("10.8.0.1", "10.8.0.9"))
    tunnel.turn()  # a packet: the status waits
    assert len(written) == 1
    started = time.monotonic()
    tunnel.turn()  # nothing more: the loop wakes after the pause and writes it
    assert len(written) == 2
    assert STATUS_QUIET_S * 0.9 <= time.monotonic() - started < 0.5


def test_SelectLoop_writes_the_status_a_pause_after_a_session_opens(loop_parts):
    """``vpnlab lab start-vpn`` printed the server "listening" with no client after both
    clients said connected: its status file came up to a second after their handshakes. A
    session opened makes the once-a-second work due at once (after its pause in packets)."""
    written = []
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    tunnel = make_loop(loop_parts, core)
    tunnel.report_status = written.append
    tunnel.turn()  # the status at start, due next in a second
    assert len(written) == 1
    with hellos_waiting(loop_parts, 1):
        tunnel.turn()  # the Hello: a session opens, the status waits for the pause
        assert len(core.sessions) == 1 and len(written) == 1
        started = time.monotonic()
        tunnel.turn()  # nothing more: written after the pause, not a second later
    assert len(written) == 2
    assert time.monotonic() - started < 0.5


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_RCVBUFFORCE needs CAP_NET_ADMIN")
@pytest.mark.parametrize("datapath", [SimpleDatapath, FastDatapath], ids=["simple", "fast"])
def test_SelectLoop_gives_each_session_room_in_the_sockets_receive_buffer(loop_parts, datapath):
    """1,000 clients' echo requests sent at once overflowed the fast path's 256 KiB receive
    buffer (873 answered): the socket grows by SESSION_ROOM_BYTES per session; a rekey adds
    nothing, roaming moves the room to the new address, a closed session gives it back."""
    tun, _, sock, signals = loop_parts
    core = ServerCore(PLAIN, SERVER_TUNNEL_ADDRESS, seeded_random())
    reporter = Reporter("server", None, io.StringIO())
    device = SimpleDatapath(reporter).device(tun.fileno(), core.counters.drops)
    udp = datapath(reporter).udp(sock, core.counters.drops)  # GsoUdp on the fast path
    tunnel = SelectLoop(core, device, udp, reporter, signals)

    def receive_buffer() -> int:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # the kernel's: doubled

    empty = receive_buffer()
    peers = [(f"192.0.2.{i}", 4500) for i in range(1, 101)]
    address = SERVER_TUNNEL_ADDRESS  # any: the transport reads the peer only
    tunnel.dispatch([HandshakeCompleted(peer, address) for peer in peers])
    assert receive_buffer() == empty + 2 * 100 * SESSION_ROOM_BYTES
    tunnel.dispatch([HandshakeCompleted(peers[0], address)])  # a rekey
    tunnel.dispatch([EndpointMoved(old=peers[1], peer=("198.51.100.7", 4500))])
    assert receive_buffer() == empty + 2 * 100 * SESSION_ROOM_BYTES
    tunnel.dispatch([SessionClosed(("198.51.100.7", 4500), Close.BYE)])
    tunnel.dispatch([SessionClosed(peers[1], Close.BYE)])  # moved away: gave its room already
    assert receive_buffer() == empty + 2 * 99 * SESSION_ROOM_BYTES
    tunnel.dispatch([SessionClosed(peer, Close.PEER_LOST) for peer in peers])
    assert receive_buffer() == empty
