"""The namespace lab of DESIGN §3: build it, run the VPN in it, look inside, prove it, remove it.

    from vpnlab import lab
    lab.up()                       # r1, isp, r2, web; who-am-I on web; VPN server and client
    print(lab.format_status(lab.status()))
    lab.exec_in("vpnlab-", "r1", ["ip", "route"])
    lab.verify()                   # ping and who-am-I from r1, through the tunnel
    lab.down()                     # everything gone, also after a crash

Notebooks call the same through ``vpnlab lab ...`` in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

from vpnlab.cli.lab import format_status, format_verify
from vpnlab.core.errors import LabError
from vpnlab.lab import build, state
from vpnlab.lab.state import DEFAULT_PREFIX
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, Topology, load_topology, make_topology
from vpnlab.lab.vpn import SERVER_WAIT_S, read_status_file, route_back, start_vpn, stop_vpn
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TOPOLOGY",
    "CIPHERS",
    "Topology",
    "load_topology",
    "make_topology",
    "up",
    "down",
    "status",
    "format_status",
    "format_verify",
    "exec_in",
    "verify",
    "start_vpn",
    "stop_vpn",
    "route_back",
]


def up(
    prefix: str = DEFAULT_PREFIX,
    topology: Topology | None = None,
    cipher: str = DEFAULT_CIPHER,
    vpn: bool = True,
    nat: bool = True,
    mode: str = "tun",
) -> dict[str, Any]:
    """Build the lab (replacing any lab of the same prefix) and start its services.

    ``mode="tap"``: the daemons carry Ethernet frames (``--mode tap``, see ``vpnlab/tap.py``).

    Starts who-am-I on the web node and, unless ``vpn=False``, the VPN server and clients.
    ``nat=False``: the server forwards without masquerading (see :func:`route_back`).
    Returns :func:`status`. Raises LabError; a failed build is removed again, a VPN that does not
    connect is left running so its logs and state can be inspected.
    """
    build.check_environment()
    state.check_prefix(prefix)
    topo = topology or DEFAULT_TOPOLOGY
    if cipher not in CIPHERS:
        raise LabError(f"unknown cipher {cipher!r} (choose from {', '.join(CIPHERS)})")
    if state.load(prefix) is not None or state.prefix_namespaces(prefix):
        state.teardown(prefix)
    record = state.new_record(prefix, topology=topo.to_dict(), cipher=cipher, vpn=False, nat=nat)
    state.save(record)
    try:
        build.build(prefix, topo, record)
        _start_web(prefix, topo, record)
    except BaseException:
        state.teardown(prefix)
        raise
    if vpn:
        start_vpn(prefix, cipher, mode=mode)
    return status(prefix)


def down(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """CleanUp: stop the lab's processes, delete its namespaces and state. Idempotent."""
    build.check_environment()
    return state.teardown(prefix)


def _start_web(prefix: str, topo: Topology, record: dict[str, Any]) -> None:
    argv = [sys.executable, "-m", "vpnlab.whoami", "--listen", topo.web_ip]
    argv += ["--port", str(topo.web_port)]
    pid = build.start_daemon(prefix, record, "whoami", topo.web, argv)
    if not build.wait_for(
        lambda: build.listening(pid, topo.web_port) or not state.alive(pid), SERVER_WAIT_S
    ) or not state.alive(pid):
        log = record["daemons"]["whoami"]["log"]
        raise LabError(f"who-am-I did not start on {topo.web}:\n{build.log_tail(log)}")


# --- looking inside -----------------------------------------------------------------------------


