"""Troubleshooting labs: a lab with one hidden fault, for a student to find and repair by hand.

``vpnlab lab up --fault NAME|random`` builds the lab, starts the VPN and then breaks one thing
with the tools a student repairs it with (``ip``, ``nft``, ``sysctl`` inside a node, or a key
file), as Kathara's checker and netlab's validate labs do. ``vpnlab check`` (course/check.py)
then says whether the lab works again, symptom by symptom, without naming the fault. The
student starts from a ticket: the symptom as a user reports it (:data:`FAULTS`; several faults
share each of the four).

    name          where  what is broken                          what a student sees
    forward-isp   isp    net.ipv4.ip_forward = 0                 r1 cannot reach r2 at all
    forward-r2    r2     net.ipv4.ip_forward = 0                 tunnel up, nothing beyond r2
    host-route    r1     the host route to the server deleted    the tunnel's datagrams go
                                                                 into tun0 (dropped, counted)
    nat-iface     r2     masquerade on oifname "eth1" (no such)  web answers 10.8.0.2: lost
    mtu-blackhole r1 r2  tun0 mtu 1500, the isp drops fragments  small packets pass, big die
    wrong-key     r1     r1.conf holds a key the server does     the server drops every Hello
                         not list (the client is restarted)      ("unknown peer key")
    udp-filter    isp    nftables drops UDP port 4500            no datagram crosses the isp
    client-routes r1     0/1 and 128/1 gone, a default via tun0  traffic bypasses the tunnel
                         with a worse metric than eth0's
    rp-filter     r1     rp_filter = 1; what tun0 brings is      web's replies reach tun0
                         marked, and marked lookups of web's     and are dropped there
                         network go via eth0 (a policy route)

What the lab runs differently, for every fault alike (so nothing there hints at one): the
daemons never give up (``--liveness-timeout 0`` on both, ``--reconnect`` on the client), so a
repair works without a restart, and the status says ``connected`` while the path is broken:
read the counters (keepalives sent and received, drops). A guard on r1 drops the tunnel's own
datagrams if they are ever routed into tun0 (counted as the client's send drops), so a missing
host route is a dead tunnel instead of a routing loop that burns a CPU.

Who holds the fault (DESIGN.md section 6): never the student. On the class hub the grader
service (``vpnlab/grader/``) draws it, injects it from outside the student's processes and keeps
the record in its own store; the student sees the ticket only. On one's own machine
(``vpnlab lab up --fault``, practice: the student is root there and can read anything) the
record is a 0600 file in a 0700 folder beside the state folders, never in the lab's own state
folder, which holds nothing that names the fault. The record (:class:`FaultRecord`) keeps the
name, when it began and the *restart marks*: the interface index of tun0 in the client and the
server, read from the lab itself. A restarted daemon makes a new tun0 with a new index, so a
restart that hides a fault instead of repairing it is seen whatever a student writes in a file.
There is no function that names a lab's fault from its lab: only the holder of the record can.

Which fault a student gets is drawn per student: :func:`draw` keys an HMAC with a secret the
student does not have (the grader's; on one's own machine a root-only 0600 file) over the
student's name and their count of faults so far.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import random
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.build import start_daemon
from vpnlab.lab.control import up
from vpnlab.lab.inspection import status
from vpnlab.lab.nodes import python_argv, run_in
from vpnlab.lab.state import (
    PRIVATE_DIR,
    base_dir,
    changing,
    record_of,
    save,
    state_dir,
    stop_daemons,
    topology_of,
)
from vpnlab.lab.topology import Topology
from vpnlab.lab.vpn import start_vpn
from vpnlab.shell.keys import write_secret
from vpnlab.shell.peers import client_config_text, read_client_config

RECORD_VERSION = 1
DAEMON_ARGS = ["--liveness-timeout", "0"]
"""Both daemons, in a troubleshooting lab: a broken path never ends the session."""
GUARD_TABLE = "vpnlab_guard"
ISP_TABLE = "isp"
POLICY_TABLE = "100"
POLICY_MARK = "0x1"


NodeRunner = Callable[[str, list[str], str | None], subprocess.CompletedProcess[str]]
"""Run ``argv`` in a lab node with ``input`` (text or None) on stdin; its text result.

