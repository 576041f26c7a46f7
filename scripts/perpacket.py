"""The server's per-packet cost in process (issue 29 item 2), old and new code alternated.

Times the server's side of a bulk TCP transfer through the readable path (the design notes'
select loop, ``--datapath simple``) and its parts, on realistic packets (1,400-byte data packets
from the client, 52-byte ACKs from tun0), static esp-aes-gcm or esp-null keys:

    seal        EspSession.seal of one ACK (the protection alone)
    open        EspSession.open of one data datagram (and the client's seal of it)
    core out    ServerCore.send_packets([ack]) + datagrams_to_send() (batch of one)
    core in     ServerCore.receive_runs, one datagram (the loop's call; with the seal)
    loop out    SelectLoop turns: an ACK read from tun0, sealed, sent by UDP
    loop in     SelectLoop turns: a datagram received by UDP, opened, written to tun0
    loop floor  the same system calls and ESP in a bare loop (epoll, recvfrom,
                EspSession.open, os.write): no timers, sessions, source check or counters,
                so ``loop in`` less ``loop floor`` is what the loop and the core add per packet

The loop rows run the real ``SelectLoop`` of ``vpnlab/shell/tunnel.py`` on ``TunDevice`` and
``UdpTransport``: a UDP socket on 127.0.0.1, and one end of a datagram socket pair in place of
tun0 (as the unit tests do), ``--per-wakeup`` packets waiting at each select(). Each figure is
CPU time (this process, system calls included, as the lab's CPU us/packet) per packet, the
median of ``--rounds``; each code tree runs in a fresh interpreter, the trees alternating
round by round, so that the machine's other load falls on all of them alike::

    mkdir /tmp/before && git archive HEAD~3 vpnlab | tar -x -C /tmp/before   # before a lever
    .venv/bin/python scripts/perpacket.py /tmp/before .

``--pause S`` measures what a student's idle ping meets instead: each row's packet alone, after
``S`` seconds asleep, as wall time (the median over the round's samples). After a pause every
step is slower, the more so the more memory it touches (issue 29 item 1: on the 2-core VM of
2026-12-06 a whole loop turn took 14 us warm and about 150 us after 50 ms)::

    .venv/bin/python scripts/perpacket.py /tmp/before . --pause 0.05

Profile one tree's loop with py-spy (``--only loop-in --seconds 20`` runs just that row)::

    py-spy record -r 1000 -o profile.txt -f raw -- .venv/bin/python scripts/perpacket.py \\
        --child . --only loop-in --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable

ROWS = ("seal", "open", "core out", "core in", "loop out", "loop in", "loop floor")
CLIENT = bytes((10, 8, 0, 2))
WEB = bytes((203, 0, 113, 10))


def tcp_packet(source: bytes, destination: bytes, flags: int, payload: int) -> bytes:
    """An IPv4 TCP packet (checksums zero: the server's core reads only addresses and flags)."""
    total = 20 + 20 + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0, source, destination)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 5 << 4, flags, 65535, 0, 0)
    return ip + tcp + bytes(payload)


def cpu_us_per(task: Callable[[], int], seconds: float) -> float:
    """Run ``task`` (it returns the packets it carried) until ``seconds`` of CPU have passed;
    CPU microseconds per packet."""
    packets = 0
    start = time.process_time_ns()
    deadline = start + int(seconds * 1e9)
    while True:
        packets += task()
        now = time.process_time_ns()
        if now >= deadline:
            return (now - start) / 1000 / packets


