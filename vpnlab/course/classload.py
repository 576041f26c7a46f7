"""One server, a whole class: ``vpnlab bench --clients N`` (``scripts/bench.sh --clients``).

In a lab of its own (prefix ``vclass-``, removed at the end, also when something fails) the
server runs as always (esp-aes-gcm, one shared PSK: the notes' simple case, so no peers file of
N keys is needed; the handshake is the real one, an X25519 exchange per Hello). N load clients
(``instruments/loadclients.py``: the project's ClientCore, one UDP socket each, no tun0) run
in this process with sockets made in r1's namespace (``notebook.netns``: this thread enters
it), each bound to an address of the lab internet: 192.0.2.3, .4, ... .252, one student's
machine each; past 250 clients they share them, up to four on one address with ports of their
own, as machines behind one NAT (the server allows 32 sessions per address, and each address's
Hello rate limit is far from empty with four). The tunnel's /24 holds 252 of them (r1's own
client has 10.8.0.2); the others get IPv6-only Welcomes (fd10:8::100 and up) and ping
fd10:8::1 with ICMPv6 instead. Then:

    one after another   each connects (Hello -> Welcome: the handshake latency) and pings
                        10.8.0.1 through the tunnel (an ESP-sealed ICMP echo, reply checked)
    idle                all N connected, keepalives only: the server's CPU over ``idle_s``,
                        its VmRSS before the first and with all N (the cost per client)
    all at once         every client says Bye, then all N Hellos at once, then all N pings

Every phase is bounded in time; a client that did not connect or got no reply is counted.
The whole class as students meet it (real users, a hub, their notebooks) is ``classhub.py``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypedDict

from vpnlab import lab
from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import PORT
from vpnlab.core.pool import tunnel_address6
from vpnlab.course.bench import cpu_ticks, say
from vpnlab.course.footprint import rss_kb
from vpnlab.course.notebook import netns
from vpnlab.instruments.loadclients import LoadClient, LoadDriver
from vpnlab.lab.nodes import namespace_of, run_in
from vpnlab.lab.state import state_dir
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, Topology
from vpnlab.shell.keys import read_psk
from vpnlab.wire.ciphers import make_format

CLASS_PREFIX = "vclass-"
MAX_CLIENTS = 1000
"""Four per source address at most (``SOURCE_ADDRESSES``); past the tunnel /24's 252 free
addresses each one IPv6 only."""
DEFAULT_CLIENTS = 250
"""``--clients`` without N: a large class, all of it dual stack."""
SOURCE_ADDRESSES = 250
"""192.0.2.3 to .252 on r1's eth0: one per client up to 250 clients, then shared."""
CIPHER = "esp-aes-gcm"
IDLE_S = 10.0
CONNECT_LIMIT_S = 5.0
"""One client's handshake, one after another (its core retries the Hello every 0.5 s)."""
SEQUENTIAL_LIMIT_S = 90.0
"""The whole of one after another: clients not yet tried by then are counted as not
connected."""
BURST_LIMIT_S = 30.0
"""All N handshakes at once (each core gives up after 2.5 s; the loop connects it again)."""


class Percentiles(TypedDict):
    """Median and p99, in milliseconds."""

    median: float
    p99: float


class Summary(TypedDict):
    """The load clients of a phase (:func:`summary`): how many connected (of them without an
    IPv4 address), answered a ping, sent a bad reply; handshake and ping times."""

    connected: int
    ipv6_only: int
    answered: int
    bad_replies: int
    handshake_ms: Percentiles | None
    ping_ms: Percentiles | None


class AtOnce(Summary):
    """:func:`all_at_once`: the :class:`Summary`, and how long making and sending every Hello
    took this process (ms)."""

    hellos_sent_ms: float