Locally :func:`local_runner` (``ip netns exec``); the hub's grader enters a student's lab."""


@dataclass(frozen=True)
class Fault:
    """One fault: how it is injected (through a :data:`NodeRunner`, so the hub's grader injects
    it from outside the student's processes), and the ticket a student starts from (the symptom
    as a user would report it; several faults share one). ``local_only``: it changes the lab's
    files and restarts a daemon (wrong-key), so only a local lab can have it."""

    name: str
    ticket: str
    inject: Callable[[NodeRunner, Topology, str], None]
    local_only: bool = False


@dataclass(frozen=True)
class FaultRecord:
    """Which fault a lab has, since when, and its restart marks (module docstring).

    ``lab_id``: a random token that tells one fault lab's attempts from another's;
    ``lab_created``: the lab's ``created`` time (a record of an earlier lab is not this one's)."""

    name: str
    started: float
    marks: dict[str, int] = field(default_factory=dict)
    lab_id: str = ""
    lab_created: float = 0.0
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "name": self.name,
                "started": self.started,
                "marks": self.marks,
                "lab_id": self.lab_id,
                "lab_created": self.lab_created,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FaultRecord:
        """The record; ValueError for anything else (another version, a missing field)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise ValueError("not a fault record of this version")
        if data.get("name") not in FAULTS or not isinstance(data.get("marks"), dict):
            raise ValueError("not a fault record")
        marks = {str(k): int(v) for k, v in data["marks"].items()}
        created = float(data.get("lab_created", 0.0))
        return cls(str(data["name"]), float(data["started"]), marks, str(data["lab_id"]), created)


