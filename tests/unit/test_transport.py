"""The Transport interface over loopback (no root, no namespace): UDP's runs, the TCP transport's
framing (pure) and its shell, and what open_transport refuses."""

from __future__ import annotations

import io
import select
import socket
import time
from collections import Counter

import pytest

from vpnlab.core.errors import LocalProtocolError, SetupError
from vpnlab.fast.batch import SOL_UDP, UDP_GRO, gso_control
from vpnlab.fast.datapath import FastDatapath
from vpnlab.shell.report import Reporter
from vpnlab.shell.transport import (
    FIRST_FRAME_S,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    TcpClientTransport,
    TcpServerTransport,
    open_transport,
)
from vpnlab.shell.tunnel import SimpleDatapath
from vpnlab.wire.framing import MAX_FRAME_BYTES, FrameDecoder, encode_frame

REPORTER = Reporter("server", None, stream=io.StringIO())


def test_encode_frame_prefixes_big_endian_length():
    assert encode_frame(b"abc") == b"\x00\x03abc"
    assert encode_frame(bytes(300))[:2] == b"\x01\x2c"


@pytest.mark.parametrize("size", [0, MAX_FRAME_BYTES + 1])
def test_encode_frame_refuses_empty_and_oversize(size):
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(size))


def test_FrameDecoder_reassembles_frames_split_anywhere():
    datagrams = [bytes([i]) * (i * 37 + 1) for i in range(1, 12)]
    stream = b"".join(encode_frame(d) for d in datagrams)
    for step in (1, 2, 3, 7, 100):
        decoder = FrameDecoder()
        out = []
        for i in range(0, len(stream), step):
            out += decoder.feed(stream[i : i + step])
        assert out == datagrams, step
        assert decoder.pending_bytes == 0
        assert decoder.frames == len(datagrams)


def test_FrameDecoder_returns_several_frames_per_read_and_keeps_the_rest():
    decoder = FrameDecoder()
    stream = encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"three")[:4]
    assert decoder.feed(stream) == [b"one", b"two"]
    assert decoder.pending_bytes == 4
    assert decoder.feed(b"ree") == [b"three"]


def test_FrameDecoder_rejects_oversize_length_and_counts_it():
    decoder = FrameDecoder(max_frame_bytes=100)
    stream = encode_frame(b"ok") + (101).to_bytes(2, "big") + bytes(101) + encode_frame(b"late")
    assert decoder.feed(stream) == [b"ok"]
    assert decoder.error == "tcp: oversize frame"
    assert decoder.rejected == 1
    assert decoder.feed(encode_frame(b"more")) == []  # the stream cannot be trusted any more


def test_FrameDecoder_rejects_empty_frame():
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.error == "tcp: empty frame"


def _pump(transport) -> None:
    """Let a transport finish its connect and flush (the daemon's loop does this)."""
    assert transport.receive(1) == [], "unexpected datagram"


