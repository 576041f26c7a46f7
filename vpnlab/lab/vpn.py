"""ServerConnection + ClientConnection in the lab: start, stop and configure the VPN daemons.

The lab starts each daemon with ``ip netns exec`` in its node (``build.start_daemon``), passes
it the keys it needs, and waits for its status file to say it is connected. The keys, made
fresh at every start in the lab's state folder:

    identity (ESP, the default)  identity/server.key, identity/peers.toml and one
                                 identity/NODE.conf per client (``vpnlab keys add-peer``):
                                 each client its own key, its address and networks its key's
    psk (``--psk``)              the notes' simple case: one shared key in ``psk``
    static (``--static-keys``)   no handshake: ``static-keys.json``, one client
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from vpnlab.core.constants import NAT_TABLE, PORT
from vpnlab.core.errors import LabError
from vpnlab.core.pool import AddressPool, tunnel_address6
from vpnlab.core.reasons import State
from vpnlab.lab.build import log_tail, start_daemon
from vpnlab.lab.inspection import read_status_file, status
from vpnlab.lab.nodes import check_environment, python_argv, run_in, wait_for
from vpnlab.lab.records import LabRecord
from vpnlab.lab.state import (
    DEFAULT_PREFIX,
    alive,
    changing,
    namespace,
    ns_exists,
    record_of,
    save,
    state_dir,
    stop_daemons,
    topology_of,
)
from vpnlab.lab.topology import Topology
from vpnlab.shell.keys import new_psk, write_secret
from vpnlab.shell.peers import PEERS, SERVER_KEY, add_peer, create_server_identity
from vpnlab.wire.ciphers import CIPHERS, DEFAULT_CIPHER
from vpnlab.wire.esp import generate_static_keys

STARTUP_DEADLINE_S = 120.0
"""How long ``up`` waits for one daemon at most while it is alive and still starting. The wait
follows progress: a daemon that exits, or a client whose first connection attempt ends
(``-> closed`` in its log), fails at once; only a daemon that neither finishes nor fails meets
this deadline. (A fixed 5 s failed a class of 40 on 2 cores: a daemon's Python alone took 4 s
to start there.)"""
POLL_S = 0.1


def _public_ip(topo: Topology, outer: int) -> str:
    """The server's public address of the outer family: 198.51.100.2, or 2001:db8:2::2."""
    if outer == 6 and not topo.dual_stack:
        raise LabError("an IPv6 outer path needs a dual-stack lab (lab up --ipv6 on)")
    return topo.server_ip6 if outer == 6 else topo.server_ip


def _server_argv(
    topo: Topology, folder: Path, key_args: list[str], nat: bool, outer: int = 4
) -> list[str]:
    argv = python_argv("-m", "vpnlab", "server", "--listen", _public_ip(topo, outer))
    argv += ["--tunnel-address", topo.tunnel.server_address, *key_args]
    if nat:
        argv += ["--external-interface", topo.tunnel.external_interface]
    argv += ["--status-file", str(folder / "server.json")]
    argv += ["--esp-sa-file", str(folder / "esp_sa")]
    return argv + ["--nft-file", str(folder / f"{topo.tunnel.server}-nat.nft")]


def _client_argv(
    topo: Topology, node: str, folder: Path, key_args: list[str], outer: int = 4
) -> list[str]:
    server = _public_ip(topo, outer)
    argv = python_argv("-m", "vpnlab", "client", "--server", server, *key_args)
    return argv + ["--status-file", str(folder / f"client-{node}.json")]


def _addresses(topo: Topology) -> dict[str, ipaddress.IPv4Interface]:
    """Each client's tunnel address: 10.8.0.2, .3, ... in the topology's order."""
    pool = AddressPool(ipaddress.IPv4Interface(topo.tunnel.server_address))
    addresses = {}
    for client in topo.tunnel.clients:
        address = pool.take()
        if address is None:
            raise LabError(f"the tunnel network has no address left for client {client}")
        addresses[client] = address
    return addresses


def _lans(topo: Topology) -> list[tuple[str, str]]:
    """Site to site: (gateway, network) of every LAN, its IPv6 /64s only in a dual-stack lab."""
    return [(gw, net) for gw, net in topo.tunnel.lans if ":" not in net or topo.dual_stack]


