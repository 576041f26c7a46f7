"""The benchmark: single-stream TCP through every data path, side by side with OpenVPN.

    sudo scripts/bench.sh                 # 3 rounds of 10 s per case, about 6 minutes
    sudo scripts/bench.sh --quick         # 1 round of 2 s, four cases: a smoke test
    sudo scripts/bench.sh --download      # the data the other way: web -> r1 (iperf3 -R)

What it measures, in a lab of its own (prefix ``vbench-``; the daemons' eth0 receive with GRO,
as NICs do, :func:`bench_lab_up`): ``iperf3 -J`` from r1 (the client) to web, so the data
crosses the client daemon, the isp router, the server daemon, its NAT and forwarding: the path
a user's traffic takes (an upload; ``--download``: web's data to r1, the path of a student's
FTP get or web page, where the server reads what the kernel forwarded into its tun0 and the
client writes the super-packets). Cases:

    routed                   no tunnel: the upper bound (the same lab, plain routing)
    openvpn                  OpenVPN 2.6, p2p UDP over tun, TLS, AES-256-GCM, tun-mtu 1400
    {plain, esp-null, esp-aes-gcm} x {simple, fast}   vpnlab, --mtu 1400

Cases alternate within each round (so a slow minute of the machine hits all of them), and
each round starts one case later than the round before (:func:`round_order`); each run sets
its case up afresh. For every run: throughput, TCP retransmits, ping RTT from r1 to
web idle (10 pings before) and under load (every 0.2 s during the transfer, the median
after its first second), the CPU each tunnel daemon used (per cent of one core, from
/proc/PID/stat) and, for vpnlab, that CPU time divided by the data packets the daemon
carried meanwhile (microseconds per packet; packets_from_tun + packets_to_tun of its status
file, before and after). The table gives medians and the ratio to OpenVPN; ``results.json``
keeps every run, ``bench.png`` is the chart. The lab is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpnlab import lab
from vpnlab.core.errors import VpnlabError
from vpnlab.course.bench_report import Machine, Measured, Run, chart, summarize
from vpnlab.course.iperf import WEB, IperfError, iperf_result, iperf_server
from vpnlab.course.openvpn import NAT_RULES, openvpn_configs
from vpnlab.lab.build import daemon_log, log_tail, receive_like_a_nic, start_daemon
from vpnlab.lab.inspection import read_status_file
from vpnlab.lab.nodes import popen_in, run_in, wait_for
from vpnlab.lab.state import load, save, state_dir, stop_daemons, topology_of

MTU = 1400
VPNLAB_CASES = [
    f"vpnlab {cipher} {datapath}"
    for cipher in ("plain", "esp-null", "esp-aes-gcm")
    for datapath in ("simple", "fast")
]
ALL_CASES = ["routed", "openvpn", *VPNLAB_CASES]
QUICK_CASES = ["routed", "openvpn", "vpnlab esp-aes-gcm simple", "vpnlab esp-aes-gcm fast"]
HOPS = ("client out", "server in", "server out", "client in")
"""The four times a tunnel daemon holds an idle ping (``idle_hops``): the client from the echo
request on its tun0 to the datagram on its eth0, the server from that datagram on its eth0 to
the request on its tun0, then the same for the reply, the other way."""
OPENVPN_READY = b"Initialization Sequence Completed"
"""What OpenVPN's client logs once its tunnel and routes are up."""
STATUS_FILES = {"client": "client-r1.json", "server": "server.json"}
"""The vpnlab daemons' status files in the lab's state folder (rewritten about once a second)."""


