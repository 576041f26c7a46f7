"""The benchmark's results as a table and a chart: medians per case, ratios to OpenVPN.

``bench.py`` measures; this module summarizes its runs (``summarize``), prints the Markdown
table of the README (``format_table``) and draws ``bench.png`` (``chart``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Literal, TypedDict


class Measured(TypedDict):
    """One iperf3 run (``bench.Bench.iperf``): Mbit/s, the loaded ping's median RTT, TCP's
    retransmits, and per tunnel daemon its CPU (% of a core), the data packets it carried, its
    CPU per packet (microseconds) and the UDP GRO batches it received (``recvmsg`` calls that
    returned more than one datagram: 0 on the simple path, or where the device does no GRO)."""

    mbps: float
    rtt_load_ms: float | None
    retransmits: int | None
    cpu_percent: dict[str, float]
    packets: dict[str, int]
    cpu_us_per_packet: dict[str, float]
    gro_batches: dict[str, int]


class MeasuredRun(Measured):
    """One run of a case (``bench.run_bench``): the iperf3 run, the idle ping's RTT and where
    it waits (``bench.Bench.idle_hops``)."""

    case: str
    round: int
    rtt_ms: float | None
    idle_hops_us: dict[str, float]


class FailedRun(TypedDict):
    """A run whose case could not be set up or measured: why, and 0.0 Mbit/s."""

    case: str
    round: int
    error: str
    mbps: float


Run = MeasuredRun | FailedRun


class _Row(TypedDict):
    case: str
    runs: int
    mbps: float


class Row(_Row, total=False):
    """One case of the summary (:func:`summarize`): medians over its runs, the ratio of its
    Mbit/s to OpenVPN's; a case without a run has only its name, 0 runs, 0.0 Mbit/s."""

    mbps_all: list[float]
    retransmits: int | None
    rtt_ms: float | None
    rtt_load_ms: float | None
    cpu_percent: dict[str, float]
    cpu_us_per_packet: dict[str, float]
    idle_hops_us: dict[str, float]
    vs_openvpn: float | None


class Machine(TypedDict):
    """Where the benchmark ran (``bench.machine``)."""

    cpus: int | None
    kernel: str
    python: str
    openvpn: str


PerDaemon = Literal["cpu_percent", "cpu_us_per_packet", "idle_hops_us"]
"""The measurements of a run that are per daemon (or per hop)."""


def summarize(cases: list[str], results: list[Run]) -> list[Row]:
    """Medians per case, and the ratio of each median to OpenVPN's."""
    rows: list[Row] = []
    for case in cases:
        runs = [r for r in results if r["case"] == case and "error" not in r]
        if not runs:
            rows.append({"case": case, "mbps": 0.0, "runs": 0})
            continue
        rtts = [v for v in (r.get("rtt_ms") for r in runs) if v is not None]
        loaded = [v for v in (r.get("rtt_load_ms") for r in runs) if v is not None]
        retrans = [v for v in (r.get("retransmits") for r in runs) if v is not None]
        rows.append(
            {
                "case": case,
                "runs": len(runs),
                "mbps": round(statistics.median(r["mbps"] for r in runs), 1),
                "mbps_all": [r["mbps"] for r in runs],
                "retransmits": round(statistics.median(retrans)) if retrans else None,
                "rtt_ms": round(statistics.median(rtts), 3) if rtts else None,
                "rtt_load_ms": round(statistics.median(loaded), 3) if loaded else None,
                "cpu_percent": _medians(runs, "cpu_percent", 1),
                "cpu_us_per_packet": _medians(runs, "cpu_us_per_packet", 2),
                "idle_hops_us": _medians(runs, "idle_hops_us", 0),
            }
        )
    base = next((r["mbps"] for r in rows if r["case"] == "openvpn" and r["mbps"]), None)
    for row in rows:
        row["vs_openvpn"] = round(row["mbps"] / base, 2) if base else None
    return rows


def _medians(runs: list[MeasuredRun], key: PerDaemon, digits: int) -> dict[str, float]:
    """Per daemon (or hop), the median of ``run[key][daemon]`` over the runs that have it, in
    the order the runs name them."""
    names = list(dict.fromkeys(n for r in runs for n in r.get(key) or {}))
    values = {n: [r[key][n] for r in runs if n in (r.get(key) or {})] for n in names}
    return {n: round(statistics.median(v), digits) for n, v in values.items()}


def _per_daemon(values: dict[str, float] | None, spec: str) -> str:
    """``client / server`` of a per-daemon dict, ``-`` if it has neither."""
    values = values or {}
    return " / ".join(f"{values[n]:{spec}}" for n in ("client", "server") if n in values) or "-"


def path_of(document: dict[str, Any]) -> str:
    """Which way the bench's data flowed: "r1 -> web" (the default) or "web -> r1"."""
    path: str = document["settings"].get("path", "r1 -> web")
    return path


def format_table(document: dict[str, Any]) -> str:
    """The summary as a Markdown table (it goes into the README as it is)."""
    lines = [
        "| case | Mbit/s (median) | x OpenVPN | retransmits | ping RTT ms idle / loaded "
        "| CPU % (client / server) | CPU us/packet (client / server) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in document["summary"]:
        cpu_text = _per_daemon(row.get("cpu_percent"), ".0f")
        per_packet = _per_daemon(row.get("cpu_us_per_packet"), ".1f")
        ratio = f"{row['vs_openvpn']:.2f}" if row.get("vs_openvpn") else "-"
        rtt = " / ".join(
            f"{row[key]:.3f}" if row.get(key) is not None else "-"
            for key in ("rtt_ms", "rtt_load_ms")
        )
        lines.append(
            f"| {row['case']} | {row['mbps']:.0f} | {ratio} | {row.get('retransmits', '-')} | "
            f"{rtt} | {cpu_text} | {per_packet} |"
        )
    lines += _hops_table(document["summary"])
    machine = document["machine"]
    lines.append("")
    lines.append(
        f"{document['date']}, {machine['cpus']} cores, kernel {machine['kernel']}, "
        f"Python {machine['python']}, {machine['openvpn'] or 'no openvpn'}; "
        f"{document['settings']['runs']} rounds of {document['settings']['seconds']} s, "
        f"tun MTU {document['settings']['tun_mtu']}, iperf3 {path_of(document)}"
    )
    return "\n".join(lines)


def _hops_table(rows: list[Row]) -> list[str]:
    """Where an idle ping waits, per tunnel (``bench.idle_hops``): none without tcpdump."""
    measured = [row for row in rows if row.get("idle_hops_us")]
    if not measured:
        return []
    hops = list(measured[0]["idle_hops_us"])
    lines = [
        "",
        "Idle ping, the time each tunnel daemon holds the echo request and its reply (us, "
        "median; tcpdump's time stamps on tun0 and eth0 of r1 and r2):",
        "",
        "| case | " + " | ".join(hops) + " | sum |",
        "|---|" + "---:|" * (len(hops) + 1),
    ]
    for row in measured:
        values = [row["idle_hops_us"].get(hop) for hop in hops]
        cells = [f"{value:.0f}" if value is not None else "-" for value in values]
        total = sum(value for value in values if value is not None)
        lines.append(f"| {row['case']} | " + " | ".join(cells) + f" | {total:.0f} |")
    return lines


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
    ax.set_ylabel(f"TCP throughput {path_of(document)}, Mbit/s")
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