def _receive(transport, *others, timeout_s: float = 2.0):
    """The next datagram ``transport`` receives, as (datagram, peer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        select.select([transport, *others], [], [], 0.1)
        for other in others:
            _pump(other)
        runs = transport.receive(1)
        if runs:
            (peer, [datagram]), *_ = runs
            return datagram, peer
    raise AssertionError("nothing received")


def test_TcpTransport_carries_datagrams_both_ways_over_loopback():
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    client = TcpClientTransport(address)
    try:
        client.send([(b"hello", address)])  # connects on first send
        data, peer = _receive(server, client)
        assert data == b"hello" and peer[0] == "127.0.0.1"
        # more than one loop's batch: the inbox keeps epoll readable
        server.send([(bytes([i % 256]) * 1400, peer) for i in range(200)])
        got = [_receive(client) for _ in range(200)]
        assert [d[0] for d, _ in got] == [i % 256 for i in range(200)]
        assert {p for _, p in got} == {address}
        assert client.receive(64) == []
        assert not select.select([client], [], [], 0)[0]  # nothing left: not readable
    finally:
        client.close()
        server.close()


def test_TcpServerTransport_counts_a_broken_stream_and_forgets_the_peer():
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    client = TcpClientTransport(address)
    try:
        client.send([(b"x", address)])
        _, peer = _receive(server, client)
        conn = client._conn
        conn.sock.send(b"\xff\xff")  # a length above MAX_FRAME_BYTES
        deadline = time.monotonic() + 2
        while not server.drops and time.monotonic() < deadline:
            select.select([server], [], [], 0.1)
            assert server.receive(1) == []
        assert server.drops["tcp: oversize frame"] == 1
        server.send([(b"y", peer)])  # no connection for that peer any more: counted
        assert server.drops["send: Transport endpoint is not connected"] == 1
    finally:
        client.close()
        server.close()


def test_TcpClientTransport_counts_a_refused_connection():
    probe = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", probe.listener.getsockname()[1])
    probe.close()  # nobody listens there now
    client = TcpClientTransport(address)
    try:
        client.send([(b"hello", address)])
        deadline = time.monotonic() + 2
        while not client.drops and time.monotonic() < deadline:
            select.select([client], [], [], 0.1)
            assert client.receive(1) == []
        assert client.drops["tcp: connect: Connection refused"] == 1
        assert client._conn is None
    finally:
        client.close()


def test_TcpServerTransport_a_framing_bug_costs_one_connection(monkeypatch):
    """A bug in the receive path's parsing closes that connection (counted), no more."""
    feed = FrameDecoder.feed

    def buggy(self, data):
        if b"boom" in data:
            raise ValueError("framing bug")
        return feed(self, data)

    monkeypatch.setattr(FrameDecoder, "feed", buggy)
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    bad, good = TcpClientTransport(address), TcpClientTransport(address)
    try:
        bad.send([(b"boom", address)])
        good.send([(b"fine", address)])
        assert _receive(server, bad, good)[0] == b"fine"
        assert server.drops["bug: ValueError"] == 1
        assert len(server._by_peer) == 1
    finally:
        for transport in (bad, good, server):
            transport.close()


# --- the server's connection table: no idle stranger keeps a client out -------------------------


def _accept_all(server, count: int, timeout_s: float = 5.0) -> None:
    """Let the server accept() ``count`` connections (the loop's receive does it)."""
    deadline = time.monotonic() + timeout_s
    while len(server._conns) < count and time.monotonic() < deadline:
        select.select([server], [], [], 0.05)
        server.receive(1)
    assert len(server._conns) >= count


def _closed_by_server(sock: socket.socket, timeout_s: float = 2.0) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_TcpServerTransport_256_idle_connections_do_not_keep_a_client_out():
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    idle: list[socket.socket] = []
    client = TcpClientTransport(address)
    try:
        while len(idle) < MAX_CONNECTIONS:  # in steps the listen backlog holds
            idle += [socket.create_connection(address, timeout=5) for _ in range(32)]
            _accept_all(server, len(idle))
        client.send([(b"hello", address)])
        data, _ = _receive(server, client)
        assert data == b"hello"
        assert server.drops["tcp: evicted (no session)"] == 1
        assert _closed_by_server(idle[0])  # the oldest stranger made room
    finally:
        client.close()
        server.close()
        for sock in idle:
            sock.close()


def test_TcpServerTransport_closes_a_connection_without_a_frame_in_time():
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    silent = socket.create_connection(address)
    talker = TcpClientTransport(address)
    try:
        talker.send([(b"hello", address)])
        _receive(server, talker)
        _accept_all(server, 2)
        server.handle_timer(time.monotonic() + FIRST_FRAME_S - 1)
        assert len(server._conns) == 2  # not yet
        server.handle_timer(time.monotonic() + FIRST_FRAME_S + 0.1)
        assert server.drops["tcp: no frame in time"] == 1
        assert _closed_by_server(silent)
        assert len(server._conns) == 1  # the one that sent a frame stays
        server.handle_timer(time.monotonic() + IDLE_TIMEOUT_S + 1)
        assert server.drops["tcp: idle"] == 1 and not server._conns
    finally:
        talker.close()
        server.close()
        silent.close()


def test_TcpServerTransport_closes_a_connection_when_its_session_ends():
    server = TcpServerTransport("127.0.0.1", 0)
    address = ("127.0.0.1", server.listener.getsockname()[1])
    raw = socket.create_connection(address)
    try:
        raw.sendall(encode_frame(b"hello"))
        _, peer = _receive(server)
        server.session_opened(peer)
        server.handle_timer(time.monotonic() + IDLE_TIMEOUT_S - 1)
        assert server._by_peer
        server.send([(b"bye", peer)])
        server.session_closed(peer)
        server.handle_timer(time.monotonic())
        assert not server._by_peer
        raw.settimeout(2.0)
        assert raw.recv(100) == encode_frame(b"bye")  # what was queued went out first
        assert raw.recv(100) == b""
    finally:
        server.close()
        raw.close()


