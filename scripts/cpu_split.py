"""Where a tunnel daemon's CPU microseconds go, the kernel's included (issue 29 item 2).

The bench's CPU us/packet (``vpnlab bench``) is each daemon's whole CPU time over the packets
it carried: its Python, its cipher, its system calls, and also what the kernel does *inside*
those system calls for the rest of the lab. The lab's nodes share one kernel, so a packet that
the server writes to tun0 is routed and NATed by r2, forwarded by isp and received by web's TCP
in the softirq that runs before that ``write`` returns, all on the server's CPU clock; a
datagram that it sends is likewise carried through isp into r1. py-spy sees none of that (a
system call is one Python line to it). This script runs one bench case at a time under
``perf record -g`` (a CPU-clock sample of both daemons, kernel stacks included), sorts every
sample into one of :data:`BUCKETS` by its stack, and prints each bucket's share and its part
of the bench's us/packet measured in the same run::

    sudo .venv/bin/python scripts/cpu_split.py                       # both esp-aes-gcm paths
    sudo .venv/bin/python scripts/cpu_split.py --cases openvpn --download

Root and ``perf`` (Debian: linux-perf; its version need not match the kernel's for
``cpu-clock``); a lab of its own built as the bench's (prefix ``vsplit-``,
``bench.bench_lab_up``), removed at the end. About 20 s per case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from vpnlab import lab
from vpnlab.course.bench import ALL_CASES, Bench, bench_lab_up

Frame = tuple[str, str]
"""A stack frame as ``perf script`` prints it: the symbol and its object (the kernel's is
``[kernel.kallsyms]``)."""
Sample = tuple[int, list[Frame]]
"""A sample: the process's PID and its stack, the innermost frame first."""
Row = tuple[str, str, dict[str, float], float | None, int]
"""A table column: the case, the daemon, its buckets' shares, its us/packet, its samples."""

BUCKETS = (
    "TCP of the transfer's ends (iperf3's on web and r1)",
    "other nodes: forwarding and delivery (isp, r1, web)",
    "tun0 write: this node's routing and NAT",
    "tun0 write: the system call",
    "tun0 read",
    "UDP send",
    "UDP receive",
    "epoll / select",
    "other kernel (scheduler, faults, timers)",
    "cipher (OpenSSL, cryptography's bindings)",
    "Python (the interpreter)",
    "other user space (libc, malloc)",
)
"""Where a sample goes, first match first. The first two are mostly work of the lab's other
nodes that the kernel does inside this daemon's system calls: a packet handed to a veth is
queued to the CPU's backlog, and the softirq (``net_rx_action``) that drains it before the call
returns carries it through isp into web or r1 (a separate machine would do that on its own
CPU). Any TCP receive counts first: web's for the server, r1's own (the ACKs it writes to r1's
tun0, as on a real client) for the client. The third is this node's own: tun0 hands a written
packet straight to the node's routing, NAT and eth0, as a real server's kernel would. Then the
system calls by their kernel function, then user space by the object the sample fell in."""

_SYSCALL_BUCKETS = (
    ({"tun_chr_write_iter"}, "tun0 write: the system call"),
    ({"tun_chr_read_iter"}, "tun0 read"),
    ({"udp_sendmsg", "udpv6_sendmsg", "__sys_sendmmsg"}, "UDP send"),
    ({"udp_recvmsg", "udpv6_recvmsg", "__sys_recvmmsg"}, "UDP receive"),
    ({"do_epoll_wait", "ep_poll", "do_select", "do_sys_poll"}, "epoll / select"),
)
_TCP_RECEIVE = {"tcp_v4_rcv", "tcp_v6_rcv"}
_RECEIVE = {"__netif_receive_skb_one_core", "__netif_receive_skb_list_core", "ip_rcv", "ipv6_rcv"}
"""A node's kernel taking a packet in (then routing, NAT, forwarding it)."""
_KERNEL = "[kernel.kallsyms]"
_UNNAMED = ("[unknown]", "")


def parse_perf_script(text: str) -> list[Sample]:
    """The samples of ``perf script -F pid,tid,ip,sym,dso``: a header line ``PID/TID`` and then
    one indented line ``ADDRESS SYMBOL (OBJECT)`` per frame, a blank line between samples."""
    samples: list[Sample] = []
    pid: int | None = None
    frames: list[Frame] = []
    for line in text.splitlines() + [""]:
        if not line.strip():
            if pid is not None:
                samples.append((pid, frames))
            pid, frames = None, []
        elif not line[0].isspace() or pid is None:
            pid = int(line.split()[0].split("/")[0])
        else:
            parts = line.split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            symbol, _, obj = rest.rpartition(" (")
            frames.append((symbol or rest, obj.rstrip(")")))
    return samples


