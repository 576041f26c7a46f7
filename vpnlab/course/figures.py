"""The course's figures: the lab as a picture, timelines, and a packet's layers as bytes.

The notebooks import this module beside the notebook helpers::

    from vpnlab.course import figures
    from vpnlab.course import notebook as course

    figures.draw_topology(lab.status())

Each function draws on the matplotlib Axes it is given (a new figure if none) and returns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib loads slowly: imported where a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from vpnlab.course.meltdown import Metric, Sweep
    from vpnlab.instruments.decode import Packet

_POS = {"r1": (0.0, 0.0), "isp": (4.0, 0.0), "r2": (8.0, 0.0), "web": (4.0, -3.0)}
_LINKS = (
    ("r1", "isp", "192.0.2.0/24"),
    ("isp", "r2", "198.51.100.0/24"),
    ("isp", "web", "203.0.113.0/24"),
)
_COLORS = {"client": "#cfe8ff", "router": "#eeeeee", "server": "#ffe2c6", "web": "#d8f5d0"}


def draw_topology(status: dict[str, Any], ax: Axes | None = None) -> Axes:
    """The lab as a picture: nodes with their addresses and daemons, links, the tunnel.

    ``status`` is :meth:`CourseLab.status`. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.5))
    nodes = status["nodes"]
    daemons: dict[str, list[str]] = {}
    for name, d in status.get("daemons", {}).items():
        if d.get("alive"):
            daemons.setdefault(d["node"], []).append(name.split("-")[0])
    pos = dict(_POS)
    extra = [n for n in nodes if n not in pos]
    for i, name in enumerate(extra):
        pos[name] = (0.0, -2.0 - 1.5 * i)
    _draw_links(ax, nodes, pos)
    for name, node in nodes.items():
        _draw_node(ax, pos[name], name, node, daemons.get(name, []))
    ax.set_xlim(-2.2, 10.2)
    ax.set_ylim(-4.2, 2.3)
    ax.axis("off")
    ax.set_title(f"vpnlab topology (prefix {status['prefix']}, cipher {status.get('cipher')})")
    return ax


def _draw_links(ax: Axes, nodes: dict[str, Any], pos: dict[str, tuple[float, float]]) -> None:
    """The veths of the default lab with their networks, and the tunnel once it is up."""
    for a, b, label in _LINKS:
        if a in nodes and b in nodes:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            ax.plot([x1, x2], [y1, y2], color="black", lw=2, zorder=1)
            vertical = x1 == x2
            ax.text(
                (x1 + x2) / 2 + (0.15 if vertical else 0),
                (y1 + y2) / 2 + 0.25,
                label,
                ha="left" if vertical else "center",
                fontsize=9,
                color="dimgray",
            )
    tun = {n: i for n, node in nodes.items() for i in node.get("interfaces", {}) if i == "tun0"}
    if "r1" in tun and "r2" in tun:
        xs = [pos["r1"][0], 4.0, pos["r2"][0]]
        ax.plot(xs, [0.6, 1.6, 0.6], color="tab:red", lw=2, ls="--", zorder=1)
        ax.text(
            4.0,
            1.75,
            "VPN tunnel 10.8.0.0/24 over UDP 4500",
            ha="center",
            color="tab:red",
            fontsize=10,
        )


def _draw_node(
    ax: Axes, xy: tuple[float, float], name: str, node: dict[str, Any], runs: list[str]
) -> None:
    """One node as a box: name, role, namespace, addresses, the daemons it runs."""
    lines = [f"{name}  [{node.get('role', '')}]", node.get("namespace", "")]
    for ifname, itf in node.get("interfaces", {}).items():
        if ifname != "lo":
            lines.append(f"{ifname} {' '.join(itf.get('addresses', [])) or '-'}")
    if runs:
        lines.append("runs: " + ", ".join(sorted(runs)))
    face = _COLORS.get(node.get("role", ""), "white") if node.get("exists") else "#ffcccc"
    ax.text(
        *xy,
        "\n".join(lines),
        ha="center",
        va="center",
        fontsize=9,
        zorder=2,
        bbox={"boxstyle": "round,pad=0.5", "fc": face, "ec": "black"},
    )