def class_load(
    count: int,
    prefix: str = CLASS_PREFIX,
    idle_s: float = IDLE_S,
    progress: Callable[[str], None] = say,
    topology: Topology = DEFAULT_TOPOLOGY,
) -> dict[str, Any]:
    """Build the lab, run the three phases with ``count`` load clients, remove the lab.
    ``topology``: the lab's (a tunnel network smaller than the /24 makes IPv6-only clients
    sooner, as the lab test does)."""
    topo = topology
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "clients": count,
        "cipher": CIPHER,
        "keying": "psk",
        "idle_s": idle_s,
        "load_average": os.getloadavg()[0],
    }
    progress(f"class: lab up ({prefix}, {CIPHER}, PSK) and {count} load clients on r1 ...")
    try:
        lab.up(prefix=prefix, topology=topo, cipher=CIPHER, psk=True)
        pid = lab.status(prefix)["daemons"]["server"]["pid"]
        psk = read_psk(state_dir(prefix) / "psk")
        fmt = make_format(CIPHER, psk)
        offset = time.time() - time.monotonic()
        server = (topo.server_ip, PORT)
        target = IPv4Interface(topo.tunnel.server_address)
        driver = LoadDriver(
            server,
            lambda: ClientCore(server, fmt.client_handshake(os.urandom), clock_offset_s=offset),
            target.ip,
            tunnel_address6(target).ip,
        )
        for sock in udp_sockets_in(prefix, "r1", source_addresses(prefix, count)):
            driver.add(sock)
        document["rss_before_kb"] = rss_kb(pid)
        progress("class: one after another ...")
        document["sequential"] = one_after_another(driver)
        document["rss_with_all_kb"] = rss_kb(pid)
        progress(f"class: all {count} connected and idle for {idle_s} s ...")
        document["idle_cpu_percent"] = idle_cpu(driver, pid, idle_s)
        progress("class: all at once ...")
        document["at_once"] = all_at_once(driver)
        document["kernel_drops"] = kernel_drops(prefix)
        driver.close()
    finally:
        lab.down(prefix)
    return document


def kernel_drops(prefix: str, node: str = "r2") -> dict[str, int]:
    """What the kernel dropped in ``node``'s namespace before the daemon saw it, so far: UDP
    datagrams a full receive buffer refused (``RcvbufErrors``, IPv4 and IPv6) and packets a
    full tun0 ring refused (its ``tx_dropped``)."""
    counters = ["nstat", "--json", "-asz", "UdpRcvbufErrors", "Udp6RcvbufErrors"]
    socket_drops = sum(
        json.loads(run_in(prefix, node, counters, check=True).stdout)["kernel"].values()
    )
    links = json.loads(run_in(prefix, node, ["ip", "-j", "-s", "link"], check=True).stdout)
    ring_drops = sum(
        link["stats64"]["tx"]["dropped"] for link in links if link["ifname"].startswith("tun")
    )
    return {"socket": socket_drops, "tun_ring": ring_drops}


def source_addresses(prefix: str, count: int) -> list[str]:
    """The source address of each of ``count`` load clients: 192.0.2.3 upwards on r1's
    eth0, one each, and past ``SOURCE_ADDRESSES`` clients the same ones again."""
    addresses = [str(IPv4Address("192.0.2.3") + i) for i in range(min(count, SOURCE_ADDRESSES))]
    for address in addresses:
        run_in(prefix, "r1", ["ip", "addr", "add", f"{address}/24", "dev", "eth0"], check=True)
    return [addresses[i % len(addresses)] for i in range(count)]


def udp_sockets_in(prefix: str, node: str, addresses: list[str]) -> list[socket.socket]:
    """A non-blocking UDP socket of ``node``'s namespace for each address (bound to it, any
    port): this thread enters the namespace once for all of them."""
    sockets = []
    with netns(namespace_of(prefix, node)):
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, 0))
            sock.setblocking(False)
            sockets.append(sock)
    return sockets


def _connected(client: LoadClient) -> Callable[[], bool]:
    return lambda: client.connected_at is not None


def _answered(client: LoadClient) -> Callable[[], bool]:
    return lambda: client.rtt_s is not None


def one_after_another(driver: LoadDriver) -> Summary:
    end = time.monotonic() + SEQUENTIAL_LIMIT_S
    for client in driver.clients:
        if time.monotonic() >= end:
            break
        driver.connect(client)
        if driver.run(_connected(client), CONNECT_LIMIT_S):
            driver.ping(client)
            driver.run(_answered(client), 2.0)
    return summary(driver.clients)


