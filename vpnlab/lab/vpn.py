"""ServerConnection + ClientConnection in the lab: start, stop and configure the VPN daemons.

The lab starts each daemon with ``ip netns exec`` in its node (``build.start_daemon``), passes
it the keys it needs, and waits for its status file to say it is connected.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpnlab.core.constants import NAT_TABLE
from vpnlab.core.errors import LabError
from vpnlab.core.pool import AddressPool
from vpnlab.keys import new_psk, write_secret
from vpnlab.lab.build import log_tail, start_daemon
from vpnlab.lab.inspection import read_status_file, status
from vpnlab.lab.nodes import check_environment, run_in, wait_for
from vpnlab.lab.state import (
    DEFAULT_PREFIX,
    alive,
    namespace,
    ns_exists,
    record_of,
    save,
    state_dir,
    stop_daemons,
    topology_of,
)
from vpnlab.lab.topology import Topology
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER
from vpnlab.wire.esp import generate_static_keys

SERVER_WAIT_S = 3.0
CONNECT_WAIT_S = 5.0
"""ClientConnection, seen from the lab: how long ``up`` waits for the client to say connected."""


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


def start_vpn(
    prefix: str = DEFAULT_PREFIX,
    cipher: str | None = None,
    static_keys: bool = False,
    reconnect: bool = False,
    server_args: Sequence[str] = (),
    client_args: Sequence[str] = (),
    nat: bool | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """ServerConnection + ClientConnection in the lab: start the server, then each client.

    ``server_args`` and ``client_args`` are extra daemon options, e.g. ``["--datapath",
    "simple"]`` or ``["--mtu", "1400"]`` (the benchmark and the fast-path tests use them).

    With ``static_keys`` (an ESP cipher only) the daemons skip the handshake and read SPIs
    and keys from one file, as ``ip xfrm`` manual keying does (one client only). With
    ``reconnect`` the clients start again when they lose the server instead of exiting.
    ``nat`` (default: as the lab was built) turns the server's masquerade rule on or off.
    ``mode`` ``"tap"`` (default: as last started, else ``"tun"``; ``--mode tap`` in both
    ``server_args`` and ``client_args`` counts too) makes both ends carry Ethernet frames.

    Stops VPN daemons already running first. Waits until every client's status file says
    ``connected`` (at most ``CONNECT_WAIT_S``). Returns the tunnel part of :func:`status`.
    Raises LabError with the end of the daemon's log when it dies or does not connect.
    """
    check_environment()
    cipher = cipher or record_of(prefix).get("cipher") or DEFAULT_CIPHER
    if cipher not in CIPHERS:
        raise LabError(f"unknown cipher {cipher!r} (choose from {', '.join(CIPHERS)})")
    stop_vpn(prefix)
    record = record_of(prefix)
    topo = topology_of(prefix)
    folder = state_dir(prefix)
    if static_keys and (cipher == "plain" or len(topo.tunnel.clients) != 1):
        raise LabError("static keys need an ESP cipher and exactly one client")
    key_args, key_file = _key_args(folder, cipher, static_keys)
    mode, server_args, client_args = _mode_args(mode, record, server_args, client_args)
    record.update(cipher=cipher, vpn=True, mode=mode)
    if nat is not None:
        record["nat"] = nat
    _fresh_files(record, topo, folder, key_file)
    lan_server_args, lan_client_args = _lan_args(topo)
    server_argv = _server_argv(topo, folder, key_args, record.get("nat", True))
    _start_server(prefix, record, [*server_argv, *server_args, *lan_server_args])
    for node in topo.tunnel.clients:
        argv = _client_argv(topo, node, folder, key_args) + (["--reconnect"] if reconnect else [])
        _start_client(prefix, record, node, [*argv, *client_args, *lan_client_args[node]])
    return status(prefix)["tunnel"]


def _mode_args(
    mode: str | None, record: dict[str, Any], server_args: Sequence[str], client_args: Sequence[str]
) -> tuple[str, list[str], list[str]]:
    """The mode (given, else ``--mode`` among the daemon options, else as last started, else
    tun) and both daemons' options with ``--mode`` added where it is missing."""
    given = [*server_args, *client_args]
    if mode is None and "--mode" in given:
        mode = given[given.index("--mode") + 1]
    mode = mode or record.get("mode") or "tun"
    if mode not in ("tun", "tap"):
        raise LabError(f"unknown mode {mode!r} (choose tun or tap)")
    if mode == "tun":
        return mode, list(server_args), list(client_args)
    server_args, client_args = (  # both ends or neither
        list(args) if "--mode" in args else ["--mode", mode, *args]
        for args in (server_args, client_args)
    )
    return mode, server_args, client_args