def draw_timeline(
    events: Sequence[tuple[float, str, str]],
    lanes: Sequence[str],
    title: str = "",
    marks: Sequence[tuple[float, str]] = (),
    ax: Axes | None = None,
) -> Axes:
    """A timeline: ``events`` are ``(seconds, lane, label)``; ``marks`` vertical lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 1.2 + 0.7 * len(lanes)))
    row = {lane: i for i, lane in enumerate(reversed(list(lanes)))}
    palette = [f"C{i}" for i in range(10)]
    for y in row.values():
        ax.axhline(y, color="lightgray", lw=1, zorder=0)
    colors: dict[str, str] = {}
    for t, lane, label in events:
        new = label not in colors
        color = colors.setdefault(label, palette[len(colors) % len(palette)])
        ax.plot([t], [row[lane]], "o", color=color, zorder=2, label=label if new else None)
    for t, label in marks:
        ax.axvline(t, color="tab:red", ls="--", lw=1)
        ax.text(t, len(row) - 0.45, label + " ", color="tab:red", fontsize=9, ha="right")
    times = [t for t, _, _ in events] + [t for t, _ in marks]
    if times:
        ax.set_xlim(min(times) - 0.2, max(times) + 0.3)
    ax.set_yticks(list(row.values()), list(row.keys()))
    ax.set_xlabel("seconds")
    ax.set_ylim(-0.6, len(row) - 0.2)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return ax


def draw_layers(packet: Packet, ax: Axes | None = None, title: str = "") -> Axes:
    """A layer/byte diagram of one decoded packet (``vpnlab.decode.Packet``).

    One bar per layer, from its first to its last byte; decrypted ESP contents (whose byte
    positions restart at 0) are drawn inside the ESP layer's payload.
    """
    import matplotlib.pyplot as plt

    layers = [layer for layer in packet.layers if layer.size > 0]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.6 + 0.5 * len(layers)))
    offset, last = 0, -1
    for depth, layer in enumerate(layers):
        if layer.pos < last:  # a new buffer (decrypted): place it after the ESP header
            esp = next((x for x in layers if x.name == "esp"), None)
            mine = [f for f in esp.fields if esp.pos <= f.pos < esp.pos + esp.size] if esp else []
            payload = max(mine, key=lambda f: f.size, default=None)
            offset = (payload.pos if payload else esp.pos if esp else 0) - layer.pos
        last = layer.pos
        start = layer.pos + offset
        y = len(layers) - depth
        ax.barh(y, layer.size, left=start, height=0.7, color=f"C{depth % 10}", alpha=0.8)
        ax.text(
            start + 1,
            y,
            f"{layer.name}  bytes {start}-{start + layer.size - 1} ({layer.size} B)",
            va="center",
            fontsize=8,
        )
    ax.set_yticks([])
    ax.set_xlabel("byte offset in the frame")
    ax.set_xlim(0, max(packet.length, 1) * 1.02)
    ax.set_title(title or f"packet {packet.number}: {packet.stack} ({packet.length} B)")
    return ax


def draw_budget(
    rows: Sequence[tuple[str, Sequence[tuple[str, int]]]], limit: int = 1500, ax: Axes | None = None
) -> Axes:
    """The MTU budget: per format, one bar of its parts (``(label, bytes)``) against ``limit``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.9 + 0.8 * len(rows)))
    palette = {"inner packet": "#cfe8cf", "padding": "#f3d3a3"}
    for y, (_, parts) in enumerate(reversed(list(rows))):
        x = 0
        for label, size in parts:
            ax.barh(y, size, left=x, color=palette.get(label, "#bcd4ee"), edgecolor="black")
            if size >= 30:
                ax.text(x + size / 2, y, f"{label}\n{size}", ha="center", va="center", fontsize=8)
            x += size
        extra = [f"{label} {size}" for label, size in parts if label != "inner packet"]
        ax.text(limit + 8, y, " + ".join(extra), va="center", fontsize=7)
    ax.axvline(limit, color="red", lw=2)
    # the label in a strip of its own under the bars: above them it would meet the title
    ax.text(limit, -0.8, f" {limit}: the path's MTU", color="red", fontsize=9, va="center")
    ax.set_ylim(-1.1, len(rows) - 0.5)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(list(rows))])
    ax.set_xlabel("bytes of the outer IPv4 packet")
    ax.set_xlim(0, limit * 1.6)
    return ax


def draw_repeats(runs: Sequence[Sweep], title: str = "") -> Figure:
    """Notebook 7's quick meltdown sweep, run several times: per metric, UDP against TCP by
    loss, each run's points faint, their median as the line and the min-max spread as a bar,
    so that one noisy 2 s point cannot pass for a trend. ``runs``: ``meltdown.sweep`` results.
    """
    import statistics

    import matplotlib.pyplot as plt

    metrics: tuple[tuple[Metric, str], ...] = (
        ("mbps", "goodput (Mbit/s)"),
        ("inner_retrans", "inner TCP retransmissions"),
        ("transfer_s", "64 KB fetch (s)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for shift, (transport, colour) in enumerate((("udp", "tab:blue"), ("tcp", "tab:red"))):
            by_loss: dict[float, list[float]] = {}
            for run in runs:
                for p in run["points"]:
                    value = p.get(key)
                    if p["transport"] == transport and value is not None:
                        by_loss.setdefault(p["loss"], []).append(value)
            losses = sorted(by_loss)
            xs = [x + (shift - 0.5) * 0.12 for x in losses]  # side by side, not on top
            medians = [statistics.median(by_loss[x]) for x in losses]
            low = [m - min(by_loss[x]) for m, x in zip(medians, losses, strict=True)]
            high = [max(by_loss[x]) - m for m, x in zip(medians, losses, strict=True)]
            for x, loss in zip(xs, losses, strict=True):
                ax.plot([x] * len(by_loss[loss]), by_loss[loss], ".", color=colour, alpha=0.35)
            ax.errorbar(
                xs,
                medians,
                yerr=[low, high],
                fmt="-o",
                color=colour,
                capsize=4,
                label=f"{transport}: median of {len(runs)} runs, min-max",
            )
        ax.set_xlabel("loss on the isp, each way (%)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "inner TCP r1 -> web: UDP transport vs TCP transport, repeated runs")
    fig.tight_layout()
    return fig
