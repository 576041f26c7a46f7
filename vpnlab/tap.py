"""CreateTunDev and Ifconfig for ``--mode tap``, and the classic ARP experiment on a TAP device.

``--mode tun`` (the notes) asks the kernel for ``IFF_TUN``: a read returns an IP packet.
``--mode tap`` asks for ``IFF_TAP``: a read returns a whole Ethernet frame (destination MAC,
source MAC, EtherType, payload), and the kernel treats tap0 like a network card: it sends ARP
requests out of it and expects ARP replies to come back in. The daemons then carry frames
(ESP next header 143, see ``esp.py``) and the server switches them (``bridge.py``), so the
server's tap0 and every client's tap0 are one Ethernet segment, 10.8.0.0/24.

The experiment (:func:`arp_experiment`, ``python -m vpnlab.tap`` inside a lab node): open a
TAP device by hand, make the kernel want a neighbour's MAC, read the ARP request it writes to
the device, answer it with a reply crafted in scapy, and watch the answer appear in
``ip neigh``: we played the other end of the wire.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import time
from ipaddress import IPv4Interface

from .errors import SetupError
from .tun import IFF_NO_PI, IFF_TAP, create_tun_dev, ifconfig

MODES = ("tun", "tap")
DEFAULT_MODE = "tun"
TAP_NAME = "tap0"
ETHERNET_HEADER_BYTES = 14
"""What a frame adds to the IP packet it carries: tap0's MTU is tun0's less these."""
ETH_P_ARP = 0x0806


def device_flags(mode: str, datapath: str = "simple") -> int:
    """CreateTunDev: the TUNSETIFF flags of ``--mode`` (tun: IP packets, tap: frames).

    Raises:
        SetupError: tap with the fast data path (its offloads are for IP packets).
    """
    if mode != "tap":
        from .fastpath import tun_flags

        return tun_flags(datapath)
    if datapath != "simple":
        raise SetupError("--mode tap runs the simple data path only (--datapath simple)")
    return IFF_TAP | IFF_NO_PI


def device_name(mode: str, name: str) -> str:
    """The interface name: ``tun0`` becomes ``tap0`` in TAP mode; other names stay."""
    return TAP_NAME if mode == "tap" and name == "tun0" else name


def device_mtu(mode: str, tun_mtu: int) -> int:
    """Ifconfig: in TAP mode the 14-byte Ethernet header travels too, so the MTU is smaller."""
    return tun_mtu - ETHERNET_HEADER_BYTES if mode == "tap" else tun_mtu


def mac_address(name: str) -> bytes:
    """Ifconfig: the MAC the kernel gave ``name`` (the server tells its switch about it).

    Raises:
        SetupError: no such interface.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise SetupError(f"no interface {name}")
        text = ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS")
    return bytes.fromhex(text.replace(":", ""))


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
        frame = os.read(fd, 65535)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m vpnlab.tap [--name tap9] ...``: run :func:`arp_experiment`, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m vpnlab.tap", description=__doc__)
    parser.add_argument("--name", default="tap9")
    parser.add_argument("--address", default="10.9.0.1/24")
    parser.add_argument("--neighbour", default="10.9.0.99")
    parser.add_argument("--mac", default="02:00:5e:00:53:99")
    args = parser.parse_args(argv)
    result = arp_experiment(args.name, args.address, args.neighbour, args.mac)
    print(json.dumps(result, indent=2))
    return 0


__all__ = ["MODES", "arp_experiment", "device_flags", "mac_address"]

if __name__ == "__main__":
    raise SystemExit(main())
