"""TCP meltdown, measured: the notes' reason for a UDP tunnel ("to avoid TCP meltdown").

    sudo scripts/meltdown.sh           # full sweep: loss 0-5 % x delay 0/20/50 ms x udp/tcp
    sudo scripts/meltdown.sh --quick     # 2 loss points x 2 transports x 2 s (what CI runs)

In a lab of its own (prefix ``vmelt-``) the VPN runs once with ``--transport udp`` (the notes)
and once with ``--transport tcp`` (TCP over TCP, ``transport.py``). For every delay and loss
set on the isp (``lab.impair``: loss both ways, delay r2 -> r1) it measures an inner TCP flow
from r1 to web, through the tunnel:

    goodput          iperf3 -J, r1 -> web, bits received per second
    inner retrans    iperf3's count of the inner TCP's retransmitted segments
    outer retrans    r1's TcpRetransSegs (nstat) minus the inner ones: the tunnel's own TCP
    transfer time    curl of /bytes/65536 from web, the median of a few (an inner TCP's
                     latency: handshake, slow start, every stall of the tunnel)

Everything is bounded: each iperf3 and curl runs under ``timeout``, the lab is removed at the
end (also on Ctrl-C or an error). :func:`retransmissions_seen` captures tun0 and eth0 on r1
and lets tshark count ``tcp.analysis.retransmission`` in each (notebook 07).

The same lab also shows where a UDP tunnel's own latency comes from (issue 29 item 1):
:func:`queue_sweep` (``vpnlab meltdown --queues BYTES ...``) runs the VPN on the fast path with
each ``--queue-bytes`` and pings r1 -> web every 0.1 s while iperf3 fills the tunnel; the
ping's time is the wait behind the standing queue (``shell/queues.py``), :func:`plot_queues`
draws it over time.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from vpnlab import lab
from vpnlab.core.errors import VpnlabError
from vpnlab.course.iperf import WEB, IperfError, iperf_result, iperf_server
from vpnlab.instruments import capture
from vpnlab.lab import impair
from vpnlab.lab.nodes import popen_in, run_in, wait_for

if TYPE_CHECKING:  # matplotlib loads slowly: imported where a figure is drawn
    from matplotlib.figure import Figure

DEFAULT_PREFIX = "vmelt-"
TRANSPORTS = ("udp", "tcp")
PING_INTERVAL_S = 0.1
"""The loaded pings of :func:`queue_sweep`: ten a second."""
SWEEP_QUEUE_BYTES = 4 * 1024 * 1024
"""The daemons' ``--queue-bytes`` in the loss and delay sweep: room enough that the queue
drops nothing (tun0's ring at the kernel's 500 packets), so the only loss is the impairment
the sweep sets. The queue's own effect is :func:`queue_sweep`'s subject."""


class SweepSize(TypedDict):
    """A sweep's grid and its length: loss %, delay ms, seconds per sample, samples per point."""

    losses: tuple[float, ...]
    delays: tuple[float, ...]
    seconds: float
    samples: int


FULL: SweepSize = {
    "losses": (0, 0.5, 1, 2, 3, 5),
    "delays": (0, 20, 50),
    "seconds": 8.0,
    "samples": 5,
}
QUICK: SweepSize = {"losses": (0, 2), "delays": (10,), "seconds": 2.0, "samples": 2}
TRANSFER_BYTES = 65536
TRANSFER_LIMIT_S = 20


class _Iperf(TypedDict):
    mbps: float
    inner_retrans: int | None


class Iperf(_Iperf, total=False):
    """One iperf3 run (:func:`iperf`): goodput (Mbit/s), the inner TCP's retransmissions;
    ``error``: the end of iperf3's output when it gave no result (then 0.0 and None)."""

    error: str


class Point(Iperf):
    """One point of the sweep (:func:`measure_point`); ``transfer_s`` None: no fetch came."""

    transport: str
    loss: float
    delay_ms: float
    outer_retrans: int
    transfer_s: float | None


class Settings(TypedDict):
    """:func:`sweep`'s settings: seconds per sample, samples per point, the fetch's bytes,
    iperf3's ``-b`` (None: as fast as the tunnel goes)."""

    seconds: float
    samples: int
    transfer_bytes: int
    rate: str | None


class Retransmissions(TypedDict):
    """:func:`retransmissions_seen`: what tshark counts on r1's tun0 and eth0, the iperf3 run
    meanwhile, the captures' files."""

    tun0: int
    eth0: int
    iperf: Iperf
    files: dict[str, str]


class Sweep(TypedDict):
    """:func:`sweep`'s results (``results.json``)."""

    settings: Settings
    points: list[Point]
    captures: dict[str, Retransmissions]
    wall_s: float