def _routes(topo: Topology, client: str) -> list[str]:
    """Site to site: the networks a client sends through the tunnel (the other LANs)."""
    return [network for gateway, network in _lans(topo) if gateway != client]


def _lan_args(topo: Topology, keying: str) -> tuple[list[str], dict[str, list[str]]]:
    """Site to site without identities: the server's ``--client-network`` options and each
    client's ``--route``s (with identities, both are in the peers file and the configs).

    Clients start one after another and get 10.8.0.2, .3, ... in that order, so the lab knows
    which tunnel address stands for which LAN (as OpenVPN's iroute names a client).
    """
    if keying == "identity" or not _lans(topo):  # no LAN: no client need be named by address
        return [], {client: [] for client in topo.tunnel.clients}
    addresses = _addresses(topo)
    server_args = [
        arg
        for gateway, network in _lans(topo)
        if gateway in addresses
        for arg in ("--client-network", f"{addresses[gateway].ip}={network}")
    ]
    client_args = {
        client: [arg for net in _routes(topo, client) for arg in ("--route", net)]
        for client in topo.tunnel.clients
    }
    return server_args, client_args


def _keying(cipher: str, static_keys: bool, psk: bool) -> str:
    if cipher == "plain":
        return "none"
    return "static" if static_keys else "psk" if psk else "identity"


def _key_args(
    folder: Path, topo: Topology, cipher: str, keying: str, outer: int = 4
) -> tuple[list[str], dict[str, list[str]], list[Path]]:
    """The server's and each client's key options, and the key files written for them."""
    clients = topo.tunnel.clients
    if keying == "static":
        path = folder / "static-keys.json"
        write_secret(path, generate_static_keys(cipher, os.urandom).to_json())
        return (
            ["--static-keys", str(path)],
            {c: ["--static-keys", str(path)] for c in clients},
            [path],
        )
    if keying == "none":
        return ["--cipher", cipher], {c: ["--cipher", cipher] for c in clients}, []
    if keying == "psk":
        path = folder / "psk"
        new_psk(path)
        args = ["--cipher", cipher, "--psk-file", str(path)]
        return args, {c: args for c in clients}, [path]
    return _identities(folder / "identity", topo, cipher, outer)


def _identities(
    folder: Path, topo: Topology, cipher: str, outer: int = 4
) -> tuple[list[str], dict[str, list[str]], list[Path]]:
    """Identity mode: a fresh server key, and for each client its key, its peers.toml line
    (its address, the LAN behind it) and its config file (``vpnlab keys add-peer``)."""
    shutil.rmtree(folder, ignore_errors=True)
    create_server_identity(folder)
    endpoint = (ipaddress.ip_address(_public_ip(topo, outer)), PORT)  # the outer family's
    server_address = ipaddress.IPv4Interface(topo.tunnel.server_address)
    configs = {}
    for client, address in _addresses(topo).items():
        configs[client] = add_peer(
            folder,
            client,
            address,
            endpoint=endpoint,
            cipher=cipher,
            networks=tuple(ipaddress.ip_network(n) for gw, n in _lans(topo) if gw == client),
            routes=tuple(ipaddress.ip_network(n) for n in _routes(topo, client)),
            server_address=server_address,
        )
    files = [folder / SERVER_KEY, folder / PEERS, *configs.values()]
    server_args = ["--cipher", cipher, "--identity", str(folder)]
    return server_args, {c: ["--config", str(path)] for c, path in configs.items()}, files


