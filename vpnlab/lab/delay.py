"""Delay and jitter on the r1-r2 path: netem where the kernel has it, a userspace relay if not.

netem (``tc qdisc ... netem delay 50ms 10ms``) is the usual tool, but it is a kernel module
that not every kernel has (our CI kernel has none and loads none). The fallback does the same
job in the isp's namespace with a TUN device and policy routing:

    r2 --eth1--> [isp]  ip rule: from eth1 to r1's network -> table 4500: dev imp0
                         imp0 (TUN) --> this relay: hold each packet delay +- jitter, then
                         write it back into imp0 --> main table --> eth0 --> r1

Either way the delay is added once per round trip, on the way from r2 to r1 (as netem on one
interface does), so a ping r1 -> r2 grows by about ``delay_ms``. Jitter is uniform in
``[-jitter, +jitter]`` and, as with netem, may reorder packets. The relay is bounded: at most
``MAX_QUEUE`` packets held (more are dropped and counted) and ``MAX_DELAY_MS``; it is a lab
daemon (``impair-delay``), so ``down`` stops it, and its device, rule and routes live in the
isp's namespace and go with it.
"""

from __future__ import annotations

import heapq
import os
import random
import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.build import log_tail, start_daemon
from vpnlab.lab.nodes import python_argv, run_in, wait_for
from vpnlab.lab.state import alive, load, save, stop_daemons, topology_of
from vpnlab.shell.tun import create_tun_dev

DEVICE = "imp0"
TABLE = "4500"
RULE_PREF = "4500"
DAEMON = "impair-delay"
MAX_QUEUE = 20000
MAX_DELAY_MS = 5000.0


# --- the relay (runs inside the isp's namespace) ------------------------------------------------


def relay(
    tun_fd: int,
    delay_s: float,
    jitter_s: float,
    counters: Counter[str],
    stop: Callable[[], bool],
) -> None:
    """Hold every packet read from ``tun_fd`` for delay +- jitter, then write it back."""
    queue: list[tuple[float, int, bytes]] = []
    seq = 0
    while not stop():
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, packet = heapq.heappop(queue)
            try:
                os.write(tun_fd, packet)
                counters["released"] += 1
            except OSError:
                counters["write errors"] += 1
        timeout = min(1.0, max(0.0, queue[0][0] - now)) if queue else 1.0
        if not select.select([tun_fd], [], [], timeout)[0]:
            continue
        for _ in range(256):
            try:
                packet = os.read(tun_fd, 65535)
            except BlockingIOError:
                break
            if len(queue) >= MAX_QUEUE:
                counters["dropped: queue full"] += 1
                continue
            hold = max(0.0, delay_s + random.uniform(-jitter_s, jitter_s))
            heapq.heappush(queue, (time.monotonic() + hold, seq, packet))
            seq += 1
            counters["held"] += 1


def run_relay(device: str, delay_ms: float, jitter_ms: float = 0.0) -> int:
    """The relay daemon (``vpnlab lab relay --delay-ms 50 --jitter-ms 10``), in the isp.

    Opens ``device`` (TUN), brings it up and relays until SIGTERM or SIGINT; prints one line
    when it starts and one with its counters when it stops. Raises LabError for impossible
    values.
    """
    if not 0 <= delay_ms <= MAX_DELAY_MS or not 0 <= jitter_ms <= delay_ms:
        raise LabError(f"want 0 <= jitter <= delay <= {MAX_DELAY_MS} ms")
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    fd, name = create_tun_dev(device)
    os.set_blocking(fd, False)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    print(f"relay on {name}: delay {delay_ms} ms, jitter {jitter_ms} ms", flush=True)
    counters: Counter[str] = Counter()
    try:
        relay(fd, delay_ms / 1000, jitter_ms / 1000, counters, lambda: bool(stopping))
    finally:
        os.close(fd)
        print(f"relay stopped: {dict(counters)}", flush=True)
    return 0


# --- setting it up from the lab -----------------------------------------------------------------


def _sides(prefix: str) -> tuple[str, str, str]:
    """The isp node, its interface towards r2, and the clients' network."""
    topo = topology_of(prefix)
    router = next(n for n in topo.nodes if n.role == "router")
    server_ip = IPv4Address(topo.server_ip)
    client = topo.node(topo.tunnel.clients[0])
    client_net = IPv4Interface(client.interfaces[0].address).network
    toward_server = next(
        i.name for i in router.interfaces if server_ip in IPv4Interface(i.address).network
    )
    return router.name, toward_server, str(client_net)