def wall_us_after(task: Callable[[], int], pause: float, seconds: float) -> float:
    """Run ``task`` (one packet) after ``pause`` seconds asleep, again until ``seconds`` have
    passed (at least 10 times); the median wall microseconds of one run."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while len(times) < 10 or time.monotonic() < deadline:
        time.sleep(pause)
        start = time.perf_counter_ns()
        task()
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times)


def child(
    cipher: str, seconds: float, per_wakeup: int, only: str | None, pause: float = 0.0
) -> dict[str, float]:
    """One interpreter's measurements of the ``vpnlab`` on ``sys.path``."""
    from ipaddress import IPv4Interface

    from vpnlab.core.formats import Established
    from vpnlab.core.server_core import ServerCore
    from vpnlab.core.session import Timeouts
    from vpnlab.shell.report import Reporter
    from vpnlab.shell.transport import UdpTransport
    from vpnlab.shell.tunnel import SelectLoop, SignalPipe, TunDevice
    from vpnlab.wire.esp import generate_static_keys

    keys = generate_static_keys(cipher, os.urandom)
    data = tcp_packet(CLIENT, WEB, 0x10, 1360)  # 1,400 bytes: the lab's tun MTU
    ack = tcp_packet(WEB, CLIENT, 0x10, 0)
    client = keys.client().protection
    results: dict[str, float] = {}

    def measure(row: str, task: Callable[[], int]) -> None:
        if only is None or only == row.replace(" ", "-"):
            if pause:
                results[row] = wall_us_after(task, pause, seconds)
            else:
                results[row] = cpu_us_per(task, seconds)

    server_side = keys.server()
    datagrams = iter(lambda: client.seal(data), None)
    measure("seal", lambda: (server_side.seal(ack), 1)[1])
    measure("open", lambda: (server_side.open(next(datagrams)), 1)[1])  # with the seal

    def server_core(peer: tuple[str, int]) -> ServerCore:
        core = ServerCore(
            None,
            IPv4Interface("10.8.0.1/24"),
            os.urandom,
            static=Established(keys.server(), keys.client_address),
            timeouts=Timeouts(liveness_s=0),  # "loop out" hears nothing back: never lost
            mss_clamp=1360,
        )
        core.receive_datagrams([client.seal(data)], peer, time.monotonic())  # binds the client
        return core

    peer = ("127.0.0.1", 4500)
    core = server_core(peer)

    def core_out() -> int:
        core.send_packets([ack], time.monotonic())
        core.datagrams_to_send()
        return 1

    measure("core out", core_out)

    def core_in() -> int:
        core.receive_runs([(peer, [next(datagrams)])], time.monotonic())
        return 1

    measure("core in", core_in)

    # The loop: a UDP socket on loopback, a datagram socket pair in place of tun0.
    tun, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_sock.bind(("127.0.0.1", 0))
    peer_sock.setblocking(False)
    core = server_core(peer_sock.getsockname())
    with open(os.devnull, "w") as devnull:
        reporter = Reporter("server", None, devnull)
        loop = SelectLoop(
            core,
            TunDevice(tun.fileno(), core.counters.drops),
            UdpTransport(udp, core.counters.drops),
            reporter,
            SignalPipe(),
        )
        server = udp.getsockname()

        def drain(sock: socket.socket) -> None:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                pass

        def loop_out() -> int:
            sent = core.counters.packets_from_tun + per_wakeup
            for _ in range(per_wakeup):
                kernel.send(ack)
            while core.counters.packets_from_tun < sent:
                loop.turn()
            drain(peer_sock)
            return per_wakeup

        pending = [client.seal(data) for _ in range(per_wakeup)]

        def loop_in() -> int:
            opened = core.counters.packets_to_tun + per_wakeup
            for datagram in pending:
                peer_sock.sendto(datagram, server)
            pending[:] = [client.seal(data) for _ in range(per_wakeup)]
            while core.counters.packets_to_tun < opened:
                loop.turn()
            drain(kernel)
            return per_wakeup

        esp = keys.server()  # a session of its own: its replay window starts afresh
        floor_poll = select.epoll()
        floor_poll.register(udp, select.EPOLLIN)
        floor_opened = [0]

        def floor_turn() -> None:
            floor_poll.poll(0.001)
            while True:
                try:
                    datagram, _ = udp.recvfrom(65536)
                except BlockingIOError:
                    return
                os.write(tun.fileno(), esp.open(datagram)[1])
                floor_opened[0] += 1

        def loop_floor() -> int:
            opened = floor_opened[0] + per_wakeup
            for datagram in pending:
                peer_sock.sendto(datagram, server)
            pending[:] = [client.seal(data) for _ in range(per_wakeup)]
            while floor_opened[0] < opened:
                floor_turn()
            drain(kernel)
            return per_wakeup

        kernel.setblocking(False)
        measure("loop out", loop_out)
        measure("loop in", loop_in)
        measure("loop floor", loop_floor)
        floor_poll.close()
        if sum(core.counters.drops.values()):
            raise SystemExit(f"drops in the loop: {dict(core.counters.drops)}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", default=["."], help="code trees (default: .)")
    parser.add_argument("--cipher", default="esp-aes-gcm", choices=("esp-aes-gcm", "esp-null"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per row")
    parser.add_argument("--per-wakeup", type=int, default=1, help="packets per select (<= 8)")
    parser.add_argument("--only", choices=[row.replace(" ", "-") for row in ROWS])
    parser.add_argument(
        "--pause", type=float, default=0.0, help="instead: wall us of one packet after S s asleep"
    )
    parser.add_argument("--child", metavar="TREE", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if not 1 <= options.per_wakeup <= 8:  # a datagram socket pair queues at most 10
        parser.error("--per-wakeup: 1 to 8")
    if not 0 <= options.pause <= 1:
        parser.error("--pause: 0 to 1 s")
    if options.pause and options.per_wakeup > 1:
        parser.error("--pause: one packet per wake-up")
    if options.child:
        sys.path.insert(0, os.path.abspath(options.child))
        args = (options.cipher, options.seconds, options.per_wakeup, options.only, options.pause)
        print(json.dumps(child(*args)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in options.trees}
    for _ in range(options.rounds):
        for tree in options.trees:
            command = [sys.executable, __file__, "--child", tree, "--cipher", options.cipher]
            command += ["--seconds", str(options.seconds)]
            command += ["--per-wakeup", str(options.per_wakeup), "--pause", str(options.pause)]
            command += ["--only", options.only] if options.only else []
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[tree].append(json.loads(output))
    rows = [row for row in ROWS if row in runs[options.trees[0]][0]]
    if options.pause:
        print(f"{options.cipher}, one packet after {options.pause} s asleep, wall us, median")
    else:
        per = f"{options.per_wakeup} packet(s) per wake-up"
        print(f"{options.cipher}, {per}, CPU us/packet, median")
    print(f"of {options.rounds} rounds (min-max); load average {os.getloadavg()[0]:.1f}")
    print("| row | " + " | ".join(options.trees) + " |")
    print("|---|" + "---:|" * len(options.trees))
    for row in rows:
        cells = []
        for tree in options.trees:
            values = [run[row] for run in runs[tree]]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"| {row} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