def idle_cpu(driver: LoadDriver, pid: int, idle_s: float) -> float:
    """The server's CPU (% of one core) while every load client only sends keepalives."""
    ticks, start = cpu_ticks(pid), time.monotonic()
    driver.run(lambda: False, idle_s)
    used = (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
    return round(100 * used / (time.monotonic() - start), 2)


def all_at_once(driver: LoadDriver) -> AtOnce:
    driver.close()
    driver.run(lambda: False, 1.0)  # the Byes arrive; the server forgets every session
    start = time.monotonic()
    for client in driver.clients:
        driver.connect(client)
    sending_s = time.monotonic() - start  # our own share: N Hellos made and sent in turn

    def all_connected() -> bool:
        for client in driver.clients:  # a core that gave up (2.5 s) tries again
            if client.connected_at is None and client.closed is not None:
                hello_at = client.hello_at
                driver.connect(client)
                client.hello_at = hello_at  # latency counts from the first Hello
        return all(c.connected_at is not None for c in driver.clients)

    driver.run(all_connected, BURST_LIMIT_S)
    for client in driver.clients:
        driver.ping(client)
    driver.run(lambda: all(c.rtt_s is not None for c in driver.clients), 10.0)
    return {**summary(driver.clients), "hellos_sent_ms": round(1e3 * sending_s, 1)}


def summary(clients: list[LoadClient]) -> Summary:
    """Connected and answered counts; median and p99 of handshake latency and ping RTT (ms)."""
    handshakes = [c.handshake_s for c in clients if c.handshake_s is not None]
    rtts = [c.rtt_s for c in clients if c.rtt_s is not None]
    sessions = [c.core.session for c in clients if c.connected_at is not None]
    return {
        "connected": len(handshakes),
        "ipv6_only": sum(1 for s in sessions if s is not None and s.tunnel_address is None),
        "answered": len(rtts),
        "bad_replies": sum(c.bad_replies for c in clients),
        "handshake_ms": percentiles(handshakes),
        "ping_ms": percentiles(rtts),
    }


def percentiles(values: list[float]) -> Percentiles | None:
    """Median and p99 in milliseconds (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": round(1e3 * statistics.median(ordered), 2), "p99": round(1e3 * p99, 2)}


def format_class_load(document: dict[str, Any]) -> str:
    """The result as a Markdown table and two lines (for the README)."""
    n = document["clients"]
    lines = [
        "| phase | connected | of them IPv6 only | handshake ms (median / p99) | answered pings "
        "| ping ms (median / p99) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, key in (("one after another", "sequential"), ("all at once", "at_once")):
        phase = document[key]
        lines.append(
            f"| {name} | {phase['connected']}/{n} | {phase['ipv6_only']} | "
            f"{_pair(phase['handshake_ms'])} | "
            f"{phase['answered']}/{n} | {_pair(phase['ping_ms'])} |"
        )
    per_client = (document["rss_with_all_kb"] - document["rss_before_kb"]) / n
    kernel = document["kernel_drops"]
    lines += [
        "",
        f"server RSS {document['rss_before_kb'] / 1024:.1f} MiB with one client, "
        f"{document['rss_with_all_kb'] / 1024:.1f} MiB with {n} more: {per_client:.1f} KiB "
        f"per client; server CPU with all {n} idle (keepalives): "
        f"{document['idle_cpu_percent']:.2f} % of a core over {document['idle_s']:g} s; "
        f"all at once: the load process took {document['at_once']['hellos_sent_ms']:.0f} ms "
        f"to make and send the {n} Hellos; the server's kernel dropped "
        f"{kernel['socket']} datagrams (full socket buffer) and {kernel['tun_ring']} packets "
        "(full tun0 ring)",
        f"{document['date']}, {os.cpu_count()} cores, load average "
        f"{document['load_average']:.2f} at the start; {document['cipher']}, "
        "PSK handshake, lightweight load clients (ClientCore + a UDP socket each, no tun0)",
    ]
    return "\n".join(lines)


def _pair(values: Percentiles | None) -> str:
    return "-" if values is None else f"{values['median']:.2f} / {values['p99']:.2f}"