def local_runner(prefix: str) -> NodeRunner:
    """The :data:`NodeRunner` of a lab on this machine (``ip netns exec``, as root)."""

    def run(
        node: str, argv: list[str], input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_in(prefix, node, argv, input=input, timeout=30)

    return run


def _router(topo: Topology) -> str:
    return next(n.name for n in topo.nodes if n.role == "router")


def _client(topo: Topology) -> str:
    return topo.tunnel.clients[0]


def _ok(run: NodeRunner, node: str, argv: list[str], input: str | None = None) -> str:
    """``argv`` in ``node``; its output, or LabError naming the command and its last line."""
    done = run(node, argv, input)
    if done.returncode != 0:
        err = (done.stderr or done.stdout or "").strip().splitlines()
        raise LabError(f"{' '.join(argv)} in {node} failed: {err[-1] if err else done.returncode}")
    return str(done.stdout)


def _sh(run: NodeRunner, node: str, *commands: str) -> None:
    """Each command (split on spaces) in ``node``; LabError if one fails."""
    for command in commands:
        _ok(run, node, command.split())


def _nft(run: NodeRunner, node: str, ruleset: str) -> None:
    _ok(run, node, ["nft", "-f", "-"], ruleset)


def _filter(table: str, hook: str, rule: str) -> str:
    """An nftables table with one chain (filter, ``hook``) holding ``rule``."""
    return (
        f"table inet {table} {{\n    chain {hook} {{\n"
        f"        type filter hook {hook} priority 0; policy accept;\n"
        f"        {rule}\n    }}\n}}\n"
    )


def _forward_off(
    node_of: Callable[[Topology], str],
) -> Callable[[NodeRunner, Topology, str], None]:
    def inject(run: NodeRunner, topo: Topology, prefix: str) -> None:
        _sh(run, node_of(topo), "sysctl -qw net.ipv4.ip_forward=0")

    return inject


def _host_route(run: NodeRunner, topo: Topology, prefix: str) -> None:
    _sh(run, _client(topo), f"ip route del {topo.server_ip}/32")


def _nat_iface(run: NodeRunner, topo: Topology, prefix: str) -> None:
    network = topo.tunnel.network
    _nft(
        run,
        topo.tunnel.server,
        "flush chain ip vpnlab postrouting\n"
        f"add rule ip vpnlab postrouting ip saddr {network} ip daddr != {network}"
        ' oifname "eth1" counter masquerade\n',
    )


def _mtu(run: NodeRunner, topo: Topology, prefix: str) -> None:
    for node in (_client(topo), topo.tunnel.server):
        _sh(run, node, "ip link set dev tun0 mtu 1500")
    _nft(run, _router(topo), _filter(ISP_TABLE, "forward", "ip frag-off & 0x3fff != 0 drop"))


def _udp_filter(run: NodeRunner, topo: Topology, prefix: str) -> None:
    _nft(run, _router(topo), _filter(ISP_TABLE, "forward", "udp dport 4500 counter drop"))


def _routes(run: NodeRunner, topo: Topology, prefix: str) -> None:
    _sh(
        run,
        _client(topo),
        "ip route del 0.0.0.0/1 dev tun0",
        "ip route del 128.0.0.0/1 dev tun0",
        "ip route add default dev tun0 metric 100",
    )


def _rp_filter(run: NodeRunner, topo: Topology, prefix: str) -> None:
    """What arrives on tun0 is marked (as for accounting), ``src_valid_mark`` lets the
    reverse-path check see the mark, and marked lookups of web's network use table 100 (via
    eth0): web's replies came in on tun0, the check says eth0, rp_filter 1 drops them."""
    client = _client(topo)
    web_net = str(ipaddress.IPv4Interface(f"{topo.web_ip}/24").network)
    gateway = topo.node(client).gateway
    _sh(
        run,
        client,
        f"ip route add {web_net} via {gateway} dev eth0 table {POLICY_TABLE}",
        f"ip rule add pref 100 fwmark {POLICY_MARK} table {POLICY_TABLE}",
        "sysctl -qw net.ipv4.conf.all.src_valid_mark=1 net.ipv4.conf.all.rp_filter=1",
    )
    _nft(
        run,
        client,
        "table ip marks {\n    chain prerouting {\n"
        "        type filter hook prerouting priority mangle; policy accept;\n"
        f'        iifname "tun0" meta mark set {POLICY_MARK}\n    }}\n}}\n',
    )


def _wrong_key(run: NodeRunner, topo: Topology, prefix: str) -> None:
    """A fresh key in the client's config, which the server's peers.toml does not list; the
    client is restarted with it (same command line) and retries every few seconds."""
    client = _client(topo)
    record = record_of(prefix)
    daemon = record.daemons.get(f"client-{client}")
    path = state_dir(prefix) / "identity" / f"{client}.conf"
    if daemon is None or not path.exists():
        raise LabError("the wrong-key fault needs a running identity-mode client")
    config = read_client_config(path)
    identity = replace(config.identity, private_key=os.urandom(32))
    write_secret(path, client_config_text(replace(config, identity=identity)))
    stop_daemons(record, [f"client-{client}"])
    start_daemon(prefix, record, f"client-{client}", client, daemon.argv)


DOWN = "r1: the VPN is down, nothing crosses the tunnel"
NO_WEB = "r1: the VPN is up, but web cannot be reached through it"
BYPASS = "web: r1 reaches me, but from its own address, not through the VPN"
BIG = "r1: pings to web work, but large packets vanish"

FAULTS = {
    f.name: f
    for f in (
        Fault("forward-isp", DOWN, _forward_off(_router)),
        Fault("forward-r2", NO_WEB, _forward_off(lambda t: t.tunnel.server)),
        Fault("host-route", DOWN, _host_route),
        Fault("nat-iface", NO_WEB, _nat_iface),
        Fault("mtu-blackhole", BIG, _mtu),
        Fault("wrong-key", DOWN, _wrong_key, local_only=True),
        Fault("udp-filter", DOWN, _udp_filter),
        Fault("client-routes", BYPASS, _routes),
        Fault("rp-filter", NO_WEB, _rp_filter),
    )
}
"""Every fault, by name."""


def applicable(prefix: str) -> list[str]:
    """The faults this lab can have (wrong-key needs the identity mode)."""
    identity = record_of(prefix).keying == "identity"
    return [n for n, f in FAULTS.items() if identity or not f.local_only]


def draw(names: list[str], student: str, secret: bytes, count: int) -> str:
    """The fault of ``student``'s ``count``-th fault lab, drawn from ``names``: an HMAC-SHA256
    under ``secret`` (which the student does not have) of the name and the count."""
    mac = hmac.new(secret, f"{student}\0{count}".encode(), hashlib.sha256).digest()
    ordered = sorted(names)
    return ordered[int.from_bytes(mac[:8], "big") % len(ordered)]


def choose(names: list[str], seed: int) -> str:
    """One of ``names``, the same for the same ``seed`` (tests, a class that wants one fault)."""
    return random.Random(seed).choice(sorted(names))


def restart_marks(run: NodeRunner, topo: Topology) -> dict[str, int]:
    """What a restart or a rebuilt lab changes, read from the lab: the index of tun0 in the
    first client and the server (-1 without one; a restarted daemon makes a new tun0, and an
    index is not given out twice in a namespace) and each node's network namespace cookie
    (``SO_NETNS_COOKIE``: never the same for two namespaces, so a rebuilt lab differs)."""
    marks = {}
    for node in (_client(topo), topo.tunnel.server):
        done = run(node, ["ip", "-j", "link", "show", "dev", "tun0"], None)
        cookie = run(node, python_argv("-c", _COOKIE), None)
        try:
            marks[node] = int(json.loads(done.stdout)[0]["ifindex"])
        except (ValueError, IndexError, KeyError, TypeError):
            marks[node] = -1
        try:
            marks[f"{node} netns"] = int(cookie.stdout.strip())
        except ValueError:
            marks[f"{node} netns"] = -1
    return marks


_COOKIE = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "print(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), 'little'))"  # SO_NETNS_COOKIE
)