def start_vpn(
    prefix: str = DEFAULT_PREFIX,
    cipher: str | None = None,
    static_keys: bool = False,
    reconnect: bool = False,
    server_args: Sequence[str] = (),
    client_args: Sequence[str] = (),
    nat: bool | None = None,
    mode: str | None = None,
    psk: bool | None = None,
    outer: int | None = None,
) -> dict[str, Any]:
    """ServerConnection + ClientConnection in the lab: start the server, then each client.

    ``outer`` (4 or 6; default: as last started, else 4) is the family of the outer packets:
    6 makes the server listen on 2001:db8:2::2 and the clients dial it (UDP 4500 over IPv6).
    ``server_args`` and ``client_args`` are extra daemon options, e.g. ``["--datapath",
    "simple"]`` (the daemons' default is ``fast``) or ``["--mtu", "1400"]`` (the benchmark and
    the fast-path tests use them).

    The ESP ciphers run the identity mode: every client its own key (module docstring);
    ``psk`` (default: as last started) gives them one shared key instead, the notes' simple
    case. With ``static_keys`` (an ESP cipher only) the daemons skip the handshake and read
    SPIs and keys from one file, as ``ip xfrm`` manual keying does (one client only). With
    ``reconnect`` the clients start again when they lose the server instead of exiting.
    ``nat`` (default: as the lab was built) turns the server's masquerade rule on or off.
    ``mode`` ``"tap"`` (default: as last started, else ``"tun"``; ``--mode tap`` in both
    ``server_args`` and ``client_args`` counts too) makes both ends carry Ethernet frames.

    Stops VPN daemons already running first. Waits until every client says ``connected`` while
    it is alive and trying (:func:`wait_started`). Returns the tunnel part of :func:`status`.
    """
    check_environment()
    with changing(prefix):
        cipher = cipher or record_of(prefix).cipher or DEFAULT_CIPHER
        if cipher not in CIPHERS:
            raise LabError(f"unknown cipher {cipher!r} (choose from {', '.join(CIPHERS)})")
        stop_vpn(prefix)
        record = record_of(prefix)
        topo = topology_of(prefix)
        folder = state_dir(prefix)
        if static_keys and (cipher == "plain" or len(topo.tunnel.clients) != 1):
            raise LabError("static keys need an ESP cipher and exactly one client")
        psk = record.psk if psk is None else psk
        keying = _keying(cipher, static_keys, psk)
        outer = outer or record.outer or 4
        server_keys, client_keys, key_files = _key_args(folder, topo, cipher, keying, outer)
        mode, server_args, client_args = _mode_args(mode, record, server_args, client_args)
        record.cipher, record.vpn, record.mode, record.psk = cipher, True, mode, psk
        record.keying, record.outer = keying, outer
        record.nat = record.nat if nat is None else nat
        _fresh_files(record, topo, folder, key_files)
        lan_server_args, lan_client_args = _lan_args(topo, keying)
        server_argv = _server_argv(topo, folder, server_keys, record.nat, outer)
        _start_server(prefix, record, [*server_argv, *server_args, *lan_server_args])
        for node in topo.tunnel.clients:
            argv = _client_argv(topo, node, folder, client_keys[node], outer)
            argv += ["--reconnect"] if reconnect else []
            _start_client(prefix, record, node, [*argv, *client_args, *lan_client_args[node]])
        return cast(dict[str, Any], status(prefix)["tunnel"])


def _mode_args(
    mode: str | None, record: LabRecord, server_args: Sequence[str], client_args: Sequence[str]
) -> tuple[str, list[str], list[str]]:
    """The mode (given, else ``--mode`` among the daemon options, else as last started, else
    tun) and both daemons' options with ``--mode`` added where it is missing."""
    given = [*server_args, *client_args]
    if mode is None and "--mode" in given:
        mode = given[given.index("--mode") + 1]
    mode = mode or record.mode or "tun"
    if mode not in ("tun", "tap"):
        raise LabError(f"unknown mode {mode!r} (choose tun or tap)")
    if mode == "tun":
        return mode, list(server_args), list(client_args)
    server_args, client_args = (  # both ends or neither
        list(args) if "--mode" in args else ["--mode", mode, *args]
        for args in (server_args, client_args)
    )
    return mode, server_args, client_args


def _fresh_files(record: LabRecord, topo: Topology, folder: Path, key_files: list[Path]) -> None:
    """Remove old status files; record every file the daemons will make (for CleanUp)."""
    status_files = [folder / "server.json"] + [
        folder / f"client-{node}.json" for node in topo.tunnel.clients
    ]
    for path in status_files:
        path.unlink(missing_ok=True)
    nft_file = folder / f"{topo.tunnel.server}-nat.nft"
    made = {str(p) for p in [*status_files, nft_file, *key_files]}
    record.files = sorted(set(record.files) | made)