class BenchError(VpnlabError):
    """A case of the benchmark could not be set up (its tunnel does not carry)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def logged_since(log: Path, offset: int, words: bytes) -> bool:
    """Whether ``words`` were written to ``log`` past ``offset`` (its size before this start:
    a daemon's log keeps every round's lines, and an earlier round's "connected" must not
    count for this one)."""
    try:
        with log.open("rb") as file:
            file.seek(offset)
            return words in file.read()
    except OSError:
        return False


def packets_carried(path: Path, since: float, wait_s: float = 3.0) -> tuple[int, int] | None:
    """The data packets (packets_from_tun + packets_to_tun) and the UDP GRO batches received
    (the fast path's ``gro_batches``) of a status file written after ``since`` (time.time()),
    waiting for the daemon's next write; None if none comes within ``wait_s``."""
    status: dict[str, Any] = {}

    def fresh() -> bool:
        status.update(read_status_file(path) or {})
        updated: float = status.get("updated", 0)
        return updated > since

    if not wait_for(fresh, wait_s, 0.1):
        return None
    counters = status.get("counters") or {}
    packets = counters.get("packets_from_tun", 0) + counters.get("packets_to_tun", 0)
    return packets, (status.get("fastpath") or {}).get("gro_batches", 0)


class Bench:
    """One benchmark: a lab, the cases, the runs, the results."""

    def __init__(self, prefix: str, seconds: float, mtu: int, download: bool = False) -> None:
        self.prefix = prefix
        self.seconds = seconds
        self.mtu = mtu
        self.download = download
        self.folder = state_dir(prefix)
        self.daemons: dict[str, int] = {}
        self.status_files: dict[str, Path] = {}
        self.forwarding = "0"

    def run_in(
        self, node: str, argv: list[str], check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_in(self.prefix, node, argv, check=check, input=input)

    # cases ----------------------------------------------------------------------------------

    def setup(self, case: str) -> None:
        """Start the tunnel of ``case`` (nothing for ``routed``) and wait until it carries."""
        self.daemons, self.status_files = {}, {}
        if case == "openvpn":
            self._start_openvpn()
        elif case.startswith("vpnlab "):
            _, cipher, datapath = case.split()
            extra = ["--datapath", datapath, "--mtu", str(self.mtu)]
            lab.start_vpn(self.prefix, cipher, server_args=extra, client_args=extra)
            daemons = lab.status(self.prefix)["daemons"]
            self.daemons = {
                "client": daemons["client-r1"]["pid"],
                "server": daemons["server"]["pid"],
            }
            self.status_files = {n: self.folder / f for n, f in STATUS_FILES.items()}

        def reaches() -> bool:  # routes may follow "connected" by a moment
            return self.run_in("r1", ["ping", "-c", "1", "-W", "1", WEB]).returncode == 0

        if not wait_for(reaches, 5, 0.2):
            raise BenchError(f"{case}: r1 cannot reach {WEB}")

    def teardown(self, case: str) -> None:
        if case == "openvpn":
            record = load(self.prefix)
            if record is not None:
                names = ["openvpn-client", "openvpn-server"]
                stop_daemons(record, names)
                for name in names:
                    record.daemons.pop(name, None)
                save(record)
            self.run_in("r2", ["nft", "delete", "table", "ip", "vbench"])
            self.run_in("r2", ["sysctl", "-qw", f"net.ipv4.ip_forward={self.forwarding}"])
        elif case.startswith("vpnlab "):
            lab.stop_vpn(self.prefix)

    def _start_openvpn(self) -> None:
        server_conf, client_conf = openvpn_configs(self.folder, self.mtu)
        record = load(self.prefix)
        assert record is not None
        forwarding = self.run_in("r2", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        self.forwarding = forwarding or "0"
        self.run_in("r2", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        self.run_in("r2", ["nft", "-f", "-"], input=NAT_RULES, check=True)
        binary = shutil.which("openvpn") or "openvpn"
        log = daemon_log(self.prefix, "openvpn-client")
        earlier = log.stat().st_size if log.exists() else 0  # the rounds before this one's
        pids = {}
        for name, node, conf in (("server", "r2", server_conf), ("client", "r1", client_conf)):
            argv = [binary, "--config", str(conf)]
            pids[name] = start_daemon(self.prefix, record, f"openvpn-{name}", node, argv)
        if not wait_for(lambda: logged_since(log, earlier, OPENVPN_READY), 15):
            raise BenchError(f"openvpn did not connect:\n{log_tail(log, 12)}")
        self.daemons = pids

    def run(self, case: str, round_: int) -> Run:
        """One round of ``case``: set it up, measure, tear it down; a broken case is a run
        with its error (and 0 Mbit/s), so that it cannot lose the others."""
        try:
            self.setup(case)
            rtt = self.ping_ms()
            hops = self.idle_hops() if case != "routed" else {}
            return {
                "case": case,
                "round": round_,
                "rtt_ms": rtt,
                **self.iperf(),
                "idle_hops_us": hops,
            }
        except Exception as exc:
            return {"case": case, "round": round_, "error": str(exc), "mbps": 0.0}
        finally:
            self.teardown(case)

    # measurements ---------------------------------------------------------------------------

    def ping_ms(self) -> float | None:
        out = self.run_in("r1", ["ping", "-c", "10", "-i", "0.05", "-q", "-W", "2", WEB]).stdout
        for line in out.splitlines():
            if "min/avg/max" in line:
                return float(line.split("=")[1].split("/")[1])
        return None

    def idle_hops(self, pings: int = 20) -> dict[str, float]:
        """Where an idle ping's round trip waits (:data:`HOPS`): ``pings`` pings r1 -> web,
        0.05 s apart, under tcpdump in r1 and r2 (the kernel's time stamps of each packet on
        tun0 and eth0); the median of each hop in microseconds ({} without tcpdump)."""
        if shutil.which("tcpdump") is None:
            return {}
        argv = ["tcpdump", "-i", "any", "-n", "-tt", "-l", "-q", "udp or icmp"]
        captures = {
            node: popen_in(self.prefix, node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for node in ("r1", "r2")
        }
        try:
            for capture in captures.values():  # "listening on any, ..." once it captures
                assert capture.stderr is not None
                ready, _, _ = select.select([capture.stderr], [], [], 5)
                if ready:
                    capture.stderr.readline()
                    capture.stderr.readline()
            count = str(pings + 2)  # the first two warm the path (neighbours, routes)
            self.run_in("r1", ["ping", "-n", "-c", count, "-i", "0.05", "-W", "2", WEB])
            time.sleep(0.2)  # the last reply's stamps
        finally:
            lines = {node: stopped(capture) for node, capture in captures.items()}
        return hop_times(lines["r1"], lines["r2"], skip=2)

    def pinger(self, limit: str) -> subprocess.Popen[str]:
        """Pings r1 -> web every 0.2 s while iperf3 runs (the first second is ramp-up)."""
        count = str(max(1, int(self.seconds * 5) - 2))
        argv = ["timeout", limit, "ping", "-n", "-c", count, "-i", "0.2", "-W", "2", WEB]
        return popen_in(self.prefix, "r1", argv, stdout=subprocess.PIPE, text=True)

    def packets(self) -> dict[str, tuple[int, int] | None]:
        """Data packets each vpnlab daemon has carried so far, and the UDP GRO batches it has
        received (none for OpenVPN)."""
        since = time.time()
        return {n: packets_carried(path, since) for n, path in self.status_files.items()}

    def iperf(self) -> Measured:
        """One iperf3 run r1 -> web (web -> r1 with ``download``, ``iperf3 -R``); the server
        on web answers exactly one test."""
        limit = str(int(self.seconds) + 15)
        before = self.packets()  # no tunnel traffic until iperf3 starts
        with iperf_server(self.prefix, int(limit)):
            ticks = {name: cpu_ticks(pid) for name, pid in self.daemons.items()}
            start = time.monotonic()
            pings = self.pinger(limit)
            done = self.run_in(
                "r1",
                ["timeout", limit, "iperf3", "-c", WEB, "-t", str(self.seconds), "-J", "-O", "1"]
                + (["-R"] if self.download else []),
            )
            wall = time.monotonic() - start
            rtt_load = loaded_rtt_ms(pings)
            used = {name: cpu_ticks(pid) - ticks[name] for name, pid in self.daemons.items()}
        after = self.packets()
        carried, batches = {}, {}
        for name, now in after.items():
            then = before[name]
            if now is not None and then is not None:
                carried[name], batches[name] = now[0] - then[0], now[1] - then[1]
        try:
            mbps, retransmits = iperf_result(done.stdout)
        except IperfError:
            mbps, retransmits = 0.0, None
        hz = os.sysconf("SC_CLK_TCK")
        cpu = {name: round(100 * n / hz / wall, 1) for name, n in used.items()}
        per_packet = {
            n: round(1e6 * used[n] / hz / count, 2) for n, count in carried.items() if count
        }
        return {
            "mbps": round(mbps, 1),
            "rtt_load_ms": rtt_load,
            "retransmits": retransmits,
            "cpu_percent": cpu,
            "packets": carried,
            "cpu_us_per_packet": per_packet,
            "gro_batches": batches,
        }


def stopped(capture: subprocess.Popen[bytes]) -> list[str]:
    """Stop a capture (SIGTERM, SIGKILL if it lingers 5 s); the lines it printed."""
    capture.terminate()
    out: bytes
    try:
        out, _ = capture.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        capture.kill()
        out, _ = capture.communicate()
    return out.decode(errors="replace").splitlines()


Stamp = tuple[float, str, str, str]
"""One line of ``tcpdump -i any -tt -q``: time, interface, direction (In/Out), the rest."""


def parse_tcpdump(lines: list[str]) -> list[Stamp]:
    """The packets of tcpdump's lines; any other line (its banner) is skipped."""
    stamps = []
    for line in lines:
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[0][:1].isdigit() and fields[2] in ("In", "Out"):
            stamps.append((float(fields[0]), fields[1], fields[2], fields[3]))
    return stamps


def hop_times(r1: list[str], r2: list[str], skip: int = 0) -> dict[str, float]:
    """The median of each of :data:`HOPS` in microseconds, from tcpdump's lines in r1 (the
    client) and r2 (the server); the first ``skip`` pings are left out, and so is a ping
    whose packets are not all there.

    The inner packets are the ICMP echoes on tun0 (each found by its sequence number), the
    outer ones the first UDP datagram on another interface after them.
    """
    client, server = parse_tcpdump(r1), parse_tcpdump(r2)

    def echo(stamps: list[Stamp], way: str, kind: str, seq: str) -> float | None:
        tag = f", seq {seq},"
        for when, device, direction, rest in stamps:
            if device == "tun0" and direction == way and kind in rest and tag in rest:
                return when
        return None

    def datagram(stamps: list[Stamp], way: str, after: float) -> float | None:
        for when, device, direction, rest in stamps:
            if when >= after and device != "tun0" and direction == way and "UDP" in rest:
                return when
        return None

    sequences = [
        rest.split(", seq ")[1].split(",")[0]
        for _, device, direction, rest in client
        if device == "tun0" and direction == "Out" and "echo request" in rest
    ]
    hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for seq in sequences[skip:]:
        asked = echo(client, "Out", "echo request", seq)  # on the client's tun0
        answered = echo(server, "Out", "echo reply", seq)  # on the server's tun0
        if asked is None or answered is None:
            continue
        times = (
            datagram(client, "Out", asked),
            datagram(server, "In", asked),
            echo(server, "In", "echo request", seq),
            datagram(server, "Out", answered),
            datagram(client, "In", answered),
            echo(client, "In", "echo reply", seq),
        )
        found = [when for when in times if when is not None]
        if len(found) < len(times):
            continue
        client_sent, server_got, server_wrote, server_sent, client_got, client_wrote = found
        spans = (
            client_sent - asked,
            server_wrote - server_got,
            server_sent - answered,
            client_wrote - client_got,
        )
        if all(0 <= span < 0.1 for span in spans):
            for hop, span in zip(HOPS, spans, strict=True):
                hops[hop].append(span * 1e6)
    if not hops[HOPS[0]]:
        return {}
    return {hop: round(statistics.median(values)) for hop, values in hops.items()}


def loaded_rtt_ms(pings: subprocess.Popen[str]) -> float | None:
    """The median RTT of the pings sent while iperf3 ran, after its first second (ms)."""
    out, _ = pings.communicate(timeout=30)
    times = [
        float(line.split("time=")[1].split()[0]) for line in out.splitlines() if "time=" in line
    ]
    loaded = times[5:] or times
    return round(statistics.median(loaded), 3) if loaded else None


def round_order(cases: list[str], round_: int) -> list[str]:
    """The cases in the order round ``round_`` (from 0) runs them: one case later each round,
    so that each case runs at another place in each round (and the first case of the list is
    not always the first run). On the 2-core VMs the tree that ran first in a round did better
    (``docs/performance.md``, *A stream of single packets*); a fixed place would put that into
    the ratios. Each case still follows the one before it in the list, but in one round."""
    start = round_ % len(cases) if cases else 0
    return cases[start:] + cases[:start]


def bench_lab_up(prefix: str) -> None:
    """The bench's lab: the default lab without its VPN, receiving as NICs do (GRO at the
    daemons' eth0, ``receive_like_a_nic``: the fast path's UDP_GRO takes a burst in one call)."""
    lab.up(prefix=prefix, vpn=False)
    receive_like_a_nic(prefix, topology_of(prefix))


def run_bench(
    cases: list[str],
    runs: int,
    seconds: float,
    out: Path,
    prefix: str = "vbench-",
    mtu: int = MTU,
    progress: Callable[[str], None] = say,
    download: bool = False,
) -> dict[str, Any]:
    """Build a lab, measure ``cases`` ``runs`` times (alternating), remove the lab.
    ``download``: the data flows web -> r1 (``iperf3 -R``) instead of r1 -> web.

    Returns the results document (also written to ``out/results.json``, with the chart).
    """
    if "openvpn" in cases and shutil.which("openvpn") is None:
        progress("openvpn is not installed: that case is skipped (scripts/bench.sh installs it)")
        cases = [c for c in cases if c != "openvpn"]
    out.mkdir(parents=True, exist_ok=True)
    path = "web -> r1" if download else "r1 -> web"
    results: list[Run] = []
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "settings": {"runs": runs, "seconds": seconds, "tun_mtu": mtu, "path": path},
        "cases": cases,
        "runs": results,
    }
    bench = Bench(prefix, seconds, mtu, download)
    total = runs * len(cases)
    try:
        bench_lab_up(prefix)
        for round_ in range(runs):
            for case in round_order(cases, round_):
                progress(f"[{len(results) + 1}/{total}] round {round_ + 1}: {case} ...")
                run = bench.run(case, round_ + 1)
                results.append(run)
                progress(
                    f"    {run.get('mbps')} Mbit/s, retransmits {run.get('retransmits')}, "
                    f"rtt {run.get('rtt_ms')} ms idle, {run.get('rtt_load_ms')} ms loaded, "
                    f"cpu {run.get('cpu_percent')}, "
                    f"us/packet {run.get('cpu_us_per_packet')}"
                )
    finally:
        lab.down(prefix)
    document["summary"] = summarize(cases, results)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    chart(document, out / "bench.png")
    return document


def machine() -> Machine:
    version = ""
    if shutil.which("openvpn"):
        first = subprocess.run(["openvpn", "--version"], capture_output=True, text=True).stdout
        version = first.splitlines()[0] if first else ""
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openvpn": version,
    }
