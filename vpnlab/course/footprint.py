"""What a lab costs a class: ``vpnlab bench --footprint`` (``scripts/bench.sh --footprint``).

In a lab of its own (prefix ``vfoot-``, removed at the end, also when something fails):

    lab up / lab down    wall-clock seconds of ``lab.up`` and ``lab.start_vpn`` (default cipher,
                         ``--datapath`` fast or simple: the daemons' option) and ``lab.down``
    CPU of lab up        CPU seconds of ``lab.up``: this process, the commands it ran and
                         reaped (ip, nft, sysctl), and the daemons it started, up to their start
    start-up             per daemon, seconds from its start to ready (the server's status
                         file, the client connected, who-am-I listening): ``lab.up`` records it
    RSS                  VmRSS (/proc/PID/status) of each daemon of the record (server, every
                         client, who-am-I) and the sum over every process in the lab's namespaces
    idle CPU             utime + stime (/proc/PID/stat) of those processes over an idle window
                         (the daemons asleep between keepalives), as per cent of one core

The kernel's own work for the lab (softirqs of the veths, forwarding, NAT) is charged to no
process and is not in these numbers; when the lab is idle it is a keepalive every 2 s.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from vpnlab import lab
from vpnlab.course.bench import cpu_ticks, say
from vpnlab.lab.state import load, ns_ids, pids_in, prefix_namespaces
from vpnlab.wire.ciphers import DEFAULT_CIPHER

FOOTPRINT_PREFIX = "vfoot-"
IDLE_S = 10.0


class Measured(TypedDict):
    """:func:`measure`: RSS per daemon (kB), the lab's processes, their RSS (kB) and their
    idle CPU (% of one core)."""

    rss_kb: dict[str, int]
    processes: int
    lab_rss_kb: int
    idle_cpu_percent: float


def rss_kb(pid: int) -> int:
    """VmRSS of a process in kB (0 if it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def lab_processes(prefix: str) -> list[int]:
    """Every process inside the lab's namespaces."""
    return sorted(pids_in(ns_ids(prefix_namespaces(prefix))))


def idle_cpu_percent(pids: list[int], seconds: float) -> float:
    """CPU of ``pids`` over ``seconds`` of sleeping here, in per cent of one core."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    used = sum(max(0, cpu_ticks(pid) - ticks) for pid, ticks in before.items())
    return 100 * used / os.sysconf("SC_CLK_TCK") / elapsed


def own_cpu_s() -> float:
    """CPU seconds of this process and of the children it reaped."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def measure(pids_of: dict[str, int], prefix: str, idle_s: float) -> Measured:
    """RSS of each daemon and of the whole lab, then its idle CPU (the lab is up)."""
    processes = lab_processes(prefix)
    return {
        "rss_kb": {name: rss_kb(pid) for name, pid in pids_of.items()},
        "processes": len(processes),
        "lab_rss_kb": sum(rss_kb(pid) for pid in processes),
        "idle_cpu_percent": round(idle_cpu_percent(processes, idle_s), 3),
    }


def footprint(
    prefix: str = FOOTPRINT_PREFIX,
    idle_s: float = IDLE_S,
    cipher: str = DEFAULT_CIPHER,
    progress: Callable[[str], None] = say,
    datapath: str = "fast",
) -> dict[str, Any]:
    """Build a lab with the VPN (its daemons on ``datapath``), measure it, remove it; the
    document :func:`format_footprint` prints. The lab is removed whatever happens (``lab.up``
    and the window are bounded)."""
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {"cpus": os.cpu_count(), "model": cpu_model(), "kernel": platform.release()},
        "cipher": cipher,
        "datapath": datapath,
        "idle_s": idle_s,
    }
    progress(f"footprint: lab up ({prefix}, VPN, {cipher}, {datapath} path) ...")
    start, cpu = time.monotonic(), own_cpu_s()
    try:
        lab.up(prefix=prefix, cipher=cipher, vpn=False)
        datapath_args = ["--datapath", datapath]
        lab.start_vpn(prefix, cipher, server_args=datapath_args, client_args=datapath_args)
        document["up_s"] = round(time.monotonic() - start, 2)
        record = load(prefix)
        daemons = record.daemons if record else {}
        pids_of = {name: daemon.pid for name, daemon in daemons.items()}
        daemons_cpu = sum(cpu_ticks(pid) for pid in pids_of.values()) / os.sysconf("SC_CLK_TCK")
        document["up_cpu_s"] = round(own_cpu_s() - cpu + daemons_cpu, 2)
        document["startup_s"] = {
            name: daemon.startup_s
            for name, daemon in daemons.items()
            if daemon.startup_s is not None
        }
        progress(f"footprint: up in {document['up_s']} s; idle for {idle_s} s ...")
        document.update(measure(pids_of, prefix, idle_s))
    finally:
        start = time.monotonic()
        lab.down(prefix)
        document["down_s"] = round(time.monotonic() - start, 2)
    document["left"] = prefix_namespaces(prefix)
    return document


def format_footprint(document: dict[str, Any]) -> str:
    """The footprint as a Markdown table (it goes into the README as it is)."""
    mib = 1024
    rows = [
        (
            f"lab up (VPN, {document['cipher']}, {document['datapath']} path)",
            f"{document['up_s']:.2f}",
            "s",
        ),
        (
            "CPU of lab up (this process, its commands, the daemons)",
            f"{document['up_cpu_s']:.2f}",
            "s",
        ),
        ("lab down", f"{document['down_s']:.2f}", "s"),
        *(
            (f"start-up {name} (start to ready)", f"{seconds:.2f}", "s")
            for name, seconds in sorted(document["startup_s"].items())
        ),
        *(
            (f"RSS {name}", f"{kb / mib:.1f}", "MiB")
            for name, kb in sorted(document["rss_kb"].items())
        ),
        (
            f"RSS whole lab ({document['processes']} processes)",
            f"{document['lab_rss_kb'] / mib:.1f}",
            "MiB",
        ),
        (
            f"CPU of the idle lab over {document['idle_s']:g} s",
            f"{document['idle_cpu_percent']:.2f}",
            "% of one core",
        ),
    ]
    lines = ["| what | value | unit |", "|---|---:|---|"]
    lines += [f"| {what} | {value} | {unit} |" for what, value, unit in rows]
    machine = document["machine"]
    lines.append("")
    lines.append(
        f"{document['date']}, {machine['cpus']} cores ({machine['model']}), "
        f"kernel {machine['kernel']}"
    )
    return "\n".join(lines)
