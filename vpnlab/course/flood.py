"""The server under a handshake flood: ``vpnlab bench --flood`` (issue 27, DESIGN section 7).

In a lab of its own (prefix ``vflood-``, removed at the end, also when something fails), the
identity mode as always: r1's client daemon keeps its tunnel up, and ``clients`` more peers
(250 by default) are added to the server's ``peers.toml`` (the running server reloads it);
their load clients (``instruments/loadclients.py``: ClientCore and a UDP socket each, an
identity each) sit on r1's addresses 192.0.2.3 upwards. Three phases, each bounded:

    baseline   no flood
    junk       one source (192.0.2.200, from the isp node) sends 12,000 Hellos/s whose mac1
               is wrong: each costs the server one hash
    mac1       250 spoofed sources (203.0.113.2 upwards) send 4,000 Hellos/s in total whose
               mac1 is right and mac2 zero: the server is under load, so each gets a cookie
               reply (that no spoofed source reads) instead of a Diffie-Hellman

In each: r1 pings the server's tunnel address through the tunnel (50 a second: loss, median
and p99 RTT), all load clients say Bye and then connect at once (each gets a cookie reply
first while the server is under load, and comes back with mac2), each pings through its own
session, and they keep their sessions alive (keepalives) until r1's ping ends; the server's
CPU over the phase and its drop counters are read. r1's ping is summed up three times: over
the whole phase, over the pings sent while the load clients connect (from their Byes to
their last ping's answer), and over the others, sent while only the flood runs (``ping -D``
stamps each answer; a lost ping goes to the window of its neighbours). The flood
(``instruments/flood.py``) is bounded in rate, count and time, and stops by itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, TypedDict

from vpnlab import lab
from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import PORT
from vpnlab.core.formats import Peer
from vpnlab.core.reasons import Drop
from vpnlab.course.bench import cpu_ticks, say
from vpnlab.course.classload import (
    AtOnce,
    Percentiles,
    all_at_once,
    kernel_drops,
    percentiles,
    source_addresses,
)
from vpnlab.instruments.loadclients import LoadDriver
from vpnlab.lab.nodes import popen_in, python_argv, udp_socket_in
from vpnlab.lab.state import state_dir
from vpnlab.lab.topology import DEFAULT_TOPOLOGY
from vpnlab.shell.keys import read_secret, write_secret
from vpnlab.shell.peers import PEERS, SERVER_KEY, decode_key, encode_key, peers_text, read_peers
from vpnlab.wire.identity import ClientIdentity, IdentityFormat
from vpnlab.wire.noise import public_key

FLOOD_PREFIX = "vflood-"
CIPHER = "esp-aes-gcm"
CLIENTS = 250
FLOOD_S = 20.0
PING_INTERVAL_S = 0.02
FLOODS = {
    "junk": ["--kind", "junk", "--rate", "12000", "--sources", "192.0.2.200", "--count", "1"],
    "mac1": ["--kind", "mac1", "--rate", "4000", "--sources", "203.0.113.2", "--count", "250"],
}
"""The review's two floods (issue 27)."""
COUNTERS = (
    Drop.BAD_MAC1,
    Drop.UNDER_LOAD_COOKIE_SENT,
    Drop.HELLO_RATE_LIMIT,
    Drop.HANDSHAKE_QUEUE_FULL,
    Drop.BAD_HELLO,
)


class PingSummary(TypedDict):
    """:func:`ping_summary`: pings sent, the loss (%, None: none sent), RTTs (ms)."""

    sent: int
    loss_percent: float | None
    rtt_ms: Percentiles | None


class Window(TypedDict):
    """The pings of one window of :func:`ping_windows`: sent, lost, RTTs (ms)."""

    sent: int
    lost: int
    rtt_ms: Percentiles | None


class Clients(AtOnce):
    """The load clients of a phase, all at once, and the slowest handshake (ms)."""

    slowest_handshake_ms: float | None


class Phase(TypedDict):
    """One phase of :func:`flood_bench` (:func:`phase`): what the flood sender said, r1's
    ping (whole, while the clients connect, flood only), the load clients, the server's CPU
    (%), its drop counters and its kernel's drops during the phase."""

    flood: str
    ping: PingSummary
    ping_connects: Window
    ping_flood_only: Window
    clients: Clients
    server_cpu_percent: float
    drops: dict[Drop, int]
    kernel_drops: dict[str, int]


