"""The lab's verbs: build it and start its services (``up``), prove it works, remove it.

``up`` applies a topology (``build.py``), starts who-am-I on the web node and the VPN
(``vpn.py``); ``verify`` pings and asks who-am-I from each client, through the tunnel if there
is one; ``down`` undoes everything recorded (``state.py``), also after a crash.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.core.pool import tunnel_address6
from vpnlab.core.reasons import State
from vpnlab.lab.build import build, listening, start_daemon
from vpnlab.lab.draw import WHOAMI_TOKEN, draw
from vpnlab.lab.inspection import status
from vpnlab.lab.nodes import check_environment, python_argv, run_in
from vpnlab.lab.records import LabRecord
from vpnlab.lab.rootless import check_lab_limit, labs_here
from vpnlab.lab.state import (
    DEFAULT_PREFIX,
    changing,
    load,
    prefix_namespaces,
    record_of,
    save,
    teardown,
    topology_of,
)
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, Topology
from vpnlab.lab.vpn import start_vpn, wait_started
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER


def up(
    prefix: str = DEFAULT_PREFIX,
    topology: Topology | None = None,
    cipher: str = DEFAULT_CIPHER,
    vpn: bool = True,
    nat: bool = True,
    mode: str = "tun",
    psk: bool = False,
) -> dict[str, Any]:
    """Build the lab (replacing any lab of the same prefix) and start its services.

    ``mode="tap"``: the daemons carry Ethernet frames (``--mode tap``, see ``vpnlab/shell/tap.py``).
    ``psk``: one shared key for every client (the notes' simple case) instead of an identity
    per client (see ``vpn.py``).

    Starts who-am-I on the web node and, unless ``vpn=False``, the VPN server and clients.
    ``nat=False``: the server forwards without masquerading (see :func:`route_back`).
    Returns :func:`status`. Raises LabError; a failed build is removed again, a VPN that does not
    connect is left running so its logs and state can be inspected. Runs in the lab's turn
    (``state.changing``): another command changing this lab waits until it is done.
    """
    check_environment()
    with changing(prefix):
        check_lab_limit(prefix, [name for name in labs_here() if name != prefix])
        topo = topology or DEFAULT_TOPOLOGY
        if cipher not in CIPHERS:
            raise LabError(f"unknown cipher {cipher!r} (choose from {', '.join(CIPHERS)})")
        if load(prefix) is not None or prefix_namespaces(prefix):
            teardown(prefix)
        record = LabRecord(
            prefix,
            topology=topo.to_dict(),
            drawn=draw(),  # per-lab values the course's live exercises compare with
            cipher=cipher,
            nat=nat,
            psk=psk,
        )
        save(record)
        try:
            build(prefix, topo, record)
            _start_web(prefix, topo, record)
        except BaseException:
            teardown(prefix)
            raise
        if vpn:
            start_vpn(prefix, cipher, mode=mode, psk=psk)
        return status(prefix)


def down(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """CleanUp: stop the lab's processes, delete its namespaces and state, in the lab's turn
    (``state.changing``). Idempotent."""
    check_environment()
    with changing(prefix):
        return teardown(prefix)


def _start_web(prefix: str, topo: Topology, record: LabRecord) -> None:
    listen = "::" if topo.dual_stack else topo.web_ip  # dual stack: one socket for both families
    argv = python_argv("-m", "vpnlab", "whoami", "--listen", listen)
    argv += ["--port", str(topo.web_port)]
    argv += ["--token", str(record.drawn.get(WHOAMI_TOKEN, ""))]
    pid = start_daemon(prefix, record, "whoami", topo.web, argv)
    log = record.daemons["whoami"].log
    took = wait_started(f"who-am-I on {topo.web}", pid, log, lambda: listening(pid, topo.web_port))
    record.daemons["whoami"].startup_s = round(took, 3)
    save(record)


# --- proof that it works ------------------------------------------------------------------------

_FETCH = (
    "import sys, urllib.request as u\n"
    "print(u.urlopen(sys.argv[1], timeout=3).read().decode().strip())"
)


def verify(prefix: str = DEFAULT_PREFIX, check: bool = True) -> dict[str, Any]:
    """Proof that it works, from each client: ping the web host, read who-am-I, check the route.

    With the VPN connected, who-am-I must say the server's address (the NAT rule; without NAT
    the client's tunnel address) and the route to the web host must leave through tun0;
    without the VPN, the client's own address and eth0. Dual stack: all of it for IPv6 too
    (fd10:8::1, web's 2001:db8:3::10, who-am-I over IPv6 seeing r2's 2001:db8:2::2: NAT66).
    Returns ``{"ok": bool, "vpn": bool, "checks": [{"node", "name", "ok", "detail"}]}``;
    with ``check`` (default) a failed check raises LabError.
    """
    check_environment()
    if shutil.which("ping") is None:
        raise LabError("ping not found: apt-get install iputils-ping")
    record = record_of(prefix)
    info = status(prefix)
    checks = []
    for client in topology_of(prefix).tunnel.clients:
        checks += _client_checks(prefix, record, info, client)
    ok = all(c["ok"] for c in checks)
    result = {"ok": ok, "vpn": record.vpn, "checks": checks}
    if check and not ok:
        failed = "; ".join(
            f"{c['node']}: {c['name']}: {c['detail']}" for c in checks if not c["ok"]
        )
        raise LabError(f"verify failed: {failed}")
    return result


def _client_checks(
    prefix: str, record: LabRecord, info: dict[str, Any], client: str
) -> list[dict[str, Any]]:
    """The checks of one client: connected, then for IPv4 and (dual stack) IPv6: pings, the
    route to web, who-am-I's answer."""
    topo = topology_of(prefix)
    tunnel = info["tunnel"]["clients"].get(client) or {}
    checks = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"node": client, "name": name, "ok": bool(ok), "detail": detail})

    if record.vpn:
        daemon = info["daemons"].get(f"client-{client}")
        ok = bool(daemon and daemon["alive"]) and tunnel.get("state") == State.CONNECTED
        add("vpn client connected", ok, f"status {tunnel.get('state', 'missing')}")
    eth0 = topo.node(client).interface("eth0")
    six = topo.dual_stack and record.mode != "tap" and eth0 is not None and eth0.ip6
    for family in (4, 6) if six else (4,):
        _family_checks(prefix, record, info, client, family, add)
    return checks