def _start_server(prefix: str, record: LabRecord, argv: list[str]) -> None:
    """ServerConnection: start the server, wait for its status file; LabError if it exits."""
    server = topology_of(prefix).tunnel.server
    path = state_dir(prefix) / "server.json"
    pid = start_daemon(prefix, record, "server", server, argv)
    log = record.daemons["server"].log
    took = wait_started(f"the VPN server on {server}", pid, log, path.exists)
    record.daemons["server"].startup_s = round(took, 3)
    save(record)


def _start_client(prefix: str, record: LabRecord, node: str, argv: list[str]) -> None:
    """ClientConnection: start one client, wait until its status file says connected."""
    name = f"client-{node}"
    path = state_dir(prefix) / f"{name}.json"
    pid = start_daemon(prefix, record, name, node, argv)
    log = record.daemons[name].log

    def connected() -> bool:
        return (read_status_file(path) or {}).get("state") == State.CONNECTED

    def gave_up() -> str | None:
        """The first attempt of this start ended (``--reconnect`` would go on trying: that is
        no start). The log is appended to at each start: only lines after the last header."""
        this_start = log_tail(log, 60).split("\n--- ")[-1]
        closed = [line for line in this_start.splitlines() if "-> closed" in line]
        return f"did not connect ({closed[0].strip()})" if closed else None

    took = wait_started(f"the VPN client on {node}", pid, log, connected, gave_up)
    record.daemons[name].startup_s = round(took, 3)
    save(record)


def wait_started(
    what: str,
    pid: int,
    log: str,
    ready: Callable[[], bool],
    gave_up: Callable[[], str | None] = lambda: None,
    deadline_s: float = STARTUP_DEADLINE_S,
) -> float:
    """Wait while the daemon ``pid`` is alive and still starting, until ``ready()``; returns
    the seconds it took (its start-up time, kept in the record: ``vpnlab bench --footprint``).

    Raises LabError naming the daemon and its node, the cause (it exited, it gave up, or the
    deadline passed while it was still starting) and the last lines of its log.
    """
    start = time.monotonic()
    wait_for(lambda: ready() or not alive(pid) or gave_up() is not None, deadline_s, POLL_S)
    elapsed = time.monotonic() - start
    if ready():
        return elapsed
    if not alive(pid):
        cause = f"exited after {elapsed:.1f} s"
    else:
        cause = gave_up() or f"was still starting after {elapsed:.0f} s (the deadline)"
    raise LabError(f"lab up failed: {what} {cause}; the last lines of {log}:\n{log_tail(log)}")


def route_back(prefix: str = DEFAULT_PREFIX, add: bool = True) -> str:
    """Routing without NAT: teach the isp the way back to the tunnel network (via the server).

    Without NAT, web answers 10.8.0.2 itself; the isp has no route to 10.8.0.0/24 and drops
    the answer. This adds (or, with ``add=False``, removes) ``10.8.0.0/24 via 198.51.100.2``
    on the isp, and in a dual-stack lab ``fd10:8::/64 via 2001:db8:2::2`` too (the routed
    alternative to NAT66). Returns the routes as ``ip route`` would write them, one a line.
    """
    topo = topology_of(prefix)
    router = next(n.name for n in topo.nodes if n.role == "router")
    server_tunnel = ipaddress.IPv4Interface(topo.tunnel.server_address)
    routes = [(f"{server_tunnel.network} via {topo.server_ip}", ["ip"])]
    if topo.dual_stack:
        network6 = tunnel_address6(server_tunnel).network
        routes.append((f"{network6} via {topo.server_ip6}", ["ip", "-6"]))
    verb = "replace" if add else "del"
    for route, ip in routes:
        if add or route in run_in(prefix, router, [*ip, "route"]).stdout:
            run_in(prefix, router, [*ip, "route", verb, *route.split()], check=True)
    return "\n".join(route for route, _ in routes)


def stop_vpn(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """CleanUp of the VPN only: stop clients then server, put routes and forwarding back."""
    check_environment()
    with changing(prefix):
        record = record_of(prefix)
        names = [n for n in record.daemons if n == "server" or n.startswith("client-")]
        ran = bool(names) or record.vpn
        done = stop_daemons(record, names)
        for name in names:
            record.daemons.pop(name, None)
        record.vpn = False
        save(record)
        if not ran:  # a lab just built: nothing to put back (6 processes fewer a lab up)
            return done
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
