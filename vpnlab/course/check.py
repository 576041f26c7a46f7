"""``vpnlab check``: does the lab work, end to end? Symptom by symptom, never naming a fault.

The checks a student's repair must pass (a troubleshooting lab, ``vpnlab lab up --fault``, or
any lab), each from the first client:

    daemons running        the VPN server and client processes are alive
    tunnel up              a ping to the server's tunnel address (10.8.0.1) is answered
    ping web               a ping to web (203.0.113.10) is answered
    route via tun0         ``ip route get`` sends web's traffic into tun0
    who-am-I               web sees the server's address (NAT), not the client's
    big packets            a ping as large as tun0's MTU, with DF, is answered
    big download           1 MB over HTTP arrives whole (its SHA-256)
    counters               during the checks the client got datagrams back and neither
                           daemon dropped one
    not restarted          (a fault lab) the VPN daemons are those the fault was set in: a
                           restart re-applies routes, forwarding and NAT and hides a fault

Each run appends one Attempt to the progress file (``progress.py``): item ``fault`` in a fault
lab (its detail names the fault only once it is fixed), ``lab`` otherwise. The per-student
report of those attempts and the notebooks' exercises is in ``course/report.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from vpnlab.core.packet import LINK_SCOPE_DROP
from vpnlab.instruments.whoami import pattern_sha256
from vpnlab.lab import faults
from vpnlab.lab.inspection import read_status_file, status
from vpnlab.lab.nodes import run_in, wait_for
from vpnlab.lab.state import alive, record_of, state_dir, topology_of

from .progress import Attempt, record

CHECKS = (
    "daemons running",
    "tunnel up",
    "ping web",
    "route via tun0",
    "who-am-I",
    "big packets",
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


def _ping(prefix: str, node: str, address: str, *extra: str) -> tuple[bool, str]:
    argv = ["ping", "-c", "2", "-i", "0.2", "-W", "1", *extra, address]
    done = run_in(prefix, node, argv, timeout=10)
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    summary = next((x for x in lines if "transmitted" in x), lines[-1] if lines else "")
    return done.returncode == 0, summary.strip()


def _in_node(prefix: str, node: str, code: str, *args: str, timeout: float = 8) -> str:
    """A Python one-liner in ``node``: its last line of output (or of its error)."""
    try:
        done = run_in(prefix, node, [sys.executable, "-c", code, *args], timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out"
    lines = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()
    return lines[-1]


def _mtu(prefix: str, node: str) -> int:
    link = run_in(prefix, node, ["ip", "-j", "link", "show", "tun0"])
    try:
        return int(json.loads(link.stdout)[0]["mtu"])
    except (ValueError, IndexError, KeyError):
        return 0


def _status_files(prefix: str, client: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = state_dir(prefix)
    client_st = read_status_file(folder / f"client-{client}.json") or {}
    return client_st, read_status_file(folder / "server.json") or {}


def _counters(prefix: str, client: str, since: float = 0.0) -> tuple[dict, dict]:
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
    return sum(n for reason, n in drops.items() if reason != LINK_SCOPE_DROP)


def _got_back(counters: dict[str, Any]) -> int:
    return int(counters.get("packets_to_tun", 0)) + int(counters.get("keepalives_received", 0))


def run_checks(prefix: str) -> list[dict[str, Any]]:
    """Every check (module docstring) as ``{"name", "ok", "detail"}``, in order.

    A check that needs an earlier one (the download needs the ping to web) fails at once,
    saying so, instead of waiting for its timeout.
    """
    topo = topology_of(prefix)
    client, server_tunnel_ip = topo.tunnel.clients[0], topo.tunnel.server_address.split("/")[0]
    info = status(prefix)
    results: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> bool:
        results.append({"name": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    before = _counters(prefix, client)
    names = ["server", f"client-{client}"]
    dead = [n for n in names if not (info["daemons"].get(n) or {}).get("alive")]
    add("daemons running", not dead, f"not running: {', '.join(dead)}" if dead else "all alive")
    add("tunnel up", *_ping(prefix, client, server_tunnel_ip))
    web = add("ping web", *_ping(prefix, client, topo.web_ip))
    route = run_in(prefix, client, ["ip", "-j", "route", "get", topo.web_ip]).stdout
    dev = (json.loads(route or "[{}]")[0] or {}).get("dev")
    add("route via tun0", dev == "tun0", f"dev {dev}")
    answer = _in_node(prefix, client, _FETCH, info["web"]) if web else "needs ping web"
    add("who-am-I", answer == f"you are {topo.server_ip}", answer)
    mtu = _mtu(prefix, client)
    big = _ping(prefix, client, topo.web_ip, "-M", "do", "-s", str(mtu - 28)) if web else None
    why = big[1] if big else "needs ping web"
    add("big packets", bool(mtu and big and big[0]), f"tun0 mtu {mtu}: {why}" if mtu else "no tun0")
    url = f"{info['web']}bytes/{DOWNLOAD_BYTES}"
    digest = _in_node(prefix, client, _DOWNLOAD, url) if web else "needs ping web"
    whole = digest == pattern_sha256(DOWNLOAD_BYTES)
    add("big download", whole, "1 MB intact" if whole else digest)
    add("counters", *_counters_sane(before, _counters(prefix, client, since=time.time())))
    note = faults.recorded(prefix)
    if note is not None:
        add("not restarted", *_same_daemons(prefix, note))
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


def _same_daemons(prefix: str, note: dict[str, Any]) -> tuple[bool, str]:
    daemons = record_of(prefix).get("daemons", {})
    pids = note.get("pids") or {}
    same = all((daemons.get(n) or {}).get("pid") == pid and alive(pid) for n, pid in pids.items())
    if same:
        return True, "the daemons the exercise started"
    return False, "the VPN was restarted (this hides faults): vpnlab lab up --fault ... again"


def check(prefix: str, save: Callable[[Attempt], None] = record) -> dict[str, Any]:
    """Run the checks and record one Attempt (``fault`` or ``lab``).

    Returns ``{"ok", "fault_lab", "checks", "fixed"}``; ``fixed`` is the fault's name once a
    fault lab passes (None before).
    """
    record_of(prefix)  # LabError for a lab that is not up
    checks = run_checks(prefix)
    ok = all(c["ok"] for c in checks)
    note = faults.recorded(prefix)
    fixed = faults.identify(prefix) if ok and note else None
    detail = "failing: " + ", ".join(c["name"] for c in checks if not c["ok"]) if not ok else ""
    if fixed:
        detail = f"fixed {fixed} after {time.time() - float(note['started']):.0f} s"
    if note is not None:  # which lab: the report groups a fault's attempts by it
        detail = f"[{str(note.get('salt'))[:8]}] {detail}"
    save(Attempt("fault" if note else "lab", ok, time.time(), detail))
    return {"ok": ok, "fault_lab": note is not None, "checks": checks, "fixed": fixed}


def format_check(result: dict[str, Any]) -> str:
    """:func:`check`'s result as lines: one check a line, then the verdict."""
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