class LoadedPings(Iperf):
    """:func:`loaded_pings`: the pings' times (ms, None: lost), their median after the first
    second, how many were lost, and the iperf3 run."""

    queue_bytes: int
    ping_ms: list[float | None]
    median_ms: float | None
    lost: int


class QueueSweep(TypedDict):
    """:func:`queue_sweep`'s results."""

    interval_s: float
    seconds: float
    queues: list[LoadedPings]


Metric = Literal["mbps", "inner_retrans", "outer_retrans", "transfer_s"]
"""A measured value of a :class:`Point`."""


class MeltdownError(VpnlabError):
    """The experiment's tunnel does not carry: r1 cannot reach web through it."""


def tcp_retrans_segs(prefix: str, node: str = "r1") -> int:
    """The node's TCP retransmitted segments so far (``nstat``: every socket of the namespace)."""
    out = run_in(prefix, node, ["nstat", "-asz", "TcpRetransSegs"]).stdout.split()
    return int(out[out.index("TcpRetransSegs") + 1]) if "TcpRetransSegs" in out else 0


def iperf(prefix: str, seconds: float, rate: str | None = None) -> Iperf:
    """One iperf3 run r1 -> web (the server answers one test); goodput and inner retransmits."""
    limit = str(int(seconds) + 15)
    with iperf_server(prefix, int(limit)):
        argv = ["timeout", limit, "iperf3", "-c", WEB, "-t", str(seconds), "-J"]
        done = run_in(prefix, "r1", argv + (["-b", rate] if rate else []))
    try:
        mbps, retransmits = iperf_result(done.stdout)
    except IperfError:
        return {"mbps": 0.0, "inner_retrans": None, "error": (done.stderr or done.stdout)[-200:]}
    return {"mbps": round(mbps, 2), "inner_retrans": int(retransmits or 0)}


def transfer_s(prefix: str, samples: int) -> float | None:
    """Median time of a 64 KB HTTP fetch r1 -> web through the tunnel (None: all failed)."""
    url = f"http://{WEB}/bytes/{TRANSFER_BYTES}"
    times = []
    for _ in range(samples):
        argv = ["curl", "-s", "-o", "/dev/null", "-m", str(TRANSFER_LIMIT_S)]
        done = run_in(prefix, "r1", argv + ["-w", "%{http_code} %{time_total}", url])
        code, _, total = done.stdout.partition(" ")
        if code == "200":
            times.append(float(total))
    return round(statistics.median(times), 4) if times else None


def measure_point(
    prefix: str,
    transport: str,
    loss: float,
    delay_ms: float,
    seconds: float,
    samples: int,
    rate: str | None = None,
) -> Point:
    """One point of the sweep: impair the path, then goodput, retransmissions, transfer time."""
    impair.apply(prefix, loss=loss, delay_ms=delay_ms)
    before = tcp_retrans_segs(prefix)
    result = iperf(prefix, seconds, rate)
    all_retrans = tcp_retrans_segs(prefix) - before
    inner = result.get("inner_retrans") or 0
    return {
        "transport": transport,
        "loss": loss,
        "delay_ms": delay_ms,
        **result,
        "outer_retrans": max(0, all_retrans - inner) if transport == "tcp" else 0,
        "transfer_s": transfer_s(prefix, samples),
    }


def start(prefix: str, transport: str, cipher: str | None = None) -> None:
    """(Re)start the VPN of the lab with ``--transport``; wait until r1 reaches web."""
    impair.clear(prefix)
    extra = ["--transport", transport, "--datapath", "simple"]  # tcp has only simple: like for like
    extra += ["--queue-bytes", str(SWEEP_QUEUE_BYTES)]
    lab.start_vpn(prefix, cipher, server_args=extra, client_args=extra)

    def reaches() -> bool:
        return run_in(prefix, "r1", ["ping", "-c", "1", "-W", "1", WEB]).returncode == 0

    if not wait_for(reaches, 5, 0.2):
        raise MeltdownError(f"{transport}: r1 cannot reach {WEB} through the tunnel")


