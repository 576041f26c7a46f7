"""Notebook 15's experiment: Python's data path against the kernel's (``--kernel-dataplane``).

The kernel under test is Debian's, in a VM beside r2 (``vpnlab.lab.vm``), because a kernel
without ESP (the course server's, the CI machine's) cannot run the kernel's data plane:

    r2: vpnlab server (Python), iperf3 -s  ---- vmtap ==== VM: vpnlab client
                                                               python:  tun0 <-> the daemon
                                                               kernel:  xfrm (ESP in UDP)

For each data path the client shakes hands with the server (PSK, esp-aes-gcm), exports its
``esp_sa`` rows, then three pings cross the tunnel while dumpcap records vmtap, and iperf3
measures TCP from the VM to the server's tunnel address. tshark opens both captures with the
rows of their own session. Everything runs under TCG (an emulated CPU): the numbers compare
the two paths on the same emulated machine, not with a real one.

``python -m vpnlab.course.dataplane`` runs it once (a few minutes, as root) and writes the
result the notebook shows on a kernel without ESP into ``dataplane_vm.json`` beside this
module (package data: the notebook finds it wherever it is copied).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from vpnlab import lab
from vpnlab.core.errors import LabError
from vpnlab.lab.nodes import python_argv
from vpnlab.lab.state import namespace
from vpnlab.lab.vm import HOST_ADDR, KernelVM, VmResult
from vpnlab.lab.vm_image import build_image

CIPHER = "esp-aes-gcm"
SERVER_TUNNEL = "10.8.0.1"
IPERF_SECONDS = 5
CLIENT_PORT = 4501
SAVED = Path(__file__).with_name("dataplane_vm.json")
"""The result of one run of :func:`compare`, for kernels without ESP."""


class PathResult(TypedDict):
    """One data path (:func:`one_path`): what tshark and iperf3 saw."""

    pings_answered: bool
    xfrm_states: int
    stacks: list[str]
    mbit_s: float


class Comparison(TypedDict):
    """:func:`compare`'s result (and ``SAVED``'s): the VM, the times, both data paths."""

    kernel_release: str
    boot_s: float
    total_s: float
    when: str
    paths: dict[str, PathResult]


def start_server(
    r2: str, psk: Path, cipher: str, log: Path | None = None, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """vpnlab's server in r2's namespace, without a liveness timeout: a kernel-data-plane
    client's keepalives are NAT-keepalives, which prove nothing (anyone can send 0xFF)."""
    argv = python_argv("-m", "vpnlab", "server", "--psk-file", str(psk), "--cipher", cipher)
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(
        ["ip", "netns", "exec", r2, *argv, "--liveness-timeout", "0", *extra],
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def run_client(
    vm: KernelVM,
    psk: Path,
    rows: Path,
    kernel: bool,
    cipher: str = CIPHER,
    extra: tuple[str, ...] = (),
) -> None:
    """vpnlab's client in the VM in the background, until it says it is up (bounded).

    It runs in the VM's own network namespace (``--allow-host-changes``), on port 4501 (4500
    may be taken by a test's ESP-in-UDP socket), and exports its esp_sa rows to ``rows``.
    """
    argv = python_argv("-m", "vpnlab", "client", "--server", HOST_ADDR, "--psk-file")
    argv += [str(psk), "--cipher", cipher, "--local-port", str(CLIENT_PORT), "--esp-sa-file"]
    argv += [str(rows), "--allow-host-changes", *(["--kernel-dataplane"] if kernel else [])]
    argv += extra
    log = vm.work / "client.log"
    ready = "kernel data plane" if kernel else "state connecting -> connected"
    vm.must(f"ip route replace default via {HOST_ADDR}")
    vm.must(f"nohup {' '.join(argv)} > {log} 2>&1 & echo $! > /tmp/client.pid")
    alive = "kill -0 $(cat /tmp/client.pid) 2>/dev/null"
    wait = f"for i in $(seq 240); do grep -q '{ready}' {log} && exit 0; {alive} || exit 1; "
    if vm.run(wait + "sleep 1; done; exit 1", timeout_s=400).returncode != 0:
        raise LabError(f"the client in the VM did not come up: {log.read_text()[-500:]}")


def stop_client(vm: KernelVM) -> str:
    """SIGTERM, wait for its CleanUp (bounded); the client's log."""
    pid = "$(cat /tmp/client.pid)"
    vm.run(f"kill {pid}; for i in $(seq 120); do kill -0 {pid} || exit 0; sleep 1; done", 240)
    return (vm.work / "client.log").read_text()


def decrypted_stacks(pcap: Path, rows_file: Path) -> list[str]:
    """tshark's protocol stack of each UDP frame, opened with the exported esp_sa rows."""
    rows = [r for r in rows_file.read_text().splitlines() if r and not r.startswith("#")]
    argv = ["tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE"]
    for row in rows:
        argv += ["-o", f"uat:esp_sa:{row}"]
    out = subprocess.run(argv + ["-T", "fields", "-e", "frame.protocols"], capture_output=True,
                         text=True, timeout=60).stdout  # fmt: skip
    return out.split()


def captured_pings(vm: KernelVM, r2: str, pcap: Path) -> VmResult:
    """Three pings from the VM to the server's tunnel address, dumpcap on vmtap meanwhile."""
    dumpcap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            r2,
            "dumpcap",
            "-q",
            "-i",
            "vmtap",
            "-f",
            "udp",
            "-a",
            "duration:60",
            "-w",
            str(pcap),
        ],  # fmt: skip
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    ping = vm.run(f"ping -c 3 -i 0.3 -W 5 {SERVER_TUNNEL}", timeout_s=120)
    time.sleep(0.5)
    dumpcap.send_signal(signal.SIGINT)
    dumpcap.wait(timeout=20)
    return ping


