"""The benchmark: single-stream TCP through every data path, side by side with OpenVPN.

    sudo scripts/bench.sh                 # 3 rounds of 10 s per case, about 6 minutes
    sudo scripts/bench.sh --quick         # 1 round of 2 s, four cases: a smoke test

What it measures, in a lab of its own (prefix ``vbench-``): ``iperf3 -J`` from r1 (the client)
to web, so the data crosses the client daemon, the isp router, the server daemon, its NAT and
forwarding: the path a user's traffic takes. Cases:

    routed                   no tunnel: the upper bound (the same lab, plain routing)
    openvpn                  OpenVPN 2.6, p2p UDP over tun, TLS, AES-256-GCM, tun-mtu 1400
    {plain, esp-null, esp-aes-gcm} x {simple, fast}   vpnlab, --mtu 1400

Cases alternate within each round (so a slow minute of the machine hits all of them), each
round sets its case up afresh. For every run: throughput, TCP retransmits, ping RTT from r1 to
web, and the CPU each tunnel daemon used (per cent of one core, from /proc/PID/stat). The
table gives medians and the ratio to OpenVPN; ``results.json`` keeps every run, ``bench.png``
is the chart. The lab is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vpnlab import lab
from vpnlab.lab import build, state

WEB = "203.0.113.10"
SERVER = "198.51.100.2"
CLIENT = "192.0.2.2"
MTU = 1400
VPNLAB_CASES = [
    f"vpnlab {cipher} {datapath}"
    for cipher in ("plain", "esp-null", "esp-aes-gcm")
    for datapath in ("simple", "fast")
]
ALL_CASES = ["routed", "openvpn", *VPNLAB_CASES]
QUICK_CASES = ["routed", "openvpn", "vpnlab esp-aes-gcm simple", "vpnlab esp-aes-gcm fast"]
OPENVPN_PORT = 1194


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def iperf_server(prefix: str, limit_s: int) -> Iterator[None]:
    """iperf3 on web for exactly one test (``-s -1``), listening before the block starts;
    afterwards waited for, or killed if it hangs."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", state.namespace(prefix, "web"), "timeout", str(limit_s)]
        + ["iperf3", "-s", "-1", "-B", WEB],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        build.wait_for(lambda: build.listening(server.pid, 5201), 3.0)
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
        ValueError: not an iperf3 JSON report (the test failed).
    """
    try:
        end = json.loads(stdout)["end"]
        return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"no iperf3 result: {exc!r}") from None


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


# --- OpenVPN: p2p over UDP, TLS with self-signed certificates pinned by fingerprint ----------


def _self_signed(name: str, folder: Path) -> str:
    """A P-256 key and self-signed certificate for ``name``; returns the SHA-256 fingerprint."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def openvpn_configs(folder: Path, mtu: int) -> tuple[Path, Path]:
    """The two p2p config files (server in r2, client in r1) in the lab's state folder."""
    prints = {name: _self_signed(name, folder) for name in ("ovpn-server", "ovpn-client")}
    common = [
        "dev tun",
        "proto udp",
        "topology p2p",
        f"tun-mtu {mtu}",
        "data-ciphers AES-256-GCM",
        "cipher AES-256-GCM",
        "verb 3",
    ]
    server = [
        *common,
        f"local {SERVER}",
        f"lport {OPENVPN_PORT}",
        "float",
        "ifconfig 10.8.0.1 10.8.0.2",
        "tls-server",
        "dh none",
        f"cert {folder / 'ovpn-server.crt'}",
        f"key {folder / 'ovpn-server.key'}",
        f"peer-fingerprint {prints['ovpn-client']}",
    ]
    client = [
        *common,
        f"remote {SERVER} {OPENVPN_PORT}",
        "nobind",
        "ifconfig 10.8.0.2 10.8.0.1",
        "tls-client",
        f"cert {folder / 'ovpn-client.crt'}",
        f"key {folder / 'ovpn-client.key'}",
        f"peer-fingerprint {prints['ovpn-server']}",
        f"route {WEB} 255.255.255.255",
    ]
    paths = folder / "openvpn-server.conf", folder / "openvpn-client.conf"
    for path, lines in zip(paths, (server, client), strict=True):
        path.write_text("\n".join(lines) + "\n")
    return paths


NAT_RULES = """table ip vbench {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.8.0.0/24 ip daddr != 10.8.0.0/24 oifname "eth0" masquerade
  }
}
"""


