"""``vpnlab check``: does the lab work, end to end? Symptom by symptom, never naming a fault.

The checks a student's repair must pass (a troubleshooting lab, ``vpnlab lab up --fault``, or
any lab), each from the first client unless it says otherwise:

    daemons running        the VPN server and client processes are alive
    tunnel up              a ping to the server's tunnel address (10.8.0.1) is answered
    ping web               a ping to web (203.0.113.10) is answered
    route via tun0         ``ip route get`` sends web's traffic into tun0
    server via eth0        the tunnel's own datagrams (to the server's public address) leave
                           by eth0, the fixed path, not into tun0
    who-am-I               web sees the server's address (NAT), not the client's
    big packets            a ping as large as tun0's MTU, with DF, is answered
    big packets back       the same from the server to the client's tunnel address, at the
                           server's tun0 MTU (a fix of one end only fails here)
    big download           1 MB over HTTP arrives whole (its SHA-256)
    counters               during the checks the client got datagrams back and neither
                           daemon dropped one
    not restarted          (a fault lab) tun0 in the client and the server is the one the
                           fault was set in (its interface index, read from the lab): a restart
                           re-applies routes, forwarding and NAT and hides a fault

All but two are behaviour, observed through a :class:`NodeView` (``exec_in`` in a lab node):
:func:`behaviour_checks` is what the hub's grader (``vpnlab/grader/``) runs on a student's lab
from outside, with the course's fixed topology and the restart marks of its own store. The two
that read the lab's state folder ("daemons running", "counters") are for one's own lab only.

Each run of :func:`check_local_lab` appends one Attempt to the progress file (``progress.py``): item
``fault`` in a fault lab (its detail names the fault only once it is fixed), ``lab``
otherwise. That file is the student's own: practice, never a grade (DESIGN.md section 6).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

from vpnlab.core.reasons import Drop
from vpnlab.instruments.whoami import pattern_sha256
from vpnlab.lab import faults
from vpnlab.lab.inspection import read_status_file, status
from vpnlab.lab.nodes import python_argv, run_in, wait_for
from vpnlab.lab.state import record_of, state_dir, topology_of
from vpnlab.lab.topology import Topology

from .progress import Attempt, record

CHECKS = (
    "daemons running",
    "tunnel up",
    "ping web",
    "route via tun0",
    "server via eth0",
    "who-am-I",
    "big packets",
    "big packets back",
    "big download",
    "counters",
    "not restarted",
)
"""The checks' names, in order (the last one only in a fault lab)."""
DOWNLOAD_BYTES = 1_000_000
COUNTER_WAIT_S = 1.5
"""The daemons rewrite their status files every second: how long to wait for ones written
after the checks (their counters count the checks' packets)."""
_DOWNLOAD = (
    "import hashlib, sys, urllib.request as u\n"
    "print(hashlib.sha256(u.urlopen(sys.argv[1], timeout=4).read()).hexdigest())"
)


Check = dict[str, str | bool]
"""One check's result: ``{"name": str, "ok": bool, "detail": str}``. A plain dict, not a
TypedDict: the grader (``grader/judging.py``) takes the checks as ``dict[str, Any]``."""


class CheckReport(TypedDict):
    """:func:`check_local_lab`'s result: the verdict, the checks, the fault fixed (if any)."""

    ok: bool
    fault_lab: bool
    checks: list[Check]
    fixed: str | None


class NodeView(Protocol):
    """A lab seen from outside its nodes: ``exec_in(node, argv, timeout)`` runs a command in a
    node (text output). The course's ``LabView`` (``grading.py``) is one."""

    def exec_in(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]: ...


