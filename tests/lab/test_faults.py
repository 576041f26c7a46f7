"""A server that survives its students: many clients, kills, loss, floods, reconnects, soak.

Every lab here is built under a fresh prefix and removed afterwards (the ``prefix`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.core.constants import PORT
from vpnlab.instruments.whoami import pattern_sha256
from vpnlab.lab import build, impair, state
from vpnlab.lab.topology import make_topology

from .helpers import CLIENT_IP, SERVER_IP, SERVER_TUNNEL_IP, WEB_IP, WEB_URL, wait_until

pytestmark = pytest.mark.lab


def in_node(prefix: str, node: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", state.namespace(prefix, node), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def server_status(prefix: str) -> dict:
    return lab.status(prefix)["tunnel"]["server"] or {}


def download(prefix: str, node: str, size: int, timeout_s: int = 60) -> str:
    """sha256 of ``/bytes/<size>`` fetched from web by ``node`` (through its routes)."""
    done = lab.exec_in(
        prefix,
        node,
        ["sh", "-c", f"curl -s --max-time {timeout_s} {WEB_URL}/bytes/{size} | sha256sum"],
        capture_output=True,
        text=True,
        timeout=timeout_s + 10,
    )
    return done.stdout.split()[0] if done.stdout else ""


def test_twenty_clients_then_half_killed(prefix):
    """20 clients at once through one server; kill -9 half; the rest carry on; ~6 s cleanup."""
    started = time.monotonic()
    lab.up(prefix=prefix, topology=make_topology(20))
    up_s = time.monotonic() - started
    info = lab.status(prefix)
    clients = sorted(info["tunnel"]["clients"])
    assert len(clients) == 20
    addresses = {info["tunnel"]["clients"][c]["tunnel_address"] for c in clients}
    assert len(addresses) == 20  # every client its own tunnel address
    # the server writes its status file once a second: it may still hold the last one's absence
    assert wait_until(lambda: len(server_status(prefix)["clients"]) == 20, 5) is not None

    def everyone_works(nodes: list[str]) -> None:
        procs = {
            node: in_node(
                prefix,
                node,
                "sh",
                "-c",
                f"ping -c 2 -i 0.2 -W 2 {WEB_IP} >/dev/null && curl -s --max-time 5 {WEB_URL}/",
            )
            for node in nodes
        }
        for node, proc in procs.items():
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0 and out.strip() == f"you are {SERVER_IP}", (node, out)

    everyone_works(clients)
    victims, survivors = clients[::2], clients[1::2]
    daemons = lab.status(prefix)["daemons"]
    for node in victims:
        os.kill(daemons[f"client-{node}"]["pid"], signal.SIGKILL)
    killed = time.monotonic()
    gone_s = wait_until(lambda: len(server_status(prefix)["clients"]) == 10, 15)
    assert gone_s is not None, server_status(prefix)["clients"]
    assert time.monotonic() - killed < 6.0 + 3.0
    everyone_works(survivors)
    log = Path(daemons["server"]["log"]).read_text()
    assert log.count("closed: peer lost") == 10
    print(f"20 clients up in {up_s:.1f} s; 10 killed clients dropped after {gone_s:.1f} s")


FLOOD = r"""
import json, random, socket, struct, sys, time

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def ip_udp(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + udp

count, seed = int(sys.argv[1]), int(sys.argv[2])
server, client, port = sys.argv[3], sys.argv[4], int(sys.argv[5])
valid = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
rng = random.Random(seed)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
kinds = {}
for i in range(count):
    kind = rng.choice(["random", "truncated", "mutated", "replayed", "wrong spi",
                       "nat keepalive", "oversize", "stranger"])
    base = rng.choice(valid)
    if kind == "random":
        payload = rng.randbytes(rng.randrange(0, 1400))
    elif kind == "truncated":
        payload = base[: rng.randrange(0, len(base))]
    elif kind == "mutated":
        flip = rng.randrange(len(base))
        payload = base[:flip] + bytes([base[flip] ^ (1 + rng.randrange(255))]) + base[flip + 1:]
    elif kind == "replayed":
        payload = base
    elif kind == "wrong spi":
        payload = rng.randbytes(4) + base[4:]
    elif kind == "nat keepalive":
        payload = b"\xff"
    elif kind == "oversize":  # larger than any MTU: the kernel fragments it
        udp.sendto(rng.randbytes(rng.randrange(1473, 9000)), (server, port))
        kinds[kind] = kinds.get(kind, 0) + 1
        continue
    else:
        payload = rng.randbytes(rng.randrange(1, 200))
    src = "203.0.113.66" if kind == "stranger" else client  # the stranger: no lab node
    raw.sendto(ip_udp(src, server, port, port, payload), (server, 0))
    kinds[kind] = kinds.get(kind, 0) + 1
    if i % 1000 == 999:
        time.sleep(0.02)  # at most ~50,000 a second: the point is hostility, not overload
print(json.dumps(kinds))
"""


def captured_datagrams(prefix: str, seconds: float = 2.0) -> list[str]:
    """Real ESP datagrams from r1 to r2 (the flood mutates and replays them)."""
    pcap = Path(state.state_dir(prefix)) / "valid.pcapng"
    dumpcap = in_node(
        prefix,
        "r1",
        *("dumpcap", "-q", "-i", "eth0", "-f", f"udp dst port {PORT}", "-c", "20", "-w", str(pcap)),
    )
    time.sleep(0.8)
    lab.exec_in(
        prefix, "r1", ["ping", "-c", "10", "-i", "0.05", SERVER_TUNNEL_IP], capture_output=True
    )
    dumpcap.wait(timeout=10)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "udp.payload"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.replace(":", "") for line in fields.split() if line]


def test_hostile_flood_during_a_transfer(prefix):
    """100,000 hostile datagrams while r1 downloads 20 MB: no crash, intact data, all counted."""
    lab.up(prefix=prefix, vpn=False)
    lab.start_vpn(prefix, "esp-aes-gcm")
    valid = captured_datagrams(prefix)
    assert len(valid) >= 10
    overflow_before = udp_rcvbuf_errors(prefix)
    size = 20_000_000
    transfer = in_node(
        prefix, "r1", "sh", "-c", f"curl -s --max-time 120 {WEB_URL}/bytes/{size} | sha256sum"
    )
    flood = subprocess.run(
        ["ip", "netns", "exec", state.namespace(prefix, "isp"), sys.executable, "-c", FLOOD]
        + ["100000", "3", SERVER_IP, CLIENT_IP, str(PORT)],
        input=json.dumps(valid),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert flood.returncode == 0, flood.stderr
    sent = json.loads(flood.stdout)
    out, _ = transfer.communicate(timeout=180)
    assert out.split()[0] == pattern_sha256(size)
    total = sum(sent.values())
    assert total >= 95_000, sent

    def all_accounted() -> bool:
        counted = sum(server_status(prefix)["counters"]["drops"].values())
        return counted + udp_rcvbuf_errors(prefix) - overflow_before >= total

    assert wait_until(all_accounted, 10) is not None, (sent, server_status(prefix)["counters"])
    status = lab.status(prefix)
    assert status["daemons"]["server"]["alive"]
    drops = status["tunnel"]["server"]["counters"]["drops"]
    for reason in ("bad icv", "replayed", "unknown spi", "truncated", "nat keepalive"):
        assert drops.get(reason, 0) > 0, (reason, drops)
    assert drops.get("unknown peer", 0) > 0  # the stranger's datagrams
    assert "Traceback" not in Path(status["daemons"]["server"]["log"]).read_text()
    print(f"flood: {sent}; server drops: {drops}")


def udp_rcvbuf_errors(prefix: str) -> int:
    snmp = lab.exec_in(prefix, "r2", ["cat", "/proc/net/snmp"], capture_output=True, text=True)
    lines = [line.split() for line in snmp.stdout.splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def test_tunnel_comes_up_and_tcp_completes_under_loss(prefix):
    """10 % loss on the isp, both ways: Hello retries bring the tunnel up; TCP gets through.

    (Five Hellos in 2.5 s all failing at 10 % loss each way: about 1 in 4,000.)
    """
    lab.up(prefix=prefix, vpn=False)
    cli = [sys.executable, "-m", "vpnlab", "lab", "impair", "--prefix", prefix, "--loss", "10"]
    assert "10 % of forwarded packets dropped" in subprocess.check_output(cli, text=True)
    lab.start_vpn(prefix, "esp-aes-gcm")
    size = 1_000_000
    started = time.monotonic()
    assert download(prefix, "r1", size, timeout_s=90) == pattern_sha256(size)
    print(f"1 MB at 10 % loss each way in {time.monotonic() - started:.1f} s")
    assert impair.dropped(prefix) > 0
    impair.clear(prefix)
    assert impair.dropped(prefix) == 0


def test_client_reconnects_after_the_server_comes_back(prefix):
    """--reconnect: the server dies (-9); the client waits, and is back when a new one starts."""
    lab.up(prefix=prefix, vpn=False)
    lab.start_vpn(prefix, "esp-aes-gcm", reconnect=True)
    daemons = lab.status(prefix)["daemons"]
    server = daemons["server"]
    os.kill(server["pid"], signal.SIGKILL)
    client_log = Path(daemons["client-r1"]["log"])
    assert wait_until(lambda: "reconnecting" in client_log.read_text(), 12) is not None
    # at least one attempt fails ("server unreachable") before the new server is there
    assert wait_until(lambda: "server unreachable" in client_log.read_text(), 6) is not None
    lab.exec_in(prefix, "r2", ["nft", "delete", "table", "ip", "vpnlab"], capture_output=True)
    record = state.load(prefix)
    build.start_daemon(prefix, record, "server", "r2", server["argv"])

    def connected_again() -> bool:
        client = lab.status(prefix)["tunnel"]["clients"]["r1"] or {}
        return client.get("state") == "connected"

    assert wait_until(connected_again, 10) is not None
    who = lab.exec_in(
        prefix,
        "r1",
        ["curl", "-s", "--max-time", "5", f"{WEB_URL}/"],
        capture_output=True,
        text=True,
    )
    assert who.stdout.strip() == f"you are {SERVER_IP}"
    assert lab.status(prefix)["daemons"]["client-r1"]["alive"]


def resources(pid: int) -> tuple[int, int]:
    """Open file descriptors and resident memory (kB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


def test_soak_no_growth_in_descriptors_or_memory(prefix):
    """A bounded soak (~40 s): clients come and go and traffic flows; the server must not grow."""
    lab.up(prefix=prefix, topology=make_topology(3))
    pid = lab.status(prefix)["daemons"]["server"]["pid"]
    config = str(Path(lab.status(prefix)["state_dir"]) / "identity" / "r4.conf")
    lab_client = lab.status(prefix)["daemons"]["client-r4"]["pid"]
    os.kill(lab_client, signal.SIGTERM)  # r4 is ours now: a client that comes and goes
    assert wait_until(lambda: not state.alive(lab_client), 5) is not None
    churn = [sys.executable, "-m", "vpnlab", "client", "--server", SERVER_IP]
    churn += ["--config", config]  # r4's own key: each new session a newer Hello
    traffic = in_node(prefix, "r3", "ping", "-q", "-i", "0.01", "-w", "38", WEB_IP)
    samples = []
    end = time.monotonic() + 36
    rounds = 0
    while time.monotonic() < end:
        client = in_node(prefix, "r4", *churn)  # connects, then is stopped: a new session each time
        time.sleep(1.5)
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=10)
        rounds += 1
        samples.append(resources(pid))
    traffic.wait(timeout=20)
    assert traffic.returncode == 0
    assert rounds >= 15
    settled = samples[3:]
    fds = [f for f, _ in settled]
    rss = [r for _, r in settled]
    assert max(fds) == min(fds), fds
    assert rss[-1] - rss[0] < 2048, rss  # kB: no steady growth (allocator noise is far below)
    log = Path(lab.status(prefix)["daemons"]["server"]["log"]).read_text()
    assert log.count("closed: bye") >= rounds - 1
    print(f"soak: {rounds} sessions; fds {fds[0]}..{fds[-1]}; rss {rss[0]}..{rss[-1]} kB")