def _fresh_files(
    record: dict[str, Any], topo: Topology, folder: Path, key_file: Path | None
) -> None:
    """Remove old status files; record every file the daemons will make (for CleanUp)."""
    status_files = [folder / "server.json"] + [
        folder / f"client-{node}.json" for node in topo.tunnel.clients
    ]
    for path in status_files:
        path.unlink(missing_ok=True)
    nft_file = folder / f"{topo.tunnel.server}-nat.nft"
    made = {str(p) for p in [*status_files, nft_file, *([key_file] if key_file else [])]}
    record["files"] = sorted(set(record["files"]) | made)


def _start_server(prefix: str, record: dict[str, Any], argv: list[str]) -> None:
    """ServerConnection: start the server, wait for its status file; LabError if it exits."""
    server = topology_of(prefix).tunnel.server
    path = state_dir(prefix) / "server.json"
    pid = start_daemon(prefix, record, "server", server, argv)
    wait_for(lambda: path.exists() or not alive(pid), SERVER_WAIT_S)
    if not alive(pid):
        log = record["daemons"]["server"]["log"]
        raise LabError(f"the VPN server on {server} exited:\n{log_tail(log)}")


def _start_client(prefix: str, record: dict[str, Any], node: str, argv: list[str]) -> None:
    """ClientConnection: start one client, wait until its status file says connected."""
    name = f"client-{node}"
    path = state_dir(prefix) / f"{name}.json"
    pid = start_daemon(prefix, record, name, node, argv)

    def connected() -> bool:
        info = read_status_file(path) or {}
        return info.get("state") == "connected" or not alive(pid)

    wait_for(connected, CONNECT_WAIT_S)
    if (read_status_file(path) or {}).get("state") != "connected":
        log = record["daemons"][name]["log"]
        why = "exited" if not alive(pid) else f"not connected after {CONNECT_WAIT_S} s"
        raise LabError(f"VPN client on {node} {why}:\n{log_tail(log)}")


def route_back(prefix: str = DEFAULT_PREFIX, add: bool = True) -> str:
    """Routing without NAT: teach the isp the way back to the tunnel network (via the server).

    Without NAT, web answers 10.8.0.2 itself; the isp has no route to 10.8.0.0/24 and drops
    the answer. This adds (or, with ``add=False``, removes) ``10.8.0.0/24 via 198.51.100.2``
    on the isp. Returns the route as ``ip route`` would write it.
    """
    topo = topology_of(prefix)
    router = next(n.name for n in topo.nodes if n.role == "router")
    network = str(ipaddress.IPv4Interface(topo.tunnel.server_address).network)
    route = f"{network} via {topo.server_ip}"
    verb = "replace" if add else "del"
    argv = ["ip", "route", verb, *route.split()]
    if add or route in run_in(prefix, router, ["ip", "route"]).stdout:
        run_in(prefix, router, argv, check=True)
    return route


def stop_vpn(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """CleanUp of the VPN only: stop clients then server, put routes and forwarding back."""
    check_environment()
    record = record_of(prefix)
    names = [n for n in record.get("daemons", {}) if n == "server" or n.startswith("client-")]
    done = stop_daemons(record, names)
    for name in names:
        record["daemons"].pop(name, None)
    record["vpn"] = False
    save(record)
    topo = topology_of(prefix)
    for node in (*topo.tunnel.clients, topo.tunnel.server):
        _restore_node(prefix, topo, node)
    return done


def _restore_node(prefix: str, topo: Topology, name: str) -> None:
    """Undo what a killed daemon may have left: default route, NAT table, forwarding."""
    node = topo.node(name)
    if not ns_exists(namespace(prefix, name)):
        return
    if node.gateway:
        run_in(prefix, name, ["ip", "route", "replace", "default", "via", node.gateway])
    tables = run_in(prefix, name, ["nft", "list", "tables"]).stdout if shutil.which("nft") else ""
    for line in tables.splitlines():
        parts = line.split()  # "table ip vpnlab"
        if len(parts) == 3 and parts[2] == NAT_TABLE:
            run_in(prefix, name, ["nft", "delete", "table", parts[1], parts[2]])
    flag = "1" if node.forwarding else "0"
    run_in(prefix, name, ["sysctl", "-qw", f"net.ipv4.ip_forward={flag}"])