def bucket(frames: list[Frame]) -> str:
    """Which of :data:`BUCKETS` a stack belongs to (innermost frame first)."""
    symbols = {symbol for symbol, _ in frames}
    if symbols & _TCP_RECEIVE:
        return BUCKETS[0]
    if "net_rx_action" in symbols:
        return BUCKETS[1]
    if "tun_chr_write_iter" in symbols and symbols & _RECEIVE:
        return BUCKETS[2]
    for names, name in _SYSCALL_BUCKETS:
        if symbols & names:
            return name
    if any(obj == _KERNEL for _, obj in frames):
        return "other kernel (scheduler, faults, timers)"
    leaf = frames[0][1].rsplit("/", 1)[-1] if frames else ""
    if leaf.startswith(("libcrypto", "_rust.abi3")):  # OpenVPN's; cryptography's (OpenSSL in it)
        return "cipher (OpenSSL, cryptography's bindings)"
    if leaf.startswith(("libpython", "python")) or ".cpython-" in leaf or leaf in _UNNAMED:
        return "Python (the interpreter)"  # its own extension modules (_socket, select) too
    return "other user space (libc, malloc)"


def shares(samples: Iterable[Sample], pid: int) -> dict[str, float]:
    """Each bucket's share (0 to 1) of ``pid``'s samples; {} without any."""
    counts = Counter(bucket(frames) for sample_pid, frames in samples if sample_pid == pid)
    total = sum(counts.values())
    return {name: counts[name] / total for name in BUCKETS} if total else {}


def table(results: list[Row]) -> str:
    """One column per (case, daemon): each bucket's us/packet where the bench counted packets
    (OpenVPN has no status file), and its share."""
    head = "| where | " + " | ".join(f"{case}: {daemon}" for case, daemon, *_ in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]

    def cell(part: float, us: float | None) -> str:
        return f"{part * us:.2f} ({100 * part:.0f} %)" if us else f"{100 * part:.1f} %"

    for name in BUCKETS:
        cells = [cell(split.get(name, 0.0), us) for _, _, split, us, _ in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [f"{us:.2f} us/packet" if us else "-" for _, _, _, us, _ in results]
    lines.append("| whole (the bench's us/packet) | " + " | ".join(totals) + " |")
    lines.append("| samples | " + " | ".join(str(n) for *_, n in results) + " |")
    return "\n".join(lines)


def profiled_run(bench: Bench, case: str, scratch: Path, frequency: int) -> list[Row]:
    """One iperf3 run of ``case`` with perf recording its daemons; a row per daemon."""
    bench.setup(case)
    try:
        pids = dict(bench.daemons)
        data = scratch / "perf.data"
        argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(frequency), "-g"]
        argv += ["-p", ",".join(str(pid) for pid in pids.values()), "-o", str(data)]
        perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            measured = bench.iperf()
        finally:
            perf.send_signal(signal.SIGINT)
            _, err = perf.communicate(timeout=60)
        if perf.returncode not in (0, -signal.SIGINT):
            raise SystemExit(f"cpu_split: perf record failed: {err.decode().strip()}")
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "pid,tid,ip,sym,dso"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        bench.teardown(case)
    samples = parse_perf_script(script)
    per_packet = measured.get("cpu_us_per_packet") or {}
    print(f"[split] {case}: {measured.get('mbps')} Mbit/s", file=sys.stderr)
    return [
        (case, name, shares(samples, pid), per_packet.get(name), sum(p == pid for p, _ in samples))
        for name, pid in sorted(pids.items(), reverse=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["vpnlab esp-aes-gcm simple", "vpnlab esp-aes-gcm fast"],
        help="bench cases (vpnlab bench --help); default: both esp-aes-gcm data paths",
    )
    parser.add_argument("--seconds", type=float, default=8, help="per run (default 8)")
    parser.add_argument("--mtu", type=int, default=1400, help="tun MTU (default 1400)")
    parser.add_argument("--download", action="store_true", help="iperf3 -R: web -> r1")
    parser.add_argument("--frequency", type=int, default=999, help="samples/s (default 999)")
    parser.add_argument("--prefix", default="vsplit-", help="the lab's prefix (vsplit-)")
    args = parser.parse_args()
    wrong = [case for case in args.cases if case not in ALL_CASES or case == "routed"]
    if wrong:
        parser.error(f"not a tunnel case: {wrong[0]!r} (one of {', '.join(ALL_CASES[1:])})")
    if args.seconds <= 0 or not 1 <= args.frequency <= 10_000:
        parser.error("--seconds must be above 0 and --frequency 1 to 10000")
    if os.geteuid() != 0:
        parser.error("needs root (the lab, and perf on other processes): sudo")
    if shutil.which("perf") is None:
        parser.error("perf is not installed (Debian: apt-get install linux-perf)")
    rows = []
    bench_lab_up(args.prefix)
    try:
        bench = Bench(args.prefix, args.seconds, args.mtu, args.download)
        with tempfile.TemporaryDirectory(prefix="cpu-split-") as scratch:
            for case in args.cases:
                rows += profiled_run(bench, case, Path(scratch), args.frequency)
    finally:
        lab.down(args.prefix)
    way = "download (web -> r1)" if args.download else "upload (r1 -> web)"
    print(f"{way}, {args.seconds:g} s per case, tun MTU {args.mtu}, perf at {args.frequency}/s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