def toward_client_interface(prefix: str) -> str:
    """The isp's interface towards the clients (where netem would sit)."""
    topo = topology_of(prefix)
    router = next(n for n in topo.nodes if n.role == "router")
    client = topo.node(topo.tunnel.clients[0])
    net = IPv4Interface(client.interfaces[0].address).network
    return next(i.name for i in router.interfaces if IPv4Interface(i.address).network == net)


def netem_available(prefix: str, node: str) -> bool:
    """Does this kernel have netem? Tried on the node's own ``lo``, then removed."""
    probe = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
    if run_in(prefix, node, probe).returncode != 0:
        return False
    run_in(prefix, node, ["tc", "qdisc", "del", "dev", "lo", "root"])
    return True


def set_delay(prefix: str, delay_ms: float, jitter_ms: float = 0.0) -> str:
    """Add ``delay_ms`` (+- ``jitter_ms``) from r2 to r1; 0 removes it.

    Returns how: ``"netem"``, ``"relay"`` (the userspace fallback) or ``"none"``.
    Raises LabError for impossible values or a relay that does not start.
    """
    if not 0 <= delay_ms <= MAX_DELAY_MS or not 0 <= jitter_ms <= max(delay_ms, 0):
        raise LabError(f"want 0 <= jitter ({jitter_ms}) <= delay ({delay_ms}) <= {MAX_DELAY_MS}")
    clear_delay(prefix)
    if delay_ms == 0:
        return "none"
    router, toward_server, client_net = _sides(prefix)
    if netem_available(prefix, router):
        itf = toward_client_interface(prefix)
        argv = ["tc", "qdisc", "replace", "dev", itf, "root", "netem", "delay", f"{delay_ms}ms"]
        run_in(prefix, router, argv + ([f"{jitter_ms}ms"] if jitter_ms else []), check=True)
        return "netem"
    _start_relay(prefix, router, delay_ms, jitter_ms)
    for key in ("all", DEVICE, toward_server):
        run_in(prefix, router, ["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"], check=True)
    route = ["ip", "route", "replace", client_net, "dev", DEVICE, "table", TABLE]
    run_in(prefix, router, route, check=True)
    rule = ["iif", toward_server, "to", client_net, "lookup", TABLE, "pref", RULE_PREF]
    run_in(prefix, router, ["ip", "rule", "add", *rule], check=True)
    return "relay"


def _start_relay(prefix: str, router: str, delay_ms: float, jitter_ms: float) -> None:
    """Start the relay daemon in ``router``; wait until its device is up (LabError if not)."""
    record = load(prefix)
    if record is None:
        raise LabError(f"no lab with prefix {prefix!r} is up")
    argv = python_argv("-m", "vpnlab", "lab", "relay", "--delay-ms", str(delay_ms))
    pid = start_daemon(prefix, record, DAEMON, router, argv + ["--jitter-ms", str(jitter_ms)])
    if not wait_for(lambda: _device_up(prefix, router) or not alive(pid), 5.0) or not alive(pid):
        log = record.daemons[DAEMON].log
        clear_delay(prefix)
        raise LabError(f"the delay relay did not start:\n{log_tail(log)}")


def _device_up(prefix: str, node: str) -> bool:
    return ",UP" in run_in(prefix, node, ["ip", "-o", "link", "show", "dev", DEVICE]).stdout


def clear_delay(prefix: str) -> None:
    """Remove the delay (netem qdisc, or the relay with its rule, route and device)."""
    router, _, _ = _sides(prefix)
    run_in(prefix, router, ["tc", "qdisc", "del", "dev", toward_client_interface(prefix), "root"])
    for _ in range(8):
        if run_in(prefix, router, ["ip", "rule", "del", "pref", RULE_PREF]).returncode != 0:
            break
    run_in(prefix, router, ["ip", "route", "flush", "table", TABLE])
    record = load(prefix)
    if record and DAEMON in record.daemons:
        stop_daemons(record, [DAEMON])
        record.daemons.pop(DAEMON, None)
        save(record)


def describe(prefix: str) -> dict[str, Any]:
    """What delay is in place: the netem qdisc line, or the relay's PID and rule."""
    router, _, _ = _sides(prefix)
    qdisc = run_in(prefix, router, ["tc", "qdisc", "show", "dev", toward_client_interface(prefix)])
    rules = run_in(prefix, router, ["ip", "rule", "show", "pref", RULE_PREF]).stdout.strip()
    record = load(prefix)
    daemon = record.daemons.get(DAEMON) if record else None
    return {
        "netem": "netem" in qdisc.stdout,
        "relay_pid": daemon.pid if daemon and alive(daemon.pid) else None,
        "relay_argv": daemon.argv if daemon else None,
        "rule": rules or None,
    }
