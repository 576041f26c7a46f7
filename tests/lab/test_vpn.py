"""The VPN daemons in real namespaces: every step of the design notes, in every cipher.

Each test builds its own lab under a fresh prefix (the ``vpn_lab`` fixture) and removes it, also
when the test fails. Timing checks are wide: they prove the 2.5 s and 6 s timeouts fire at about
the right time, not the scheduler's precision.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.core.constants import CONNECT_TIMEOUT_S, LIVENESS_TIMEOUT_S, PORT

from .helpers import (
    CLIENT_GATEWAY,
    CLIENT_IP,
    SERVER_IP,
    TUNNEL_NETWORK,
    WEB_IP,
    WEB_URL,
    wait_until,
)

pytestmark = pytest.mark.lab

CIPHERS = ["plain", "esp-null", "esp-aes-gcm"]


def daemon(handle, name: str) -> dict:
    return lab.status(handle.prefix)["daemons"][name]


def log_text(handle, name: str) -> str:
    return Path(daemon(handle, name)["log"]).read_text()


def routes(handle, node: str) -> str:
    return handle.run(node, "ip", "route").stdout


def whoami(handle, node: str = "r1") -> str:
    return handle.run(node, "curl", "-s", "--max-time", "3", f"{WEB_URL}/").stdout.strip()


def derived_mtu(handle) -> int:
    """The daemons' default tun MTU: 1500 - 28 - the cipher's overhead (constants.tun_mtu)."""
    from vpnlab.core.constants import tun_mtu
    from vpnlab.wire.crypto import algorithm

    cipher = lab.status(handle.prefix)["cipher"]
    return tun_mtu(0 if cipher == "plain" else algorithm(cipher).overhead_bytes)


def server_counters(handle) -> dict:
    return lab.status(handle.prefix)["tunnel"]["server"]["counters"]


@pytest.mark.parametrize("vpn_lab", CIPHERS, indirect=True)
def test_tunnel_carries_ping_and_http_through_nat(vpn_lab):
    """Hello, CreateTunDev, Ifconfig, SetRouting(1)/(0), NAT: r1 reaches web as r2."""
    table = routes(vpn_lab, "r1")
    assert "0.0.0.0/1 dev tun0" in table and "128.0.0.0/1 dev tun0" in table
    assert f"{SERVER_IP} via {CLIENT_GATEWAY} dev eth0" in table  # the host route to the server
    link = vpn_lab.run("r1", "ip", "-d", "link", "show", "tun0").stdout
    assert "tun type tun pi off" in link and f"mtu {derived_mtu(vpn_lab)}" in link
    ping = vpn_lab.run("r1", "ping", "-c", "3", "-i", "0.2", "-W", "2", WEB_IP)
    assert ping.returncode == 0, ping.stdout
    assert whoami(vpn_lab) == f"you are {SERVER_IP}"
    nat = vpn_lab.run("r2", "nft", "list", "table", "ip", "vpnlab").stdout
    assert f'ip saddr {TUNNEL_NETWORK} ip daddr != {TUNNEL_NETWORK} oifname "eth0"' in nat
    assert "masquerade" in nat
    assert vpn_lab.run("r2", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    def counted() -> bool:  # the status file is rewritten every second
        counters = server_counters(vpn_lab)
        return counters["packets_to_tun"] >= 3 and counters["packets_from_tun"] >= 3

    assert wait_until(counted, 3) is not None, server_counters(vpn_lab)


@pytest.mark.parametrize("vpn_lab", ["esp-aes-gcm"], indirect=True)
def test_whoami_is_r1_without_the_vpn_and_r2_with_it(vpn_lab):
    assert whoami(vpn_lab) == f"you are {SERVER_IP}"
    lab.stop_vpn(vpn_lab.prefix)
    assert whoami(vpn_lab) == f"you are {CLIENT_IP}"
    assert "tun0" not in routes(vpn_lab, "r1")
    lab.start_vpn(vpn_lab.prefix, "esp-aes-gcm")
    assert whoami(vpn_lab) == f"you are {SERVER_IP}"


def run_client_in_r1(handle, *extra: str, timeout_s: float = 15) -> tuple[int, str, float]:
    """Run ``vpnlab client`` in the foreground in r1: exit code, output, seconds it took."""
    argv = [sys.executable, "-m", "vpnlab", "client", "--server", SERVER_IP, *extra]
    start = time.monotonic()
    done = handle.run("r1", *argv, timeout=timeout_s)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


@pytest.mark.parametrize("vpn_lab", ["plain", "esp-aes-gcm"], indirect=True)
def test_server_down_client_gives_up_after_connect_timeout(vpn_lab):
    """ClientConnection: no answer within 2.5 s -> "server unreachable", exit 3, nothing left."""
    lab.stop_vpn(vpn_lab.prefix)
    before = routes(vpn_lab, "r1")
    extra = ["--cipher", lab.status(vpn_lab.prefix)["cipher"]]
    config = Path(lab.status(vpn_lab.prefix)["state_dir"]) / "identity" / "r1.conf"
    if config.exists():
        extra += ["--config", str(config)]
    code, output, took_s = run_client_in_r1(vpn_lab, *extra)
    assert code == 3, output
    assert "server unreachable" in output
    assert "Traceback" not in output
    assert CONNECT_TIMEOUT_S - 0.1 < took_s < CONNECT_TIMEOUT_S + 2.5
    assert routes(vpn_lab, "r1") == before
    assert vpn_lab.run("r1", "ip", "link", "show", "tun0").returncode != 0


@pytest.mark.parametrize("vpn_lab", CIPHERS, indirect=True)
def test_server_killed_client_notices_restores_routes_and_exits(vpn_lab):
    """Liveness: kill -9 the server; within ~6 s the client says "peer lost" and cleans up."""
    client_pid = daemon(vpn_lab, "client-r1")["pid"]
    os.kill(daemon(vpn_lab, "server")["pid"], signal.SIGKILL)
    killed = time.monotonic()
    took_s = wait_until(lambda: not daemon(vpn_lab, "client-r1")["alive"], 12)
    assert took_s is not None, "the client never noticed"
    assert LIVENESS_TIMEOUT_S - 2.5 < time.monotonic() - killed < LIVENESS_TIMEOUT_S + 3
    log = log_text(vpn_lab, "client-r1")
    assert "peer lost" in log and "cleaned up (peer lost)" in log
    table = routes(vpn_lab, "r1")
    assert "tun0" not in table and SERVER_IP not in table
    assert f"default via {CLIENT_GATEWAY} dev eth0" in table
    assert client_pid  # the recorded client is the one that exited


@pytest.mark.parametrize("vpn_lab", ["plain", "esp-aes-gcm"], indirect=True)
def test_client_killed_server_notices_within_liveness_timeout(vpn_lab):
    """Liveness on the server: kill -9 the client; within ~6 s its session is dropped."""

    def listed() -> bool:  # the server rewrites its status file once a second
        return bool(lab.status(vpn_lab.prefix)["tunnel"]["server"]["clients"])

    assert wait_until(listed, 3) is not None
    os.kill(daemon(vpn_lab, "client-r1")["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def session_gone() -> bool:
        server = lab.status(vpn_lab.prefix)["tunnel"]["server"]
        return not server["clients"]

    assert wait_until(session_gone, 12) is not None
    assert time.monotonic() - killed < LIVENESS_TIMEOUT_S + 3
    assert "closed: peer lost" in log_text(vpn_lab, "server")
    assert daemon(vpn_lab, "server")["alive"]  # it keeps listening for the next client


@pytest.mark.parametrize("vpn_lab", ["plain", "esp-aes-gcm"], indirect=True)
def test_sigterm_client_says_bye_and_cleans_up(vpn_lab):
    """CleanUp on SIGTERM: the server hears Bye at once; r1's routes are as before the VPN."""
    os.kill(daemon(vpn_lab, "client-r1")["pid"], signal.SIGTERM)
    took_s = wait_until(lambda: "closed: bye" in log_text(vpn_lab, "server"), 3)
    assert took_s is not None and took_s < 1.5
    assert wait_until(lambda: not daemon(vpn_lab, "client-r1")["alive"], 3) is not None
    table = routes(vpn_lab, "r1")
    assert "tun0" not in table and SERVER_IP not in table