def prepare(prefix: str, **up_kwargs: Any) -> None:
    """A troubleshooting lab without a fault yet: the lab as :func:`~vpnlab.lab.control.up`
    builds it, the VPN started the troubleshooting way (module docstring) and the guard.

    Raises LabError for options a troubleshooting lab cannot have (nothing is built then).
    """
    topology = up_kwargs.get("topology")
    if up_kwargs.get("mode", "tun") != "tun" or up_kwargs.get("nat") is False:
        raise LabError("troubleshooting labs run in tun mode with NAT (no --mode tap, --nat off)")
    if topology is not None and topology.tunnel.lans:
        raise LabError("troubleshooting labs are not site to site")
    up_kwargs.pop("vpn", None)
    with changing(prefix):  # one turn: no other command's lab between these steps
        up(prefix, vpn=False, **up_kwargs)
        start_vpn(
            prefix,
            up_kwargs.get("cipher"),
            reconnect=True,
            server_args=DAEMON_ARGS,
            client_args=DAEMON_ARGS,
            psk=up_kwargs.get("psk", False),
        )
        topo = topology_of(prefix)
        rule = f'oifname "tun0" ip daddr {topo.server_ip} udp dport 4500 counter drop'
        _nft(local_runner(prefix), _client(topo), _filter(GUARD_TABLE, "output", rule))
        record = record_of(prefix)
        record.troubleshooting = True
        save(record)


def start(prefix: str, fault: str, seed: int | None = None, **up_kwargs: Any) -> dict[str, Any]:
    """``vpnlab lab up --fault``: :func:`prepare`, then one fault (practice, module docstring).

    ``fault`` is a name of :data:`FAULTS` or ``"random"`` (with ``seed``: :func:`choose`;
    without: :func:`draw` for this user under the machine's practice secret). Returns the
    lab's status and ``ticket``, the symptom a student starts from (never the name).
    Raises LabError for an unknown fault or one this lab cannot have; the lab is left up.
    """
    if fault != "random" and fault not in FAULTS:
        raise LabError(f"unknown fault {fault!r} (choose from random, {', '.join(FAULTS)})")
    with changing(prefix):  # the lab built and broken in one turn
        prepare(prefix, **up_kwargs)
        if fault == "random":
            names = applicable(prefix)
            student = os.environ.get("SUDO_USER") or getpass.getuser()
            if seed is not None:
                fault = choose(names, seed)
            else:
                fault = draw(names, student, _secret(), _next_count())
        inject(prefix, fault)
        return {**status(prefix), "ticket": FAULTS[fault].ticket}


def inject(prefix: str, name: str) -> None:
    """Break ``name`` in a running troubleshooting lab and keep its :class:`FaultRecord` in the
    practice folder (0600; module docstring).

    Only in a lab :func:`start` made: elsewhere the daemons give up, and a missing host route
    would be a routing loop.
    """
    if not record_of(prefix).troubleshooting:
        raise LabError("faults go into troubleshooting labs only (vpnlab lab up --fault ...)")
    if name not in applicable(prefix):
        raise LabError(f"fault {name!r} does not fit this lab (it can have: {applicable(prefix)})")
    topo, run = topology_of(prefix), local_runner(prefix)
    FAULTS[name].inject(run, topo, prefix)
    marks, created = restart_marks(run, topo), record_of(prefix).created
    note = FaultRecord(name, time.time(), marks, secrets.token_hex(4), created)
    _write_private(record_path(prefix), note.to_json())


def _private_dir() -> Path:
    folder = base_dir() / PRIVATE_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, created 0600 (never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.chmod(path, 0o600)


def _secret() -> bytes:
    """The practice secret of this machine (32 random bytes, made once, 0600)."""
    path = _private_dir() / "secret"
    if not path.exists():
        _write_private(path, secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _next_count() -> int:
    """How many practice faults this machine drew before (a counter kept with the secret)."""
    path = _private_dir() / "drawn"
    try:
        count = int(path.read_text().strip())
    except (OSError, ValueError):
        count = 0
    _write_private(path, str(count + 1))
    return count


def record_path(prefix: str) -> Path:
    """Where a practice lab's fault record is kept (outside the lab's state folder)."""
    return _private_dir() / f"{state_dir(prefix).name}.json"


def practice_record(prefix: str) -> FaultRecord | None:
    """The practice fault record of a lab on this machine (readable by root, or by the user
    who made a rootless lab: practice); None for a lab without a fault."""
    try:
        note = FaultRecord.from_json(record_path(prefix).read_text())
        created = record_of(prefix).created
    except (OSError, ValueError, TypeError, KeyError, LabError):
        return None
    return note if note.lab_created == created else None
