"""Notebook 11's code exercises: write to a TUN device (SEED task 2.d) and answer ARP on a TAP
device (SEED task 9), judged by the kernel's own tools.

- ``echo_reply(packet)``: for an IPv4 ICMP echo request read from a TUN device, the echo reply
  to write back (addresses swapped, type 0, both checksums right); ``None`` for anything else
  (the kernel's own IPv6 packets, a UDP datagram). The check gives r1 a TUN device
  ``ex2d0`` (10.66.0.1/24), serves it with the student's function in a thread and pings
  10.66.0.2 from r1: ``ping`` must count every reply (a reply with the addresses not swapped,
  or still of type 8, never reaches ping). The kernel does not verify the ICMP checksum of
  what a TUN device gives it, so the check verifies both checksums itself.
- ``arp_reply(frame, mac)``: for an Ethernet frame holding an ARP request, the ARP reply
  ("the asked address is at ``mac``"); ``None`` for anything else. The check gives web a TAP
  device ``ex9tap0`` (10.10.0.1/24), serves it likewise and runs ``arping`` for 10.10.0.7
  there (arping counts an ARP *request* from ``mac`` as an answer too: the check wants
  replies), then makes the kernel ask itself: ``ip neigh`` must hold ``mac``.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.packet import internet_checksum
from vpnlab.course.inject import icmp_echo
from vpnlab.course.notebook import CourseLab, netns
from vpnlab.shell.tun import IFF_NO_PI, IFF_TAP, IFF_TUN, create_tun_dev

_ECHO = icmp_echo("10.66.0.2", "10.66.0.1", 7)
OTHER_PACKETS = [
    _ECHO[:9] + b"\x11" + _ECHO[10:20] + bytes(8),  # UDP: not an echo request
    bytes.fromhex("6000000000103aff")
    + bytes.fromhex("fe80" + "00" * 13 + "01")
    + bytes.fromhex("ff02" + "00" * 13 + "02")
    + bytes.fromhex("85007bb800000000"),
]
"""Packets a TUN device also reads, which get no reply: a UDP datagram, a router solicitation."""
OTHER_FRAMES = [
    bytes.fromhex("33330000000202000000000186dd") + OTHER_PACKETS[1],
    bytes.fromhex("ffffffffffff0200000000010800") + OTHER_PACKETS[0],
]
"""Frames a TAP device also reads, which get no reply: IPv6 multicast, an IPv4 broadcast."""
MAC = "02:00:5e:00:53:77"
"""The made-up MAC address the student's ARP replies claim (RFC 7042's documentation range)."""
Answer = Callable[[bytes], "bytes | None"]


class Served:
    """A TUN or TAP device in a node whose every packet goes to ``answer``; what ``answer``
    returns is written back. Runs in a thread until stopped; the student's errors are kept."""

    def __init__(self, lab: CourseLab, node: str, name: str, flags: int, address: str) -> None:
        with netns(lab.ns(node)):
            self.fd, self.name = create_tun_dev(name, flags | IFF_NO_PI)
        # Ifconfig with ip(8): pyroute2's synchronous API cannot run inside Jupyter's loop
        lab.run(node, ["ip", "addr", "add", address, "dev", self.name], check=True)
        lab.run(node, ["ip", "link", "set", self.name, "up"], check=True)
        self.errors: list[str] = []
        self.written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve(self, answer: Answer) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                if not select.select([self.fd], [], [], 0.1)[0]:
                    continue
                packet = os.read(self.fd, MAX_DATAGRAM)
                try:
                    out = answer(packet)
                    if out is not None:
                        os.write(self.fd, bytes(out))
                        self.written += 1
                except Exception as exc:  # the student's bug: a fact of the check
                    self.errors.append(f"{type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        os.close(self.fd)


def _answer(function: Callable[..., object], *args: object) -> object:
    try:
        return function(*args)
    except Exception as exc:  # the student's bug: a fact of the check
        return exc


def _checksums_right(packet: bytes) -> bool:
    """An IPv4 packet whose header and ICMP checksums verify (the sum comes out 0)."""
    ihl = (packet[0] & 0x0F) * 4 if packet else 0
    return len(packet) > ihl >= 20 and internet_checksum(packet[:ihl]) == 0 == (
        internet_checksum(packet[ihl:])
    )


def check_echo_reply(lab: CourseLab, echo_reply: Answer) -> dict[str, bool]:
    """SEED 2.d: the student's echo replies written to a TUN device in r1, judged by ping, by
    their checksums (the kernel does not verify an ICMP checksum arriving from a TUN device),
    and by ``None`` for the other packets a TUN device sees."""
    device = Served(lab, "r1", "ex2d0", IFF_TUN, "10.66.0.1/24")
    written: list[bytes] = []

    def recorded(packet: bytes) -> bytes | None:
        out = echo_reply(packet)
        if out is not None:
            written.append(bytes(out))
        return out

    strays = [p for p in OTHER_PACKETS if _answer(echo_reply, p) is not None]
    try:
        device.serve(recorded)
        time.sleep(0.2)
        ping = lab.run("r1", ["ping", "-c", "3", "-i", "0.3", "-W", "1", "10.66.0.2"])
    finally:
        device.close()
    print(ping.stdout.strip().splitlines()[-2:] if ping.stdout else ping.stderr.strip())
    for error in device.errors[:3]:
        print("echo_reply:", error)
    return {
        "ping 10.66.0.2 through your TUN device: 3 packets transmitted, 3 received": (
            " 3 received" in ping.stdout
        ),
        "and both checksums of every reply right": bool(written)
        and all(_checksums_right(p) for p in written),
        "None for a UDP datagram and an IPv6 router solicitation, and nothing raised": not (
            device.errors or strays
        ),
    }


def check_arp_reply(
    lab: CourseLab, arp_reply: Callable[[bytes, str], bytes | None]
) -> dict[str, bool]:
    """SEED 9: the student's ARP replies written to a TAP device in web, judged by arping."""
    device = Served(lab, "web", "ex9tap0", IFF_TAP, "10.10.0.1/24")
    try:
        device.serve(lambda frame: arp_reply(frame, MAC))
        time.sleep(0.2)
        arping = lab.run("web", ["arping", "-c", "2", "-w", "4", "-I", device.name, "10.10.0.7"])
        lab.run("web", ["ip", "neigh", "flush", "dev", device.name])
        lab.run("web", ["ping", "-c", "1", "-W", "1", "10.10.0.7"])  # the kernel's own ARP
        neigh = lab.run("web", ["ip", "neigh", "show", "10.10.0.7", "dev", device.name]).stdout
        strays = [f for f in OTHER_FRAMES if _answer(arp_reply, f, MAC) is not None]
    finally:
        device.close()
    print(arping.stdout.strip() or arping.stderr.strip())
    print("ip neigh:", neigh.strip())
    for error in device.errors[:3]:
        print("arp_reply:", error)
    return {
        f"arping 10.10.0.7 answered with ARP replies from {MAC}": (
            f"reply from 10.10.0.7 [{MAC}]" in arping.stdout.lower()
        ),
        f"the kernel asked too, and its neighbour table holds 10.10.0.7 at {MAC}": (
            MAC in neigh.lower()
        ),
        "your function raised nothing (frames that are not ARP requests: None)": (
            not device.errors and not strays
        ),
    }
