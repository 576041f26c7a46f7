"""Tunnel breaking (issue 12): the VPN server frozen (SIGSTOP) during a TCP download.

A 3 s pause is shorter than the 6 s liveness timeout: TCP retransmits, the download survives.
An 8 s pause is longer: the client reports "peer lost" and exits, the server drops the session.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.instruments import capture
from vpnlab.instruments.whoami import pattern_sha256
from vpnlab.lab import state

from .helpers import WEB_IP, WEB_URL

pytestmark = pytest.mark.lab

SIZE = 40_000_000
URL = f"{WEB_URL}/bytes/{SIZE}"


def pid_of(prefix: str, name: str) -> int | None:
    info = lab.status(prefix)["daemons"].get(name) or {}
    return info.get("pid") if info.get("alive") else None


def log_of(prefix: str, name: str) -> str:
    path = state.state_dir(prefix) / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def download_with_pause(prefix: str, pause_s: float, out: Path, after_bytes: int = 4_000_000):
    """curl in r1 to ``out``; once ``after_bytes`` arrived, the server stopped for ``pause_s``.

    At full speed, data is surely in flight when the server stops (a rate-limited receiver
    may have closed its window, and then web sends zero-window probes, not retransmissions).
    """
    server = pid_of(prefix, "server")
    curl = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            state.namespace(prefix, "r1"),
            "curl",
            "-s",
            "-S",
            "-m",
            "60",
            "-o",
            str(out),
            URL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < after_bytes):
        time.sleep(0.01)
    os.kill(server, signal.SIGSTOP)
    stopped = time.time()
    try:
        time.sleep(pause_s)
    finally:
        os.kill(server, signal.SIGCONT)
    return curl, stopped


def retransmission_timeouts(times: list[float], burst_s: float = 0.05) -> list[float]:
    """The moments web's TCP retransmitted, a burst of retransmissions counted once.

    Loss recovery can resend several segments within a millisecond (SACK, RACK) as the tunnel
    freezes; each retransmission timeout after that (200 ms at least, RFC 6298) resends one.
    """
    moments: list[float] = []
    for t in sorted(times):
        if not moments or t - moments[-1] > burst_s:
            moments.append(t)
    return moments


def test_a_3s_pause_of_the_server_is_survived_with_tcp_retransmissions(vpn_lab, tmp_path: Path):
    prefix = vpn_lab.prefix
    client = pid_of(prefix, "client-r1")
    with capture.start_capture(
        prefix,
        "web",
        "eth0",
        tmp_path / "web.pcapng",
        count=5000,
        duration_s=40,
        capture_filter="tcp port 80",
    ) as cap:
        curl, stopped = download_with_pause(prefix, 3.0, tmp_path / "download.bin")
        out, _ = curl.communicate(timeout=60)
    got = hashlib.sha256((tmp_path / "download.bin").read_bytes()).hexdigest()
    assert got == pattern_sha256(SIZE), out  # the download survived, intact
    assert pid_of(prefix, "client-r1") == client  # the session survived
    assert "peer lost" not in log_of(prefix, "client-r1")
    web_retransmits = f"tcp.analysis.retransmission and ip.src == {WEB_IP}"
    retrans = capture.fields(cap.path, ["frame.time_epoch"], display_filter=web_retransmits)
    during = [float(t) - stopped for (t,) in retrans if 0 <= float(t) - stopped < 3.0]
    timeouts = retransmission_timeouts(during)
    assert len(timeouts) >= 3, during  # web's TCP retransmitted while the tunnel was frozen ...
    gaps = [b - a for a, b in pairwise(timeouts)]
    assert all(1.4 < b / a < 2.6 for a, b in pairwise(gaps)), (gaps, during)  # ... backing off x2


def test_an_8s_pause_of_the_server_ends_the_session(vpn_lab, tmp_path: Path):
    prefix = vpn_lab.prefix
    client = pid_of(prefix, "client-r1")
    curl, _ = download_with_pause(prefix, 8.0, tmp_path / "download.bin")
    try:
        deadline = time.monotonic() + 12  # 6 s after the backlog
        while "closed: peer lost" not in log_of(prefix, "server") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        curl.kill()
        curl.wait(timeout=5)
    client_log = log_of(prefix, "client-r1")
    assert "peer lost: no datagram from the server for 6 s" in client_log
    assert not state.alive(client)  # exit 4 and CleanUp
    assert "closed: peer lost" in log_of(prefix, "server")  # the server dropped it too
    assert (
        "tun0"
        not in lab.exec_in(prefix, "r1", ["ip", "route"], capture_output=True, text=True).stdout
    )