def loaded_pings(prefix: str, queue_bytes: int, seconds: float) -> LoadedPings:
    """The VPN (UDP, fast path) with ``--queue-bytes``: ping r1 -> web every 0.1 s while
    iperf3 sends r1 -> web for ``seconds``; the pings' times (ms, in order, None for a lost
    one), their median after the first second, goodput and the inner TCP's retransmissions."""
    extra = ["--datapath", "fast", "--queue-bytes", str(queue_bytes)]
    lab.start_vpn(prefix, server_args=extra, client_args=extra)
    try:
        if not wait_for(
            lambda: run_in(prefix, "r1", ["ping", "-c1", "-W1", WEB]).returncode == 0, 5, 0.2
        ):
            raise MeltdownError(f"--queue-bytes {queue_bytes}: r1 cannot reach {WEB}")
        count = str(int(seconds / PING_INTERVAL_S))
        argv = ["timeout", str(int(seconds) + 10), "ping", "-n", "-D", "-i", str(PING_INTERVAL_S),
                "-c", count, "-W", "2", WEB]  # fmt: skip
        pings = popen_in(prefix, "r1", argv, stdout=subprocess.PIPE, text=True)
        result = iperf(prefix, seconds)
        out, _ = pings.communicate(timeout=seconds + 15)
    finally:
        lab.stop_vpn(prefix)
    times: list[float | None] = [None] * int(count)
    for line in out.splitlines():
        if "icmp_seq=" in line and "time=" in line:
            seq = int(line.split("icmp_seq=")[1].split()[0])
            if 0 < seq <= len(times):
                times[seq - 1] = float(line.split("time=")[1].split()[0])
    loaded = [t for t in times[int(1 / PING_INTERVAL_S) :] if t is not None]
    median = round(statistics.median(loaded), 2) if loaded else None
    lost = sum(t is None for t in times)
    return {
        "queue_bytes": queue_bytes,
        "ping_ms": times,
        "median_ms": median,
        "lost": lost,
        **result,
    }


def queue_sweep(
    prefix: str, budgets: list[int], seconds: float, say: Callable[[str], None] = print
) -> QueueSweep:
    """Build a lab, :func:`loaded_pings` for each ``--queue-bytes``, remove the lab."""
    lab.up(prefix=prefix, vpn=False)
    runs = []
    try:
        for budget in budgets:
            run = loaded_pings(prefix, budget, seconds)
            say(
                f"--queue-bytes {budget}: ping under load {run['median_ms']} ms (median), "
                f"{run['mbps']} Mbit/s, {run['inner_retrans']} retransmits"
            )
            runs.append(run)
    finally:
        lab.down(prefix)
    return {"interval_s": PING_INTERVAL_S, "seconds": seconds, "queues": runs}