@pytest.mark.parametrize("vpn_lab", ["esp-aes-gcm"], indirect=True)
def test_sigterm_server_removes_nat_and_tells_the_client(vpn_lab):
    os.kill(daemon(vpn_lab, "server")["pid"], signal.SIGTERM)
    assert wait_until(lambda: not daemon(vpn_lab, "server")["alive"], 3) is not None
    assert wait_until(lambda: not daemon(vpn_lab, "client-r1")["alive"], 3) is not None
    assert "the server closed the session (Bye)" in log_text(vpn_lab, "client-r1")
    ruleset = vpn_lab.run("r2", "nft", "list", "ruleset").stdout
    assert "vpnlab" not in ruleset
    assert vpn_lab.run("r2", "ip", "link", "show", "tun0").returncode != 0


GARBAGE_SENDER = r"""
import os, random, socket, sys, time
rng = random.Random(7)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
count, server = int(sys.argv[1]), (sys.argv[2], int(sys.argv[3]))
for i in range(count):
    size = rng.choice([0, 1, 3, 4, 8, 19, 20, 21, 60, 200, 1400, 1472])
    data = bytes([0xff]) if i % 50 == 0 else rng.randbytes(size)
    if i % 7 == 0 and data:
        data = b"\x45" + data[1:]  # looks like IPv4 at first glance
    sock.sendto(data, server)
    if i % 100 == 99:
        time.sleep(0.01)  # bursts of 100, well under the socket's buffer: about 10,000/s
"""

