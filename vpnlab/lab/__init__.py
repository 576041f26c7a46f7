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

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LabError
from ..esp import generate_static_keys
from ..formats import CIPHERS, DEFAULT_CIPHER
from ..keys import new_psk, write_secret
from ..server_core import AddressPool
from . import build, state
from .cli import format_status, format_verify
from .state import DEFAULT_PREFIX
from .topology import DEFAULT_TOPOLOGY, Topology, from_dict, load_topology, make_topology

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
]

SERVER_WAIT_S = 3.0
CONNECT_WAIT_S = 5.0
"""ClientConnection, seen from the lab: how long ``up`` waits for the client to say connected."""


def _topology(prefix: str) -> Topology:
    record = state.load(prefix)
    if record and record.get("topology"):
        return from_dict(record["topology"])
    return DEFAULT_TOPOLOGY


def _record(prefix: str) -> dict[str, Any]:
    record = state.load(prefix)
    if record is None:
        raise LabError(f"no lab with prefix {prefix!r} is up (run: vpnlab lab up)")
    return record


def up(
    prefix: str = DEFAULT_PREFIX,
    topology: Topology | None = None,
    cipher: str = DEFAULT_CIPHER,
    vpn: bool = True,
    nat: bool = True,
) -> dict[str, Any]:
    """Build the lab (replacing any lab of the same prefix) and start its services.

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
        start_vpn(prefix, cipher)
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


# --- the VPN daemons ----------------------------------------------------------------------------


def _server_argv(topo: Topology, folder: Path, key_args: list[str], nat: bool) -> list[str]:
    argv = [sys.executable, "-m", "vpnlab", "server", "--listen", topo.server_ip]
    argv += ["--tunnel-address", topo.tunnel.server_address, *key_args]
    if nat:
        argv += ["--external-interface", topo.tunnel.external_interface]
    argv += ["--status-file", str(folder / "server.json")]
    argv += ["--esp-sa-file", str(folder / "esp_sa")]
    return argv + ["--nft-file", str(folder / f"{topo.tunnel.server}-nat.nft")]


def _client_argv(topo: Topology, node: str, folder: Path, key_args: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "vpnlab", "client", "--server", topo.server_ip, *key_args]
    return argv + ["--status-file", str(folder / f"client-{node}.json")]


def _lan_args(topo: Topology) -> tuple[list[str], dict[str, list[str]]]:
    """Site to site: the server's ``--client-network`` options and each client's ``--route``s.

    Clients start one after another and get 10.8.0.2, .3, ... in that order, so the lab knows
    which tunnel address stands for which LAN (as OpenVPN's iroute names a client).
    """
    pool = AddressPool(ipaddress.IPv4Interface(topo.tunnel.server_address))
    addresses = {client: pool.take() for client in topo.tunnel.clients}
    server_args: list[str] = []
    client_args: dict[str, list[str]] = {client: [] for client in topo.tunnel.clients}
    for gateway, network in topo.tunnel.lans:
        if gateway in addresses:
            server_args += ["--client-network", f"{addresses[gateway].ip}={network}"]
        for client in topo.tunnel.clients:
            if client != gateway:
                client_args[client] += ["--route", network]
    return server_args, client_args


def _key_args(folder: Path, cipher: str, static_keys: bool) -> tuple[list[str], Path | None]:
    """The daemons' key options, and the key file written for them (None for plain)."""
    if static_keys:
        path = folder / "static-keys.json"
        write_secret(path, generate_static_keys(cipher, os.urandom).to_json())
        return ["--static-keys", str(path)], path
    if cipher == "plain":
        return ["--cipher", cipher], None
    path = folder / "psk"
    new_psk(path)
    return ["--cipher", cipher, "--psk-file", str(path)], path


def read_status_file(path: str | Path) -> dict[str, Any] | None:
    """A daemon's JSON status file, or None if it is missing or half-written."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def start_vpn(
    prefix: str = DEFAULT_PREFIX,
    cipher: str | None = None,
    static_keys: bool = False,
    reconnect: bool = False,
    server_args: Sequence[str] = (),
    client_args: Sequence[str] = (),
    nat: bool | None = None,
) -> dict[str, Any]:
    """ServerConnection + ClientConnection in the lab: start the server, then each client.

    ``server_args`` and ``client_args`` are extra daemon options, e.g. ``["--datapath",
    "simple"]`` or ``["--mtu", "1400"]`` (the benchmark and the fast-path tests use them).

    With ``static_keys`` (an ESP cipher only) the daemons skip the handshake and read SPIs
    and keys from one file, as ``ip xfrm`` manual keying does (one client only). With
    ``reconnect`` the clients start again when they lose the server instead of exiting.
    ``nat`` (default: as the lab was built) turns the server's masquerade rule on or off.

    Stops VPN daemons already running first. Waits until every client's status file says
    ``connected`` (at most ``CONNECT_WAIT_S``). Returns the tunnel part of :func:`status`.
    Raises LabError with the end of the daemon's log when it dies or does not connect.
    """
    build.check_environment()
    record = _record(prefix)
    cipher = cipher or record.get("cipher") or DEFAULT_CIPHER
    if cipher not in CIPHERS:
        raise LabError(f"unknown cipher {cipher!r} (choose from {', '.join(CIPHERS)})")
    stop_vpn(prefix)
    record = _record(prefix)
    topo = _topology(prefix)
    folder = state.state_dir(prefix)
    if static_keys and (cipher == "plain" or len(topo.tunnel.clients) != 1):
        raise LabError("static keys need an ESP cipher and exactly one client")
    key_args, key_file = _key_args(folder, cipher, static_keys)
    record.update(cipher=cipher, vpn=True)
    if nat is not None:
        record["nat"] = nat
    status_files = [folder / "server.json"] + [
        folder / f"client-{node}.json" for node in topo.tunnel.clients
    ]
    for path in status_files:
        path.unlink(missing_ok=True)
    nft_file = folder / f"{topo.tunnel.server}-nat.nft"
    made = {str(p) for p in [*status_files, nft_file, *([key_file] if key_file else [])]}
    record["files"] = sorted(set(record["files"]) | made)
    server = topo.tunnel.server
    lan_server_args, lan_client_args = _lan_args(topo)
    pid = build.start_daemon(
        prefix,
        record,
        "server",
        server,
        [
            *_server_argv(topo, folder, key_args, record.get("nat", True)),
            *server_args,
            *lan_server_args,
        ],
    )
    build.wait_for(lambda: status_files[0].exists() or not state.alive(pid), SERVER_WAIT_S)
    if not state.alive(pid):
        log = record["daemons"]["server"]["log"]
        raise LabError(f"the VPN server on {server} exited:\n{build.log_tail(log)}")
    for node, path in zip(topo.tunnel.clients, status_files[1:], strict=True):
        name = f"client-{node}"
        argv = _client_argv(topo, node, folder, key_args) + (["--reconnect"] if reconnect else [])
        argv += [*client_args, *lan_client_args[node]]
        pid = build.start_daemon(prefix, record, name, node, argv)

        def connected(pid=pid, path=path) -> bool:
            info = read_status_file(path) or {}
            return info.get("state") == "connected" or not state.alive(pid)

        build.wait_for(connected, CONNECT_WAIT_S)
        if (read_status_file(path) or {}).get("state") != "connected":
            log = record["daemons"][name]["log"]
            why = "exited" if not state.alive(pid) else f"not connected after {CONNECT_WAIT_S} s"
            raise LabError(f"VPN client on {node} {why}:\n{build.log_tail(log)}")
    return status(prefix)["tunnel"]


def route_back(prefix: str = DEFAULT_PREFIX, add: bool = True) -> str:
    """Routing without NAT: teach the isp the way back to the tunnel network (via the server).

    Without NAT, web answers 10.8.0.2 itself; the isp has no route to 10.8.0.0/24 and drops
    the answer. This adds (or, with ``add=False``, removes) ``10.8.0.0/24 via 198.51.100.2``
    on the isp. Returns the route as ``ip route`` would write it.
    """
    topo = _topology(prefix)
    router = next(n.name for n in topo.nodes if n.role == "router")
    network = str(ipaddress.IPv4Interface(topo.tunnel.server_address).network)
    route = f"{network} via {topo.server_ip}"
    verb = "replace" if add else "del"
    argv = ["ip", "route", verb, *route.split()]
    if add or route in build.run_in(state.namespace(prefix, router), ["ip", "route"]).stdout:
        build.run_in(state.namespace(prefix, router), argv, check=True)
    return route


def stop_vpn(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """CleanUp of the VPN only: stop clients then server, put routes and forwarding back."""
    build.check_environment()
    record = _record(prefix)
    names = [n for n in record.get("daemons", {}) if n == "server" or n.startswith("client-")]
    done = state.stop_daemons(record, names)
    for name in names:
        record["daemons"].pop(name, None)
    record["vpn"] = False
    state.save(record)
    topo = _topology(prefix)
    for node in (*topo.tunnel.clients, topo.tunnel.server):
        _restore_node(prefix, topo, node)
    return done


def _restore_node(prefix: str, topo: Topology, name: str) -> None:
    """Undo what a killed daemon may have left: default route, NAT table, forwarding."""
    from ..constants import NAT_TABLE

    node = topo.node(name)
    ns = state.namespace(prefix, name)
    if not state.ns_exists(ns):
        return
    if node.gateway:
        build.run_in(ns, ["ip", "route", "replace", "default", "via", node.gateway])
    tables = build.run_in(ns, ["nft", "list", "tables"]).stdout if shutil.which("nft") else ""
    for line in tables.splitlines():
        parts = line.split()  # "table ip vpnlab"
        if len(parts) == 3 and parts[2] == NAT_TABLE:
            build.run_in(ns, ["nft", "delete", "table", parts[1], parts[2]])
    flag = "1" if node.forwarding else "0"
    build.run_in(ns, ["sysctl", "-qw", f"net.ipv4.ip_forward={flag}"])


# --- looking inside -----------------------------------------------------------------------------


def status(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """Nodes (addresses, routes), daemons (PID alive?, log) and tunnel state, as plain data."""
    build.check_environment()
    state.check_prefix(prefix)
    loaded = state.load(prefix)
    record = loaded or state.new_record(prefix)
    topo = _topology(prefix)
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
    _topology(prefix).node(node)  # LabError naming the valid nodes
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
    record = _record(prefix)
    topo = _topology(prefix)
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
        want_dev = "tun0" if vpn else "eth0"
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