class Bench:
    """One benchmark: a lab, the cases, the runs, the results."""

    def __init__(self, prefix: str, seconds: float, mtu: int) -> None:
        self.prefix = prefix
        self.seconds = seconds
        self.mtu = mtu
        self.folder = state.state_dir(prefix)
        self.daemons: dict[str, int] = {}
        self.forwarding = "0"

    def ns(self, node: str) -> str:
        return state.namespace(self.prefix, node)

    def run_in(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return build.run_in(self.ns(node), argv, **kwargs)

    # cases ----------------------------------------------------------------------------------

    def setup(self, case: str) -> None:
        """Start the tunnel of ``case`` (nothing for ``routed``) and wait until it carries."""
        self.daemons = {}
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

        def reaches() -> bool:  # routes may follow "connected" by a moment
            return self.run_in("r1", ["ping", "-c", "1", "-W", "1", WEB]).returncode == 0

        if not build.wait_for(reaches, 5, 0.2):
            raise RuntimeError(f"{case}: r1 cannot reach {WEB}")

    def teardown(self, case: str) -> None:
        if case == "openvpn":
            record = state.load(self.prefix) or {}
            names = ["openvpn-client", "openvpn-server"]
            state.stop_daemons(record, names)
            for name in names:
                record.get("daemons", {}).pop(name, None)
            state.save(record)
            self.run_in("r2", ["nft", "delete", "table", "ip", "vbench"])
            self.run_in("r2", ["sysctl", "-qw", f"net.ipv4.ip_forward={self.forwarding}"])
        elif case.startswith("vpnlab "):
            lab.stop_vpn(self.prefix)

    def _start_openvpn(self) -> None:
        server_conf, client_conf = openvpn_configs(self.folder, self.mtu)
        record = state.load(self.prefix)
        assert record is not None
        forwarding = self.run_in("r2", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        self.forwarding = forwarding or "0"
        self.run_in("r2", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        self.run_in("r2", ["nft", "-f", "-"], input=NAT_RULES, check=True)
        binary = shutil.which("openvpn") or "openvpn"
        pids = {}
        for name, node, conf in (("server", "r2", server_conf), ("client", "r1", client_conf)):
            argv = [binary, "--config", str(conf)]
            pids[name] = build.start_daemon(self.prefix, record, f"openvpn-{name}", node, argv)
        log = Path(record["daemons"]["openvpn-client"]["log"])

        def ready() -> bool:
            text = log.read_text(errors="replace") if log.exists() else ""
            return "Initialization Sequence Completed" in text

        if not build.wait_for(ready, 15):
            raise RuntimeError(f"openvpn did not connect:\n{build.log_tail(log, 12)}")
        self.daemons = pids

    # measurements ---------------------------------------------------------------------------

    def ping_ms(self) -> float | None:
        out = self.run_in("r1", ["ping", "-c", "10", "-i", "0.05", "-q", "-W", "2", WEB]).stdout
        for line in out.splitlines():
            if "min/avg/max" in line:
                return float(line.split("=")[1].split("/")[1])
        return None

    def iperf(self) -> dict[str, Any]:
        """One iperf3 run r1 -> web; the server on web answers exactly one test."""
        limit = str(int(self.seconds) + 15)
        with iperf_server(self.prefix, int(limit)):
            ticks = {name: cpu_ticks(pid) for name, pid in self.daemons.items()}
            start = time.monotonic()
            done = self.run_in(
                "r1",
                ["timeout", limit, "iperf3", "-c", WEB, "-t", str(self.seconds), "-J", "-O", "1"],
            )
            wall = time.monotonic() - start
            used = {name: cpu_ticks(pid) - ticks[name] for name, pid in self.daemons.items()}
        try:
            mbps, retransmits = iperf_result(done.stdout)
        except ValueError:
            mbps, retransmits = 0.0, None
        hz = os.sysconf("SC_CLK_TCK")
        cpu = {name: round(100 * n / hz / wall, 1) for name, n in used.items()}
        return {"mbps": round(mbps, 1), "retransmits": retransmits, "cpu_percent": cpu}


def run_bench(
    cases: list[str],
    runs: int,
    seconds: float,
    out: Path,
    prefix: str = "vbench-",
    mtu: int = MTU,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Build a lab, measure ``cases`` ``runs`` times (alternating), remove the lab.

    Returns the results document (also written to ``out/results.json``, with the chart).
    """
    if "openvpn" in cases and shutil.which("openvpn") is None:
        progress("openvpn is not installed: that case is skipped (scripts/bench.sh installs it)")
        cases = [c for c in cases if c != "openvpn"]
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "settings": {"runs": runs, "seconds": seconds, "tun_mtu": mtu, "path": "r1 -> web"},
        "cases": cases,
        "runs": results,
    }
    bench = Bench(prefix, seconds, mtu)
    total = runs * len(cases)
    try:
        lab.up(prefix=prefix, vpn=False)
        for round_ in range(runs):
            for case in cases:
                progress(f"[{len(results) + 1}/{total}] round {round_ + 1}: {case} ...")
                try:
                    bench.setup(case)
                    rtt = bench.ping_ms()
                    run = {"case": case, "round": round_ + 1, "rtt_ms": rtt, **bench.iperf()}
                except Exception as exc:  # one broken case must not lose the others
                    run = {"case": case, "round": round_ + 1, "error": str(exc), "mbps": 0.0}
                finally:
                    bench.teardown(case)
                results.append(run)
                progress(
                    f"    {run.get('mbps')} Mbit/s, retransmits {run.get('retransmits')}, "
                    f"rtt {run.get('rtt_ms')} ms, cpu {run.get('cpu_percent')}"
                )
    finally:
        lab.down(prefix)
    document["summary"] = summarize(cases, results)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    chart(document, out / "bench.png")
    return document


def machine() -> dict[str, Any]:
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


def summarize(cases: list[str], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per case, and the ratio of each median to OpenVPN's."""
    rows = []
    for case in cases:
        runs = [r for r in results if r["case"] == case and "error" not in r]
        if not runs:
            rows.append({"case": case, "mbps": 0.0, "runs": 0})
            continue
        cpu_names = sorted({n for r in runs for n in r.get("cpu_percent", {})})
        rtts = [r["rtt_ms"] for r in runs if r.get("rtt_ms") is not None]
        retrans = [r["retransmits"] for r in runs if r.get("retransmits") is not None]
        rows.append(
            {
                "case": case,
                "runs": len(runs),
                "mbps": round(statistics.median(r["mbps"] for r in runs), 1),
                "mbps_all": [r["mbps"] for r in runs],
                "retransmits": round(statistics.median(retrans)) if retrans else None,
                "rtt_ms": round(statistics.median(rtts), 3) if rtts else None,
                "cpu_percent": {
                    n: round(statistics.median(r["cpu_percent"].get(n, 0) for r in runs), 1)
                    for n in cpu_names
                },
            }
        )
    base = next((r["mbps"] for r in rows if r["case"] == "openvpn" and r["mbps"]), None)
    for row in rows:
        row["vs_openvpn"] = round(row["mbps"] / base, 2) if base else None
    return rows


def format_table(document: dict[str, Any]) -> str:
    """The summary as a Markdown table (it goes into the README as it is)."""
    lines = [
        "| case | Mbit/s (median) | x OpenVPN | retransmits | ping RTT ms "
        "| CPU % (client / server) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in document["summary"]:
        cpu = row.get("cpu_percent") or {}
        cpu_text = " / ".join(f"{cpu[n]:.0f}" for n in ("client", "server") if n in cpu) or "-"
        ratio = f"{row['vs_openvpn']:.2f}" if row.get("vs_openvpn") else "-"
        rtt = f"{row['rtt_ms']:.3f}" if row.get("rtt_ms") is not None else "-"
        lines.append(
            f"| {row['case']} | {row['mbps']:.0f} | {ratio} | {row.get('retransmits', '-')} | "
            f"{rtt} | {cpu_text} |"
        )
    machine = document["machine"]
    lines.append("")
    lines.append(
        f"{document['date']}, {machine['cpus']} cores, kernel {machine['kernel']}, "
        f"Python {machine['python']}, {machine['openvpn'] or 'no openvpn'}; "
        f"{document['settings']['runs']} rounds of {document['settings']['seconds']} s, "
        f"tun MTU {document['settings']['tun_mtu']}, iperf3 r1 -> web"
    )
    return "\n".join(lines)


def chart(document: dict[str, Any], path: Path) -> None:
    """A bar chart of the medians (every run as a dot), ratios to OpenVPN on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["summary"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [r["case"].replace("vpnlab ", "") for r in rows]
    colors = [
        "gray"
        if r["case"] == "routed"
        else "tab:red"
        if r["case"] == "openvpn"
        else "tab:blue"
        if r["case"].endswith("fast")
        else "tab:cyan"
        for r in rows
    ]
    bars = ax.bar(names, [r["mbps"] for r in rows], color=colors)
    for index, row in enumerate(rows):
        ax.plot([index] * len(row.get("mbps_all", [])), row.get("mbps_all", []), "k.", ms=4)
    for bar, row in zip(bars, rows, strict=True):
        if row.get("vs_openvpn"):
            ax.annotate(
                f"{row['vs_openvpn']:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_ylabel("TCP throughput r1 -> web, Mbit/s")
    machine = document["machine"]
    ax.set_title(
        f"vpnlab vs OpenVPN, {document['date']}, {machine['cpus']} cores, "
        f"kernel {machine['kernel']}",
        fontsize=9,
    )
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpnlab.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s, 4 cases")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=10, help="per run (default %(default)s)")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=ALL_CASES,
        metavar="CASE",
        help=f"subset of: {', '.join(ALL_CASES)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for results.json and bench.png (default %(default)s)",
    )
    parser.add_argument("--prefix", default="vbench-", help="lab prefix (default %(default)s)")
    parser.add_argument("--mtu", type=int, default=MTU, help="tun MTU of every tunnel")
    args = parser.parse_args(argv)
    if args.quick:
        runs, seconds, cases = 1, 2.0, QUICK_CASES
    else:
        runs, seconds, cases = args.runs, args.seconds, ALL_CASES
    cases = args.cases or cases
    document = run_bench(cases, runs, seconds, args.out, args.prefix, args.mtu)
    print(format_table(document))
    print(f"\nraw runs: {args.out / 'results.json'}   chart: {args.out / 'bench.png'}")
    return 0 if all(row["mbps"] > 0 for row in document["summary"]) else 1


if __name__ == "__main__":
    sys.exit(main())
