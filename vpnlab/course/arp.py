"""The classic TAP experiment: play the other end of the wire, and make the kernel believe us.

Run inside a lab node (``vpnlab arp-experiment`` there, or ``CourseLab.arp_experiment``): open a
TAP device by hand, make the kernel want a neighbour's MAC, read the ARP request it writes to
the device, answer it with a reply crafted in scapy, and watch the answer appear in
``ip neigh``. The daemons' TAP mode is ``vpnlab/shell/tap.py``; this is the course's experiment.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from ipaddress import IPv4Interface

from vpnlab.core.constants import MAX_DATAGRAM
from vpnlab.core.errors import SetupError
from vpnlab.shell.tun import IFF_NO_PI, IFF_TAP, create_tun_dev, ifconfig

ETH_P_ARP = 0x0806


def read_arp_request(fd: int, target: str, timeout_s: float) -> bytes:
    """Read frames from the TAP fd until an ARP request for ``target`` (others are skipped).

    Raises:
        SetupError: none within ``timeout_s``.
    """
    from scapy.layers.l2 import ARP, Ether

    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        frame = os.read(fd, MAX_DATAGRAM)
        packet = Ether(frame)
        if ARP in packet and packet[ARP].op == 1 and packet[ARP].pdst == target:
            return frame
    raise SetupError(f"no ARP request for {target} within {timeout_s} s")


def arp_reply(request: bytes, mac: str) -> bytes:
    """The answer to an ARP request: "``pdst`` is at ``mac``", crafted with scapy."""
    from scapy.layers.l2 import ARP, Ether

    asked = Ether(request)[ARP]
    reply = Ether(dst=asked.hwsrc, src=mac, type=ETH_P_ARP) / ARP(
        op=2, hwsrc=mac, psrc=asked.pdst, hwdst=asked.hwsrc, pdst=asked.psrc
    )
    return bytes(reply)


def arp_experiment(
    name: str = "tap9",
    address: str = "10.9.0.1/24",
    neighbour: str = "10.9.0.99",
    mac: str = "02:00:5e:00:53:99",
    timeout_s: float = 3.0,
) -> dict[str, str]:
    """The classic TAP experiment, in the current network namespace (run it in a lab node).

    1. CreateTunDev with ``IFF_TAP | IFF_NO_PI``, Ifconfig ``address``
    2. send one UDP datagram to ``neighbour``: the kernel must learn its MAC first, so it
       writes an ARP request ("who has ``neighbour``?") into our TAP device
    3. read that request, answer "``neighbour`` is at ``mac``" with a scapy-crafted reply
    4. ``ip neigh`` now lists ``neighbour lladdr mac``: the kernel believed us

    Returns:
        ``request`` and ``reply`` (tcpdump-style summaries and hex) and the ``neigh`` line.

    Raises:
        SetupError: no TAP device, or no ARP request arrived.
    """
    from scapy.layers.l2 import Ether

    fd, actual = create_tun_dev(name, IFF_TAP | IFF_NO_PI)
    try:
        ifconfig(actual, IPv4Interface(address), 1500)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"hello, neighbour", (neighbour, 9))
        request = read_arp_request(fd, neighbour, timeout_s)
        reply = arp_reply(request, mac)
        os.write(fd, reply)
        neigh = ""
        for _ in range(20):
            neigh = subprocess.run(
                ["ip", "neigh", "show", neighbour, "dev", actual],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if "lladdr" in neigh:
                break
            time.sleep(0.05)
        return {
            "device": actual,
            "request": Ether(request).summary(),
            "request_hex": request.hex(),
            "reply": Ether(reply).summary(),
            "reply_hex": reply.hex(),
            "neigh": neigh,
        }
    finally:
        os.close(fd)