def flood_bench(
    prefix: str = FLOOD_PREFIX,
    clients: int = CLIENTS,
    flood_s: float = FLOOD_S,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Build the lab, add the peers, run the three phases, remove the lab."""
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "uptime": Path("/proc/loadavg").read_text().strip(),
        "clients": clients,
        "flood_s": flood_s,
        "cpus": os.cpu_count(),
    }
    progress(f"flood: lab up ({prefix}, identity mode) and {clients} peers ...")
    try:
        lab.up(prefix=prefix, cipher=CIPHER)
        folder = state_dir(prefix) / "identity"
        server_key = public_key(decode_key(read_secret(folder / SERVER_KEY, "key"), "key"))
        keys = add_peers(folder, clients)
        driver = load_driver(prefix, server_key, keys)
        pid = lab.status(prefix)["daemons"]["server"]["pid"]
        for name, argv in [("baseline", None), *FLOODS.items()]:
            progress(f"flood: {name} ...")
            flood = None
            if argv is not None:
                flood = [*argv, "--server", DEFAULT_TOPOLOGY.server_ip]
                flood += ["--server-key", encode_key(server_key)]
            document[name] = phase(prefix, driver, pid, flood, flood_s)
        driver.close()
    finally:
        lab.down(prefix)
    return document


def add_peers(folder: Path, count: int) -> list[bytes]:
    """``count`` peers more in ``peers.toml`` (10.8.0.3 upwards), written once; the running
    server reloads the file within a second. Returns their private keys."""
    peers = read_peers(folder)
    keys = [os.urandom(32) for _ in range(count)]
    new = tuple(
        Peer(f"load{i}", public_key(key), IPv4Interface(f"{IPv4Address('10.8.0.3') + i}/24"))
        for i, key in enumerate(keys)
    )
    write_secret(folder / PEERS, peers_text(peers + new))
    time.sleep(2.5)  # the server's once-a-second reload
    return keys


def load_driver(prefix: str, server_key: bytes, keys: list[bytes]) -> LoadDriver:
    """One load client per key, on r1's addresses 192.0.2.3 upwards."""
    server = (DEFAULT_TOPOLOGY.server_ip, PORT)
    offset = time.time() - time.monotonic()

    def maker(key: bytes) -> Callable[[], ClientCore]:
        fmt = IdentityFormat(CIPHER, client=ClientIdentity(key, server_key))
        return lambda: ClientCore(server, fmt.client_handshake(os.urandom), clock_offset_s=offset)

    target = IPv4Interface(DEFAULT_TOPOLOGY.tunnel.server_address).ip
    driver = LoadDriver(server, maker(keys[0]), target)
    for address, key in zip(source_addresses(prefix, len(keys)), keys, strict=True):
        driver.add(udp_socket_in(prefix, "r1", address), maker(key))
    return driver


def phase(
    prefix: str, driver: LoadDriver, pid: int, flood: list[str] | None, flood_s: float
) -> Phase:
    """One phase: the flood (if any), r1's ping through the tunnel, all clients at once."""
    before, ticks, start = server_drops(prefix), cpu_ticks(pid), time.monotonic()
    kernel_before = kernel_drops(prefix)
    sender = None
    if flood is not None:
        argv = python_argv("-m", "vpnlab.cli.flood", *flood, "--seconds")
        sender = popen_in(prefix, "isp", [*argv, str(flood_s)], stdout=subprocess.PIPE, text=True)
    driver.run(lambda: False, 1.0)  # the flood under way (and the server under load)
    count = int((flood_s - 3.0) / PING_INTERVAL_S)
    tunnel_ip = str(IPv4Interface(DEFAULT_TOPOLOGY.tunnel.server_address).ip)
    ping_argv = [
        "ping",
        "-n",
        "-D",
        "-i",
        str(PING_INTERVAL_S),
        "-c",
        str(count),
        "-W",
        "1",
        tunnel_ip,
    ]
    ping = popen_in(prefix, "r1", ping_argv, stdout=subprocess.PIPE, text=True)
    connects_from = time.time()
    clients = all_at_once(driver)
    connects = (connects_from, time.time())
    driver.run(lambda: ping.poll() is not None, flood_s + 30)  # their keepalives, as a client's
    slowest = max((c.handshake_s for c in driver.clients if c.handshake_s), default=None)
    ping_out = ping.communicate(timeout=flood_s + 30)[0]
    sent = sender.communicate(timeout=flood_s + 30)[0].strip() if sender else ""
    cpu_s = (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
    after = server_drops(prefix)
    windows = ping_windows(ping_out, connects)
    return {
        "flood": sent,
        "ping": ping_summary(ping_out),
        "ping_connects": windows["connects"],
        "ping_flood_only": windows["flood_only"],
        "clients": {
            **clients,
            "slowest_handshake_ms": round(1e3 * slowest, 1) if slowest else None,
        },
        "server_cpu_percent": round(100 * cpu_s / (time.monotonic() - start), 1),
        "drops": {k: after.get(k, 0) - before.get(k, 0) for k in COUNTERS},
        "kernel_drops": {k: v - kernel_before[k] for k, v in kernel_drops(prefix).items()},
    }


def server_drops(prefix: str) -> dict[str, int]:
    """The server's drop counters from its status file."""
    import json

    try:
        status = json.loads((state_dir(prefix) / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    drops: dict[str, int] = status.get("counters", {}).get("drops", {})
    return drops


def ping_summary(output: str) -> PingSummary:
    """Loss (%) and the RTTs' median and p99 (ms) of ``ping``'s output."""
    rtts = [float(t) / 1e3 for t in re.findall(r"time=([\d.]+) ms", output)]
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    transmitted, received = (int(sent[1]), int(sent[2])) if sent else (0, 0)
    loss = round(100 * (transmitted - received) / transmitted, 2) if transmitted else None
    return {"sent": transmitted, "loss_percent": loss, "rtt_ms": percentiles(rtts)}


PING_LINE = re.compile(r"^\[([\d.]+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms", re.MULTILINE)


def ping_windows(output: str, connects: tuple[float, float]) -> dict[str, Window]:
    """``ping -D``'s output split by when each ping was sent (the answer's wall-clock stamp
    minus its RTT): ``connects``, inside the window (wall clock) while the load clients
    connect, and ``flood_only``, the others. A ping without an answer is sent when its
    nearest answered neighbour (by ``icmp_seq``) was. Each: sent, lost, and the RTTs'
    median and p99 (ms)."""
    sent_at: dict[int, float] = {}
    rtts: dict[int, float] = {}
    for stamp, seq, rtt_ms in PING_LINE.findall(output):
        rtts[int(seq)] = float(rtt_ms) / 1e3
        sent_at[int(seq)] = float(stamp) - rtts[int(seq)]
    total = re.search(r"(\d+) packets transmitted", output)
    windows: dict[str, tuple[list[float], list[int]]] = {
        "connects": ([], []),
        "flood_only": ([], []),
    }
    if not sent_at or total is None:
        return {name: {"sent": 0, "lost": 0, "rtt_ms": None} for name in windows}
    answered = sorted(sent_at)
    for seq in range(1, int(total[1]) + 1):
        nearest = seq if seq in sent_at else min(answered, key=lambda s: abs(s - seq))
        inside = connects[0] <= sent_at[nearest] <= connects[1]
        values, lost = windows["connects" if inside else "flood_only"]
        if seq in rtts:
            values.append(rtts[seq])
        else:
            lost.append(seq)
    return {
        name: {"sent": len(values) + len(lost), "lost": len(lost), "rtt_ms": percentiles(values)}
        for name, (values, lost) in windows.items()
    }


def format_flood(document: dict[str, Any]) -> str:
    """The result as a Markdown table and a line on the machine."""
    n = document["clients"]
    lines = [
        "| phase | ping loss | ping ms (median / p99) | while connecting: lost, ms "
        "(median / p99) | flood only: lost, ms (median / p99) | clients connected | "
        "handshake ms (median / p99 / slowest) | server CPU | bad mac1 | cookie replies | "
        "rate limited | echoes answered | server's kernel dropped (socket / tun0 ring) |",
        "|---|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("baseline", *FLOODS):
        phase = document[name]
        ping, clients, drops = phase["ping"], phase["clients"], phase["drops"]
        windows = " | ".join(
            f"{w['lost']}/{w['sent']}, {_pair(w['rtt_ms'], '.2f')}"
            for w in (phase["ping_connects"], phase["ping_flood_only"])
        )
        lines.append(
            f"| {name} | {ping['loss_percent']} % | {_pair(ping['rtt_ms'], '.2f')} | {windows} | "
            f"{clients['connected']}/{n} | {_pair(clients['handshake_ms'], '.0f')} / "
            f"{clients['slowest_handshake_ms']} | {phase['server_cpu_percent']} % | "
            f"{drops[Drop.BAD_MAC1]} | {drops[Drop.UNDER_LOAD_COOKIE_SENT]} | "
            f"{drops[Drop.HELLO_RATE_LIMIT]} | {clients['answered']}/{n} | "
            f"{phase['kernel_drops']['socket']} / {phase['kernel_drops']['tun_ring']} |"
        )
    lines.append(
        f"\n{document['date']}, {document['cpus']} cores, /proc/loadavg at the start: "
        f"{document['uptime']}; floods of {document['flood_s']:g} s: "
        + "; ".join(f"{k}: {document[k]['flood']}" for k in FLOODS)
    )
    return "\n".join(lines)


def _pair(values: Percentiles | None, spec: str) -> str:
    if values is None:
        return "-"
    return f"{format(values['median'], spec)} / {format(values['p99'], spec)}"
