"""Notebook 12, write your own tunnel (SEED Tasks 4 and 5): the lab around the student's loop.

The student writes the loop (TunSelected, SockSelected: the plain format, each IP packet as
one UDP datagram on port 4500). This module gives it its two ends, a tun0 and a UDP socket in
r1 and in r2 (opened from the notebook's thread with ``netns``, so they belong to those nodes),
runs it in threads for a bounded time, and observes what went through it: a ping and a
who-am-I fetch from r1 to web, and r1's eth0 captured. While the loop runs, the check attacks
it (``attack``): datagrams from a stranger and from the peer's address on another port, whose
inner packets forge their source, must not reach web; a truncated and a garbage datagram from
the peer itself must not stop the loop.
"""

from __future__ import annotations

import html
import inspect
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vpnlab.core.constants import PORT, tun_mtu
from vpnlab.course import inject
from vpnlab.course.notebook import CourseLab, netns
from vpnlab.instruments import capture
from vpnlab.shell.tun import create_tun_dev
from vpnlab.shell.tunnel import SelectLoop

WEB = "203.0.113.10"
SPOOFED = {
    "a datagram from a stranger (the isp) to r2, 10.8.0.2 -> web inside": 0x5EED,
    "one from r1's address but port 4501 to r2, 10.8.0.2 -> web inside": 0x5EEE,
    "one from a stranger to r1, forged web -> 10.8.0.2 inside": 0x5EEF,
}
"""The spoofed datagrams of :func:`attack`, each by the ICMP ident of the packet it carries."""
MALFORMED = {"truncated": b"\x45\x00\x00", "garbage": bytes(range(7, 107))}
"""What the peer's address sends too: no IP packet, so ``os.write`` to tun0 fails (EINVAL)."""
ENDS = {"r1": ("10.8.0.2/24", "198.51.100.2"), "r2": ("10.8.0.1/24", "192.0.2.2")}
"""Each node's tun0 address and its peer's public address."""
Loop = Callable[[int, socket.socket, tuple[str, int], float], None]


@dataclass
class End:
    """One end of the student's tunnel: the node, its tun0 fd, its UDP socket, the peer."""

    node: str
    tun: int
    sock: socket.socket
    peer: tuple[str, int]
    errors: list[str] = field(default_factory=list)


def open_end(lab: CourseLab, node: str) -> End:
    """CreateTunDev + Ifconfig + Init(PORT) in ``node``: tun0 (MTU of the plain format), up,
    and a UDP socket bound to port 4500."""
    address, peer = ENDS[node]
    with netns(lab.ns(node)):
        tun, name = create_tun_dev("tun0")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", PORT))
    lab.run(node, ["ip", "addr", "add", address, "dev", name], check=True)
    lab.run(node, ["ip", "link", "set", name, "mtu", str(tun_mtu(0)), "up"], check=True)
    return End(node, tun, sock, (peer, PORT))


def prepare(lab: CourseLab) -> dict[str, End]:
    """Both ends, and the routes: web through r1's tun0, forwarding in r2, the isp's route
    back to 10.8.0.0/24 (no NAT: web sees the tunnel address)."""
    ends = {node: open_end(lab, node) for node in ENDS}
    lab.run("r1", ["ip", "route", "add", f"{WEB}/32", "dev", "tun0"], check=True)
    lab.run("r2", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    lab.vpnlab("lab", "route-back", show=False)
    return ends


def close(ends: dict[str, End]) -> None:
    """CleanUp: closing the fds removes both tun0 (and their routes)."""
    for end in ends.values():
        os.close(end.tun)
        end.sock.close()


def _guarded(loop: Loop, end: End, until: float) -> None:
    try:
        loop(end.tun, end.sock, end.peer, until)
    except Exception as exc:  # the student's bug: reported by the check, not lost in a thread
        end.errors.append(f"{end.node}: {type(exc).__name__}: {exc}")


def start(loop: Loop, ends: list[End], seconds: float) -> list[threading.Thread]:
    """Run ``loop(tun, sock, peer, until)`` for each end in a thread of its own."""
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_guarded, args=(loop, e, until), daemon=True) for e in ends]
    for thread in threads:
        thread.start()
    return threads


def _inner(payload: bytes) -> tuple[str, str, int] | None:
    """An IPv4 packet's (source, destination, protocol), or None if it is not one."""
    if len(payload) < 20 or payload[0] >> 4 != 4:
        return None
    return socket.inet_ntoa(payload[12:16]), socket.inet_ntoa(payload[16:20]), payload[9]


def receive(end: End, seconds: float) -> list[bytes]:
    """What arrives on ``end``'s socket within ``seconds`` (the far side of Task 4)."""
    got: list[bytes] = []
    end.sock.settimeout(0.2)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            got.append(end.sock.recv(65535))
        except TimeoutError:
            continue
    end.sock.settimeout(None)
    return got