# --- the Transport interface: UDP's runs, and what open_transport refuses -----------------------


def test_UdpTransport_receive_groups_datagrams_in_runs_of_one_peer():
    """SockSelected hands the core one call per run: datagrams in a row from one peer."""
    drops: Counter[str] = Counter()
    transport = open_transport(
        "udp", "127.0.0.1", 0, datapath=SimpleDatapath(REPORTER), drops=drops
    )
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        address = transport.sock.getsockname()
        for sender, datagram in ((a, b"1"), (a, b"2"), (b, b"3"), (a, b"4")):
            sender.sendto(datagram, address)
        time.sleep(0.05)
        runs = transport.receive(64)
        assert [(peer[1], datagrams) for peer, datagrams in runs] == [
            (a.getsockname()[1], [b"1", b"2"]),
            (b.getsockname()[1], [b"3"]),
            (a.getsockname()[1], [b"4"]),
        ]
        assert transport.receive(64) == []
        transport.send([(b"x", ("127.0.0.1", 0))])  # port 0: the kernel refuses the send
        assert sum(drops.values()) == 1 and next(iter(drops)).startswith("send: ")
    finally:
        for end in (a, b, transport):
            end.close()


def test_open_transport_refuses_tcp_on_the_fast_data_path_in_one_line():
    with pytest.raises(SetupError) as refused:
        open_transport("tcp", "127.0.0.1", 0, datapath=FastDatapath(REPORTER), drops=Counter())
    assert (
        str(refused.value)
        == "--transport tcp runs on the simple data path only, not --datapath fast"
    )


@pytest.mark.parametrize("datapath", [SimpleDatapath, FastDatapath], ids=["simple", "fast"])
def test_server_udp_steers_hellos_to_their_own_lane_and_reads_the_data_first(datapath):
    """Issue 27: under a Hello flood the tunnel's datagrams queued in the one socket behind
    thousands of Hellos (10,000 counted after the flood had ended); the kernel now steers the
    Hellos to a second socket on the port, and each receive takes the data first."""
    server = open_transport("udp", "127.0.0.1", 0, datapath=datapath(REPORTER), drops=Counter())
    port = server.sock.getsockname()[1]
    psk_hello, identity_hello = b"\0\0\0\0\x01" + bytes(40), b"\0\0\0\0\x03" + bytes(140)
    welcome, esp, short = b"\0\0\0\0\x02" + bytes(40), b"\x12\x34\x56\x78" + bytes(40), b"\0\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        for datagram in (psk_hello, identity_hello, esp, welcome, short, identity_hello):
            client.sendto(datagram, ("127.0.0.1", port))
        time.sleep(0.1)
        assert select.select([server], [], [], 1.0)[0] == [server]
        runs = server.receive(64)
        data, hellos = [esp, welcome, short], [psk_hello, identity_hello, identity_hello]
        assert runs == [(client.getsockname()[:2], data + hellos)]  # one peer: one run
    server.close()


def test_the_fast_servers_hello_lane_takes_a_udp_gro_batch_whole():
    """The kernel's GRO picks one of the port's two sockets by a hash (its lookup has no packet
    for the steering program), so the Hello lane has UDP_GRO as the data socket has: without
    it, half the labs' servers never received a GRO batch. A batch led by a Hello reaches the
    lane whole and is cut into its datagrams as the data socket's are."""
    datapath = FastDatapath(REPORTER)
    server = open_transport("udp", "127.0.0.1", 0, datapath=datapath, drops=Counter())
    assert server.hellos is not None
    assert server.hellos.getsockopt(SOL_UDP, UDP_GRO) == 1
    port = server.sock.getsockname()[1]
    hellos = [b"\0\0\0\0\x03" + bytes([n]) * 139 for n in range(3)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))  # one send of three (UDP GSO): loopback keeps it whole
        client.sendmsg([b"".join(hellos)], gso_control(len(hellos[0])), 0, ("127.0.0.1", port))
        assert select.select([server], [], [], 1.0)[0] == [server]
        assert server.receive(64) == [(client.getsockname()[:2], hellos)]
    assert datapath.stats["gro_batches"] == 1
    server.close()