def status(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """Nodes (addresses, routes), daemons (PID alive?, log) and tunnel state, as plain data."""
    build.check_environment()
    state.check_prefix(prefix)
    loaded = state.load(prefix)
    record = loaded or state.new_record(prefix)
    topo = state.topology_of(prefix)
    known = {state.namespace(prefix, n.name) for n in topo.nodes}
    nodes = {}
    for node in topo.nodes:
        ns = state.namespace(prefix, node.name)
        nodes[node.name] = {"namespace": ns, "role": node.role, **build.inspect_node(ns)}
    daemons = {
        name: {**info, "alive": state.alive(info.get("pid"))}
        for name, info in record.get("daemons", {}).items()
    }
    folder = state.state_dir(prefix)
    return {
        "prefix": prefix,
        "state_dir": str(folder),
        "recorded": loaded is not None,
        "up": any(n["exists"] for n in nodes.values()),
        "cipher": record.get("cipher"),
        "vpn": bool(record.get("vpn")),
        "nodes": nodes,
        "daemons": daemons,
        "tunnel": {
            "server": read_status_file(folder / "server.json"),
            "clients": {
                c: read_status_file(folder / f"client-{c}.json") for c in topo.tunnel.clients
            },
        },
        "web": f"http://{topo.web_ip}:{topo.web_port}/",
        "leftovers": [n for n in state.prefix_namespaces(prefix) if n not in known],
    }


def exec_in(
    prefix: str, node: str, argv: list[str], **subprocess_kwargs: Any
) -> subprocess.CompletedProcess:
    """Run ``argv`` inside ``node`` (``ip netns exec {prefix}{node} argv``); returns its result.

    Keyword arguments go to :func:`subprocess.run` (``check`` defaults to False).
    Raises LabError for an unknown node or a lab that is not up.
    """
    build.check_environment()
    state.check_prefix(prefix)
    state.topology_of(prefix).node(node)  # LabError naming the valid nodes
    ns = state.namespace(prefix, node)
    if not state.ns_exists(ns):
        raise LabError(f"namespace {ns} does not exist: is the lab up? (vpnlab lab up)")
    if not argv:
        raise LabError("no command given")
    if shutil.which(argv[0]) is None and "/" not in argv[0]:
        raise LabError(f"command not found: {argv[0]}")
    return subprocess.run(["ip", "netns", "exec", ns, *argv], **subprocess_kwargs)


_FETCH = (
    "import sys, urllib.request as u\n"
    "print(u.urlopen(sys.argv[1], timeout=3).read().decode().strip())"
)


def verify(prefix: str = DEFAULT_PREFIX, check: bool = True) -> dict[str, Any]:
    """Proof that it works, from each client: ping the web host, read who-am-I, check the route.

    With the VPN connected, who-am-I must say the server's address (the NAT rule; without NAT
    the client's tunnel address) and the route to the web host must leave through tun0;
    without the VPN, the client's own address and eth0.
    Returns ``{"ok": bool, "vpn": bool, "checks": [{"node", "name", "ok", "detail"}]}``;
    with ``check`` (default) a failed check raises LabError.
    """
    build.check_environment()
    if shutil.which("ping") is None:
        raise LabError("ping not found: apt-get install iputils-ping")
    record = state.record_of(prefix)
    topo = state.topology_of(prefix)
    info = status(prefix)
    checks = []

    def add(node: str, name: str, ok: bool, detail: str) -> None:
        checks.append({"node": node, "name": name, "ok": bool(ok), "detail": detail})

    url, vpn = info["web"], bool(record.get("vpn"))
    for client in topo.tunnel.clients:
        ns = state.namespace(prefix, client)
        daemon = info["daemons"].get(f"client-{client}")
        tunnel = info["tunnel"]["clients"].get(client) or {}
        if vpn:
            ok = bool(daemon and daemon["alive"]) and tunnel.get("state") == "connected"
            add(client, "vpn client connected", ok, f"status {tunnel.get('state', 'missing')}")
            server_tunnel_ip = topo.tunnel.server_address.split("/")[0]
            ping = build.run_in(ns, ["ping", "-c", "2", "-i", "0.1", "-W", "2", server_tunnel_ip])
            add(
                client,
                f"ping {server_tunnel_ip} (server in the tunnel)",
                ping.returncode == 0,
                _ping_summary(ping),
            )
        ping = build.run_in(ns, ["ping", "-c", "2", "-i", "0.1", "-W", "2", topo.web_ip])
        add(client, f"ping {topo.web_ip} (web)", ping.returncode == 0, _ping_summary(ping))
        route = build.run_in(ns, ["ip", "-j", "route", "get", topo.web_ip])
        try:
            dev = json.loads(route.stdout)[0].get("dev")
        except (ValueError, IndexError, AttributeError):
            dev = None
        want_dev = ("tap0" if record.get("mode") == "tap" else "tun0") if vpn else "eth0"
        add(client, f"route to web via {want_dev}", dev == want_dev, f"dev {dev}")
        try:
            fetch = build.run_in(ns, [sys.executable, "-c", _FETCH, url], timeout=10)
            errors = (fetch.stderr or "").strip().splitlines() or ["no answer"]
            answer = fetch.stdout.strip() or errors[-1]
        except subprocess.TimeoutExpired:
            answer = "timed out"
        if not vpn:
            want = topo.node(client).address("eth0")
        elif record.get("nat", True):
            want = topo.server_ip
        else:  # no NAT: web sees the tunnel address (if the isp knows the way back)
            want = str(tunnel.get("tunnel_address", "?")).split("/")[0]
        add(client, f"who-am-I says {want}", answer == f"you are {want}", answer)
    ok = all(c["ok"] for c in checks)
    result = {"ok": ok, "vpn": vpn, "checks": checks}
    if check and not ok:
        failed = "; ".join(
            f"{c['node']}: {c['name']}: {c['detail']}" for c in checks if not c["ok"]
        )
        raise LabError(f"verify failed: {failed}")
    return result


def _ping_summary(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stdout or "").splitlines() if "transmitted" in line]
    return lines[0].strip() if lines else (result.stderr or "no output").strip()