class LocalNodes:
    """The :class:`NodeView` of a lab on this machine (``ip netns exec``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def exec_in(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.prefix, node, argv, timeout=timeout)


def _run(lab: NodeView, node: str, argv: list[str], timeout: float) -> tuple[int, str]:
    """``argv`` in ``node``: its exit status and output (124 and "timed out" after ``timeout``)."""
    try:
        done = lab.exec_in(node, argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _ping(lab: NodeView, node: str, address: str, *extra: str) -> tuple[bool, str]:
    code, out = _run(lab, node, ["ping", "-c", "2", "-i", "0.2", "-W", "1", *extra, address], 10)
    lines = [x for x in out.splitlines() if x.strip()]
    summary = next((x for x in lines if "transmitted" in x), lines[-1] if lines else "")
    return code == 0, summary.strip()


def _in_node(lab: NodeView, node: str, code: str, *args: str, timeout: float = 8) -> str:
    """A Python one-liner in ``node``: its last line of output (or of its error)."""
    _, out = _run(lab, node, python_argv("-c", code, *args), timeout)
    lines = (out.strip() or "no output").splitlines()
    return lines[-1]


def _tun0(lab: NodeView, node: str) -> tuple[int, str]:
    """tun0's MTU in ``node`` (0 without one) and its first IPv4 address ("" without)."""
    _, out = _run(lab, node, ["ip", "-j", "addr", "show", "dev", "tun0"], 8)
    try:
        link = json.loads(out)[0]
    except (ValueError, IndexError, KeyError):
        return 0, ""
    inet = [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
    return int(link.get("mtu", 0)), (inet[0] if inet else "")


def _route_dev(lab: NodeView, node: str, address: str) -> str | None:
    _, out = _run(lab, node, ["ip", "-j", "route", "get", address], 8)
    try:
        return (json.loads(out)[0] or {}).get("dev")
    except (ValueError, IndexError, AttributeError):
        return None


def _status_files(prefix: str, client: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = state_dir(prefix)
    client_st = read_status_file(folder / f"client-{client}.json") or {}
    return client_st, read_status_file(folder / "server.json") or {}


def _counters(
    prefix: str, client: str, since: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both daemons' counters, from status files written after ``since`` (waiting up to
    COUNTER_WAIT_S for them; older ones if none come)."""
    wait_for(
        lambda: all(float(st.get("updated", 0)) >= since for st in _status_files(prefix, client)),
        COUNTER_WAIT_S,
    )
    client_st, server_st = _status_files(prefix, client)
    return client_st.get("counters") or {}, server_st.get("counters") or {}


def _drops(counters: dict[str, Any]) -> int:
    """Drops that mean trouble: not a fresh tun0's own IPv6 link chatter (its router
    solicitations), which every daemon drops and counts after each start."""
    drops = counters.get("drops") or {}
    if not isinstance(drops, dict):
        return int(drops)
    return sum(n for reason, n in drops.items() if reason != Drop.TUN_LINK_SCOPE)


def _got_back(counters: dict[str, Any]) -> int:
    return int(counters.get("packets_to_tun", 0)) + int(counters.get("keepalives_received", 0))


def behaviour_checks(lab: NodeView, topo: Topology) -> list[Check]:
    """The checks that observe behaviour only (module docstring), as ``{"name", "ok",
    "detail"}``, in order; ``topo`` says where things are (the grader's own, fixed one).

    A check that needs an earlier one (the download needs the ping to web) fails at once,
    saying so, instead of waiting for its timeout.
    """
    client, server = topo.tunnel.clients[0], topo.tunnel.server
    results: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> bool:
        results.append({"name": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    add("tunnel up", *_ping(lab, client, topo.tunnel.server_address.split("/")[0]))
    web = add("ping web", *_ping(lab, client, topo.web_ip))
    dev = _route_dev(lab, client, topo.web_ip)
    add("route via tun0", dev == "tun0", f"dev {dev}")
    dev = _route_dev(lab, client, topo.server_ip)
    add("server via eth0", dev == "eth0", f"{topo.server_ip}: dev {dev}")
    url = f"http://{topo.web_ip}:{topo.web_port}/"
    answer = _in_node(lab, client, _FETCH, url) if web else "needs ping web"
    add("who-am-I", answer == f"you are {topo.server_ip}", answer)
    for name, src, dst in (("big packets", client, topo.web_ip), ("big packets back", server, "")):
        mtu, _ = _tun0(lab, src)
        dst = dst or _tun0(lab, client)[1]
        big = _ping(lab, src, dst, "-M", "do", "-s", str(mtu - 28)) if web and mtu > 28 else None
        why = big[1] if big else "needs ping web"
        add(name, bool(big and big[0]), f"tun0 mtu {mtu}: {why}" if mtu else "no tun0")
    digest = _in_node(lab, client, _DOWNLOAD, f"{url}bytes/{DOWNLOAD_BYTES}") if web else ""
    whole = digest == pattern_sha256(DOWNLOAD_BYTES)
    add("big download", whole, "1 MB intact" if whole else digest or "needs ping web")
    return results


def not_restarted(run: faults.NodeRunner, topo: Topology, marks: dict[str, int]) -> Check:
    """The "not restarted" check: the lab's namespaces and tun0s are those ``marks`` (the fault
    record's) saw. A tun0 that was not there then (wrong-key: the client has none before its
    handshake) may be new."""
    now = faults.restart_marks(run, topo)
    same = bool(marks) and all(now.get(k) == v for k, v in marks.items() if v != -1)
    detail = "the tun0s the exercise started"
    if not same:
        detail = "the VPN was restarted (this hides faults): vpnlab lab up --fault ... again"
    return {"name": "not restarted", "ok": same, "detail": detail}


def run_checks(prefix: str) -> list[Check]:
    """Every check (module docstring) of a lab on this machine, in order."""
    topo = topology_of(prefix)
    client = topo.tunnel.clients[0]
    info = status(prefix)
    before = _counters(prefix, client)
    names = ["server", f"client-{client}"]
    dead = [n for n in names if not (info["daemons"].get(n) or {}).get("alive")]
    detail = f"not running: {', '.join(dead)}" if dead else "all alive"
    results: list[Check] = [{"name": "daemons running", "ok": not dead, "detail": detail}]
    results += behaviour_checks(LocalNodes(prefix), topo)
    ok, detail = _counters_sane(before, _counters(prefix, client, since=time.time()))
    results.append({"name": "counters", "ok": ok, "detail": detail})
    note = faults.practice_record(prefix)
    if note is not None:
        results.append(not_restarted(faults.local_runner(prefix), topo, note.marks))
    return results


_FETCH = (
    "import sys, urllib.request as u\n"
    "print(u.urlopen(sys.argv[1], timeout=3).read().decode().strip())"
)


def _counters_sane(
    before: tuple[dict[str, Any], dict[str, Any]], after: tuple[dict[str, Any], dict[str, Any]]
) -> tuple[bool, str]:
    """The client got datagrams back during the checks; neither daemon dropped any."""
    back = _got_back(after[0]) - _got_back(before[0])
    client_drops = _drops(after[0]) - _drops(before[0])
    server_drops = _drops(after[1]) - _drops(before[1])
    ok = back > 0 and client_drops == 0 and server_drops == 0
    detail = f"client got {back} back, drops: client {client_drops}, server {server_drops}"
    return ok, detail


def check_local_lab(prefix: str, save: Callable[[Attempt], None] = record) -> CheckReport:
    """Run the checks and record one Attempt (``fault`` or ``lab``).

    Returns ``{"ok", "fault_lab", "checks", "fixed"}``; ``fixed`` is the fault's name once a
    fault lab passes (None before).
    """
    record_of(prefix)  # LabError for a lab that is not up
    checks = run_checks(prefix)
    ok = all(c["ok"] for c in checks)
    note = faults.practice_record(prefix)
    fixed = note.name if ok and note else None
    detail = (
        "failing: " + ", ".join(str(c["name"]) for c in checks if not c["ok"]) if not ok else ""
    )
    if note is not None and fixed:
        detail = f"fixed {fixed} after {time.time() - note.started:.0f} s"
    if note is not None:  # which lab: the report groups a fault's attempts by it
        detail = f"[{note.lab_id}] {detail}"
    save(Attempt("fault" if note else "lab", ok, time.time(), detail))
    return {"ok": ok, "fault_lab": note is not None, "checks": checks, "fixed": fixed}


def format_check(result: CheckReport) -> str:
    """:func:`check_local_lab`'s result as lines: one check a line, then the verdict."""
    lines = [
        f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']:<16} {c['detail']}" for c in result["checks"]
    ]
    if result["ok"]:
        verdict = f"all checks passed: the lab works (it was: {result['fixed']})"
        verdict = verdict if result["fixed"] else "all checks passed: the lab works"
    else:
        failed = sum(not c["ok"] for c in result["checks"])
        verdict = f"{failed} check(s) FAILED: the lab is broken"
    return "\n".join([*lines, verdict])