def plot_queues(results: QueueSweep, path: str | Path | None = None) -> Figure:
    """The loaded ping over time, one line per ``--queue-bytes``: the standing queue, seen."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    step = results["interval_s"]
    for run in results["queues"]:
        points = [(i * step, t) for i, t in enumerate(run["ping_ms"]) if t is not None]
        ax.plot(
            [x for x, _ in points],
            [y for _, y in points],
            ".-",
            label=f"--queue-bytes {run['queue_bytes']:,}: median {run['median_ms']} ms, "
            f"{run['lost']} lost, {run['mbps']:.0f} Mbit/s",
        )
    ax.set_xlabel("seconds into the transfer")
    ax.set_ylabel("ping r1 -> web (ms)")
    ax.set_title("ping through the tunnel during a bulk TCP transfer r1 -> web (fast path)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def sweep(
    prefix: str = DEFAULT_PREFIX,
    losses: Sequence[float] = QUICK["losses"],
    delays: Sequence[float] = QUICK["delays"],
    seconds: float = QUICK["seconds"],
    samples: int = QUICK["samples"],
    transports: Sequence[str] = TRANSPORTS,
    cipher: str | None = None,
    keep_lab: bool = False,
    capture_loss: float | None = None,
    capture_folder: str | Path = "meltdown-results",
    rate: str | None = None,
    say: Callable[[str], None] = print,
) -> Sweep:
    """Build a lab, measure every (transport, delay, loss), remove the lab; returns the results.

    ``keep_lab``: the lab already exists (a notebook's) and stays up afterwards.
    ``rate``: iperf3 ``-b`` (e.g. ``"50M"``): a fixed offered load instead of as fast as the
    tunnel goes (the simple data path then drops nothing of its own).
    ``capture_loss``: also capture r1's tun0 and eth0 at this loss (and the first delay) for
    each transport, and count the retransmissions tshark sees (``captures`` in the results).
    """
    started = time.time()
    if not keep_lab:
        lab.up(prefix=prefix, vpn=False)
    points: list[Point] = []
    captures: dict[str, Retransmissions] = {}
    try:
        for transport in transports:
            start(prefix, transport, cipher)
            for delay_ms in delays:
                for loss in losses:
                    point = measure_point(prefix, transport, loss, delay_ms, seconds, samples, rate)
                    say(format_point(point))
                    points.append(point)
            if capture_loss is not None:
                impair.apply(prefix, loss=capture_loss, delay_ms=delays[0])
                folder = Path(capture_folder) / transport
                captures[transport] = seen = retransmissions_seen(prefix, folder)
                say(
                    f"{transport}: tshark sees {seen['tun0']} retransmissions on tun0, "
                    f"{seen['eth0']} on eth0 (loss {capture_loss:g} %)"
                )
            impair.clear(prefix)
            lab.stop_vpn(prefix)
    finally:
        if not keep_lab:
            lab.down(prefix)
    settings: Settings = {
        "seconds": seconds,
        "samples": samples,
        "transfer_bytes": TRANSFER_BYTES,
        "rate": rate,
    }
    wall_s = round(time.time() - started, 1)
    return {"settings": settings, "points": points, "captures": captures, "wall_s": wall_s}


def format_point(p: Point) -> str:
    t = "-" if p["transfer_s"] is None else f"{p['transfer_s'] * 1000:.0f} ms"
    return (
        f"{p['transport']:>3} delay {p['delay_ms']:>4g} ms loss {p['loss']:>4g} %: "
        f"{p['mbps']:8.1f} Mbit/s, retrans inner {p['inner_retrans']}, "
        f"outer {p['outer_retrans']}, 64 KB fetch {t}"
    )


def format_table(results: Sweep) -> str:
    """The README's table: one row per (delay, loss), UDP and TCP side by side."""
    rows: dict[tuple[float, float], dict[str, Point]] = {}
    for p in results["points"]:
        rows.setdefault((p["delay_ms"], p["loss"]), {})[p["transport"]] = p

    def cell(p: Point | None, key: Metric, fmt: str, scale: float = 1) -> str:
        value = None if p is None else p.get(key)
        return "-" if value is None else format(value * scale, fmt)

    lines = [
        "| delay ms | loss % | Mbit/s udp | Mbit/s tcp | inner retrans udp | inner retrans tcp "
        "| outer retrans tcp | 64 KB fetch ms udp | 64 KB fetch ms tcp |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (delay_ms, loss), by in sorted(rows.items()):
        u, t = by.get("udp"), by.get("tcp")
        lines.append(
            f"| {delay_ms:g} | {loss:g} | {cell(u, 'mbps', '.1f')} | {cell(t, 'mbps', '.1f')} "
            f"| {cell(u, 'inner_retrans', 'd')} | {cell(t, 'inner_retrans', 'd')} "
            f"| {cell(t, 'outer_retrans', 'd')} "
            f"| {cell(u, 'transfer_s', '.0f', 1000)} | {cell(t, 'transfer_s', '.0f', 1000)} |"
        )
    return "\n".join(lines)


def plot(results: Sweep, path: str | Path | None = None) -> Figure:
    """Goodput, inner retransmissions and transfer time against loss, UDP vs TCP, per delay."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["points"]
    delays = sorted({p["delay_ms"] for p in points})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    metrics: tuple[tuple[Metric, str], ...] = (
        ("mbps", "goodput (Mbit/s)"),
        ("inner_retrans", "inner TCP retransmissions"),
        ("transfer_s", "64 KB fetch (s)"),
    )
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for transport, style in (("udp", "-o"), ("tcp", "--s")):
            for delay_ms in delays:
                chosen = sorted(
                    (
                        p
                        for p in points
                        if p["transport"] == transport and p["delay_ms"] == delay_ms
                    ),
                    key=lambda p: p["loss"],
                )
                xs = [p["loss"] for p in chosen if p.get(key) is not None]
                ys = [p[key] for p in chosen if p.get(key) is not None]
                ax.plot(xs, ys, style, label=f"{transport}, {delay_ms:g} ms")
        ax.set_xlabel("loss on the isp, each way (%)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("inner TCP r1 -> web through the tunnel: UDP transport vs TCP transport")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def retransmissions_seen(
    prefix: str, folder: str | Path, seconds: float = 3.0, rate: str = "10M"
) -> Retransmissions:
    """Capture r1's tun0 and eth0 during a rate-limited iperf3; tshark counts retransmissions.

    Returns ``{"tun0": n, "eth0": n, "iperf": {...}, "files": {...}}``: on tun0 the inner TCP's
    retransmissions, on eth0 the outer TCP's (none for UDP: it has no TCP to retransmit).
    """
    folder = Path(folder)
    caps = {
        itf: capture.start_capture(
            prefix,
            "r1",
            itf,
            folder / f"meltdown-{itf}.pcapng",
            count=capture.MAX_PACKETS,
            duration_s=seconds + 4,
        )
        for itf in ("tun0", "eth0")
    }
    try:
        result = iperf(prefix, seconds, rate=rate)
    finally:
        files = {itf: cap.stop() for itf, cap in caps.items()}
    seen = {
        itf: len(capture.fields(path, ["frame.number"], None, "tcp.analysis.retransmission"))
        for itf, path in files.items()
    }
    return {
        "tun0": seen["tun0"],
        "eth0": seen["eth0"],
        "iperf": result,
        "files": {k: str(v) for k, v in files.items()},
    }