def _family_checks(
    prefix: str,
    record: LabRecord,
    info: dict[str, Any],
    client: str,
    family: int,
    add: Callable[[str, bool, str], None],
) -> None:
    """One family's checks: the server's tunnel address (10.8.0.1 or fd10:8::1) and web answer
    pings, the route to web leaves through tun0, who-am-I sees the server's public address of
    that family (NAT, NAT66), or without NAT the client's tunnel address."""
    topo = topology_of(prefix)
    vpn = record.vpn
    six = family == 6
    tunnel = info["tunnel"]["clients"].get(client) or {}
    web = topo.web_ip6 if six else topo.web_ip
    if vpn:
        server_tunnel = ipaddress.IPv4Interface(topo.tunnel.server_address)
        server_tunnel_ip = str(tunnel_address6(server_tunnel).ip if six else server_tunnel.ip)
        ping = _ping(prefix, client, server_tunnel_ip)
        add(f"ping {server_tunnel_ip} (server in the tunnel)", ping.returncode == 0, _summary(ping))
    ping = _ping(prefix, client, web)
    add(f"ping {web} (web)", ping.returncode == 0, _summary(ping))
    dev = _route_dev(prefix, client, web)
    want_dev = ("tap0" if record.mode == "tap" else "tun0") if vpn else "eth0"
    add(f"route to {web} via {want_dev}", dev == want_dev, f"dev {dev}")
    answer = _whoami(prefix, client, info["web6"] if six else info["web"])
    if not vpn:
        node = topo.node(client)
        want = node.address6("eth0") if six else node.address("eth0")
    elif record.nat:
        want = topo.server_ip6 if six else topo.server_ip
    else:  # no NAT: web sees the tunnel address (if the isp knows the way back)
        want = str(tunnel.get("tunnel_address6" if six else "tunnel_address", "?")).split("/")[0]
    over = " over IPv6" if six else ""
    add(f"who-am-I{over} says {want}", answer == f"you are {want}", answer)


def _ping(prefix: str, node: str, address: str) -> subprocess.CompletedProcess[str]:
    return run_in(prefix, node, ["ping", "-c", "2", "-i", "0.1", "-W", "2", address])


def _summary(result: subprocess.CompletedProcess[str]) -> str:
    """A ping's "2 packets transmitted, 2 received, ..." line (or what went wrong)."""
    lines = [line for line in (result.stdout or "").splitlines() if "transmitted" in line]
    return lines[0].strip() if lines else (result.stderr or "no output").strip()


def _route_dev(prefix: str, node: str, address: str) -> str | None:
    """The device ``ip route get`` picks in ``node`` for ``address``."""
    route = run_in(prefix, node, ["ip", "-j", "route", "get", address])
    try:
        dev = json.loads(route.stdout)[0].get("dev")
    except (ValueError, IndexError, AttributeError):
        return None
    return dev if isinstance(dev, str) else None


def _whoami(prefix: str, node: str, url: str) -> str:
    """who-am-I's answer to ``node`` (``you are ...``), or the reason there is none."""
    try:
        fetch = run_in(prefix, node, python_argv("-c", _FETCH, url), timeout=10)
    except subprocess.TimeoutExpired:
        return "timed out"
    errors = (fetch.stderr or "").strip().splitlines() or ["no answer"]
    return fetch.stdout.strip() or errors[-1]
