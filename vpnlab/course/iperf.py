"""iperf3 from r1 to web, as the benchmark and the TCP-meltdown experiment both run it.

The server on web answers exactly one test (``iperf3 -s -1``) and is listening before the
client starts; :func:`iperf_result` reads goodput and retransmits from the client's ``-J``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator

from vpnlab.core.errors import VpnlabError
from vpnlab.lab.build import listening
from vpnlab.lab.nodes import popen_in, wait_for
from vpnlab.lab.topology import DEFAULT_TOPOLOGY

WEB = DEFAULT_TOPOLOGY.web_ip
"""Where the iperf3 server listens: web, 203.0.113.10."""
IPERF_PORT = 5201


class IperfError(VpnlabError):
    """iperf3 gave no result (the test failed)."""


@contextlib.contextmanager
def iperf_server(prefix: str, limit_s: int) -> Iterator[None]:
    """iperf3 on web for exactly one test (``-s -1``), listening before the block starts;
    afterwards waited for, or killed if it hangs."""
    server = popen_in(
        prefix,
        "web",
        ["timeout", str(limit_s), "iperf3", "-s", "-1", "-B", WEB],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(server.pid, IPERF_PORT), 3.0)
        yield
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def iperf_result(stdout: str) -> tuple[float, int | None]:
    """Goodput (Mbit/s) and the sender's retransmits from ``iperf3 -J``.

    Raises:
        IperfError: not an iperf3 JSON report (the test failed).
    """
    try:
        end = json.loads(stdout)["end"]
        return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits")
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: not JSON at all
        raise IperfError(f"no iperf3 result: {exc!r}") from None