def one_path(vm: KernelVM, r2: str, kernel: bool) -> PathResult:
    """One data path: handshake, pings under capture, iperf3; what tshark and iperf3 saw."""
    name = "kernel" if kernel else "python"
    psk, rows, pcap = (vm.work / f"{name}.{ext}" for ext in ("psk", "esp_sa", "pcapng"))
    psk.write_text(os.urandom(32).hex() + "\n")
    psk.chmod(0o600)
    server = start_server(r2, psk, CIPHER)
    try:
        time.sleep(3)  # the server's tun0 and socket
        run_client(vm, psk, rows, kernel)
        ping = captured_pings(vm, r2, pcap)
        iperf = vm.run(f"iperf3 -c {SERVER_TUNNEL} -t {IPERF_SECONDS} -J", timeout_s=120)
        states = vm.run("ip xfrm state | grep -c 'proto esp'").output.strip()
        stop_client(vm)
    finally:
        server.terminate()
        server.wait(timeout=10)
    report = json.loads(iperf.output) if iperf.returncode == 0 else {}
    received = report.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
    return {
        "pings_answered": ping.returncode == 0,
        "xfrm_states": int(states or 0),
        "stacks": decrypted_stacks(pcap, rows),
        "mbit_s": round(received / 1e6, 1),
    }


def compare(prefix: str = "dp-") -> Comparison:
    """Build a lab, boot the VM beside r2, measure both data paths; always tear down."""
    started = time.monotonic()
    image = build_image()
    lab.up(prefix=prefix, vpn=False)
    r2 = namespace(prefix, "r2")
    iperf = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="vpnlab-dataplane-") as work,
            KernelVM(image, r2, Path(work)) as vm,
        ):
            iperf = subprocess.Popen(
                ["ip", "netns", "exec", r2, "iperf3", "-s"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            paths = {"python": one_path(vm, r2, False), "kernel": one_path(vm, r2, True)}
            release, boot_s = vm.release, vm.boot_s
    finally:
        if iperf is not None:
            iperf.terminate()
            iperf.wait(timeout=10)
        lab.down(prefix)
    return {
        "kernel_release": release,
        "boot_s": round(boot_s, 1),
        "total_s": round(time.monotonic() - started, 1),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "paths": paths,
    }


def saved_result() -> Comparison:
    """The saved run (``SAVED``)."""
    saved: Comparison = json.loads(SAVED.read_text())
    return saved


if __name__ == "__main__":
    result = compare()
    SAVED.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