SPOOFED_SENDER = r"""
import random, sys
from scapy.all import IP, UDP, Raw, conf, send
conf.verb = 0
rng = random.Random(11)
src, dst, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
packets = [
    IP(src=src, dst=dst) / UDP(sport=port, dport=port)
    / Raw(rng.randbytes(rng.choice([1, 8, 24, 60, 300])))
    for _ in range(int(sys.argv[1]))
]
send(packets)
"""


def udp_receive_buffer_errors(handle, node: str) -> int:
    """The kernel's count of datagrams it dropped because a socket's buffer was full."""
    lines = [line.split() for line in handle.run(node, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [line for line in lines if line[0] == "Udp:"][:2]
    return int(values[names.index("RcvbufErrors")])


@pytest.mark.parametrize("vpn_lab", CIPHERS, indirect=True)
def test_garbage_datagrams_are_dropped_counted_and_harmless(vpn_lab):
    """As `nc -u` would: garbage from strangers and forged garbage from the client's address.

    Every datagram is accounted for: dropped and counted by the server, or (in a burst)
    dropped by the kernel before the server saw it, which /proc/net/snmp counts.
    """

    def datagram_drops() -> tuple[dict[str, int], int]:
        """The server's drops of datagrams (not tun0's own IPv6 chatter), and the kernel's."""
        drops = server_counters(vpn_lab)["drops"]
        overflow = udp_receive_buffer_errors(vpn_lab, "r2")
        return {why: n for why, n in drops.items() if not why.startswith("tun: ")}, overflow

    def accounted(count: int, before: tuple[dict[str, int], int]) -> tuple[dict[str, int], int]:
        """Wait until `count` more datagrams are dropped by the server or the kernel."""
        settled: list[tuple[dict[str, int], int]] = []

        def all_accounted() -> bool:
            drops, overflow = datagram_drops()
            seen = {why: n - before[0].get(why, 0) for why, n in drops.items()}
            seen = {why: n for why, n in seen.items() if n}
            settled[:] = [(seen, overflow - before[1])]
            return sum(seen.values()) + overflow - before[1] == count

        assert wait_until(all_accounted, 5) is not None, (settled, count)
        return settled[0]

    before = datagram_drops()
    vpn_lab.run(
        "web", sys.executable, "-c", GARBAGE_SENDER, "2000", SERVER_IP, str(PORT), check=True
    )
    from_strangers, overflow = accounted(2000, before)
    assert from_strangers == {"unknown peer": 2000 - overflow}, from_strangers
    assert from_strangers["unknown peer"] >= 1000, (from_strangers, overflow)

    before = datagram_drops()
    spoofed = vpn_lab.run(
        "isp",
        sys.executable,
        "-c",
        SPOOFED_SENDER,
        "300",
        CLIENT_IP,
        SERVER_IP,
        str(PORT),
        timeout=60,
    )
    assert spoofed.returncode == 0, spoofed.stderr
    from_client_address, overflow = accounted(300, before)
    assert "unknown peer" not in from_client_address, from_client_address
    assert sum(from_client_address.values()) >= 150, (from_client_address, overflow)
    assert daemon(vpn_lab, "server")["alive"] and daemon(vpn_lab, "client-r1")["alive"]
    assert "Traceback" not in log_text(vpn_lab, "server")
    ping = vpn_lab.run("r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP)
    assert ping.returncode == 0, ping.stdout
    assert whoami(vpn_lab) == f"you are {SERVER_IP}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["client", "--server", SERVER_IP, "--cipher", "plain"], "refusing to change the host's"),
        (["client", "--server", "not-an-address"], "invalid ip_address value"),
        (["server", "--cipher", "esp-aes-gcm"], "needs a pre-shared key"),
        (
            ["client", "--server", SERVER_IP, "--cipher", "esp-null", "--psk-file", "/nonexistent"],
            "cannot read the pre-shared key",
        ),
        (["server", "--cipher", "plain", "--tun", "a-very-long-interface-name"], "argument --tun"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(argv, message):
    """Run in the host namespace on purpose: the daemons must refuse before touching it."""
    done = subprocess.run(
        [sys.executable, "-m", "vpnlab", *argv], capture_output=True, text=True, timeout=20
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_tun_name_too_long_is_a_clear_error(prefix):
    lab.up(prefix=prefix, vpn=False)
    done = lab.exec_in(
        prefix,
        "r2",
        [sys.executable, "-m", "vpnlab", "server", "--cipher", "plain", "--tun", "x" * 16],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2  # a usage error: refused when parsed, before anything runs
    assert f"interface name '{'x' * 16}' has 16 characters" in done.stderr
    assert "Traceback" not in done.stderr