def try_one_way(
    lab: CourseLab, forward: Loop, ends: dict[str, End], seconds: float = 5.0
) -> dict[str, bool]:
    """Task 4: ``forward`` in r1 only; 3 pings to web; what r2's socket received."""
    start(forward, [ends["r1"]], seconds)
    arrived: list[bytes] = []
    far = threading.Thread(target=lambda: arrived.extend(receive(ends["r2"], seconds)))
    far.start()
    ping = lab.run("r1", ["ping", "-c", "3", "-i", "0.3", "-W", "1", WEB])
    far.join(seconds + 2)
    requests = [p for p in arrived if _inner(p) == ("10.8.0.2", WEB, 1) and p[20] == 8]
    lab.record("one_way_received", len(requests))
    return {
        "r2 received the 3 echo requests, each one datagram": len(requests) == 3,
        "and no answer came back (one way only)": ping.returncode != 0,
        "your forwarder raised nothing": not ends["r1"].errors,
    }


def wire(path: str | Path) -> list[tuple[str, str, tuple[str, str, int] | None]]:
    """r1's eth0: per UDP 4500 datagram, (outer source, outer destination, inner packet)."""
    # scapy loads slowly: only when a capture is read
    from scapy.all import rdpcap
    from scapy.layers.inet import IP, UDP

    rows = []
    for frame in rdpcap(str(path)):
        if IP in frame and UDP in frame and PORT in (frame[UDP].sport, frame[UDP].dport):
            rows.append((frame[IP].src, frame[IP].dst, _inner(bytes(frame[UDP].payload))))
    return rows


def attack(lab: CourseLab) -> None:
    """SockSelected under attack: the malformed datagrams from the peer's own address and
    port (a raw socket: the student's loop holds port 4500), then the spoofed ones."""
    for payload in MALFORMED.values():
        inject.send_udp_raw(lab, "r1", PORT, ENDS["r1"][1], payload)
        inject.send_udp_raw(lab, "r2", PORT, ENDS["r2"][1], payload)
    stranger, other_port, to_r1 = SPOOFED.values()
    inject.send_udp(lab, "isp", PORT, ENDS["r1"][1], inject.icmp_echo("10.8.0.2", WEB, stranger))
    inject.send_udp(
        lab, "r1", PORT + 1, ENDS["r1"][1], inject.icmp_echo("10.8.0.2", WEB, other_port)
    )
    inject.send_udp(lab, "isp", PORT, ENDS["r2"][1], inject.icmp_echo(WEB, "10.8.0.2", to_r1))
    time.sleep(0.3)  # let them arrive (or not) before the real traffic


def try_tunnel(
    lab: CourseLab, tunnel: Loop, ends: dict[str, End], seconds: float = 8.0
) -> dict[str, bool]:
    """Task 5: ``tunnel`` in r1 and r2, attacked (:func:`attack`); then a ping and a who-am-I
    fetch; r1's eth0 and web's eth0 captured."""
    cap = capture.start_capture(
        lab.prefix, "r1", "eth0", "work/mytunnel-r1-eth0.pcapng", 300, seconds + 5, "udp"
    )
    at_web = capture.start_capture(
        lab.prefix, "web", "eth0", "work/mytunnel-web-eth0.pcapng", 300, seconds + 5, "icmp"
    )
    threads = start(tunnel, [ends["r1"], ends["r2"]], seconds)
    attack(lab)
    ping = lab.run("r1", ["ping", "-c", "3", "-i", "0.3", "-W", "2", WEB])
    seen = lab.whoami("r1")
    rows = wire(cap.stop())
    reached_web = inject.icmp_idents(at_web.stop())
    for thread in threads:
        thread.join(seconds + 2)
    out = [r for r in rows if r[1] == ENDS["r1"][1] and r[2] and r[2][1] == WEB]
    back = [r for r in rows if r[0] == ENDS["r1"][1] and r[2] and r[2][0] == WEB]
    lab.record("my_tunnel", {"ping_rc": ping.returncode, "whoami": seen, "out": len(out)})
    lab.record("my_tunnel_back", len(back))
    spoofed = {what: ident in reached_web for what, ident in SPOOFED.items()}
    lab.record("my_tunnel_spoofed_through", [what for what, through in spoofed.items() if through])
    return {
        **{f"{what}: dropped": not through for what, through in spoofed.items()},
        "a ping r1 -> web answered through your loop (after a truncated and a garbage "
        "datagram from the peer)": ping.returncode == 0,
        "who-am-I at web says 'you are 10.8.0.2'": seen == "you are 10.8.0.2",
        "on r1's eth0: your UDP 4500 datagrams to r2, carrying packets for web": bool(out),
        "and r2's back, carrying web's answers": bool(back),
        "your loop raised nothing": not (ends["r1"].errors or ends["r2"].errors),
    }


def side_by_side(*functions: Callable[..., object]) -> str:
    """HTML: the student's loop on the left, tunnel.py's TunSelected and SockSelected (and the
    two calls into the core they make) on the right."""
    mine = "\n\n".join(inspect.getsource(f) for f in functions)
    steps = (SelectLoop.tun_selected, SelectLoop.sock_selected, SelectLoop.seal, SelectLoop.open)
    real = "\n".join(inspect.getsource(step) for step in steps)
    cell = '<td style="vertical-align:top;text-align:left"><pre>{}</pre></td>'
    head = "<tr><th>your loop</th><th>vpnlab/shell/tunnel.py</th></tr>"
    body = cell.format(html.escape(mine)) + cell.format(html.escape(real))
    return f"<table>{head}<tr>{body}</tr></table>"
