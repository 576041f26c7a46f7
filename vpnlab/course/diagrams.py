"""The course's explanatory drawings (matplotlib): a ping's path, a message sequence from a
capture, the liveness window, the routes' prefixes. The lab's own pictures are ``figures.py``."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib loads slowly: imported where a figure is drawn
    from matplotlib.axes import Axes

PING_PATH = [
    ("r1: ping", "10.8.0.2 -> 203.0.113.10\nICMP echo request", "routed into tun0 (0/1, 128/1)"),
    ("r1: client daemon", "read from tun0, sealed", "TunSelected"),
    ("r1 eth0 -> isp", "192.0.2.2 -> 198.51.100.2\nUDP 4500 [ESP [inner]]", "the /32 host route"),
    ("r2: server daemon", "opened, written to tun0", "SockSelected"),
    (
        "r2: forward + NAT",
        "198.51.100.2 -> 203.0.113.10\nICMP echo request",
        "masquerade",
    ),
    ("web", "echo reply to 198.51.100.2", "conntrack undoes the NAT at r2"),
]
"""The ping of notebook 4, hop by hop: (where, the packet there, what decides)."""


PING_BACK = (
    "the reply: the same way back\n(NAT undone and sealed at r2,\nopened and written to tun0 at r1)"
)


def draw_ping_path(
    steps: Sequence[tuple[str, str, str]] = PING_PATH,
    ax: Axes | None = None,
    title: str = "one ping through the tunnel, and back",
    back: str = PING_BACK,
) -> Axes:
    """One ping through the tunnel, top to bottom: where the packet is, what it looks like
    there, what decides its way; the reply climbs back up on the left (``back`` says how).
    The default is notebook 4's, r1 -> web with NAT; notebooks 9, 12 and 14 draw theirs."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.9 * len(steps) + 0.6))
    for i, (where, packet, why) in enumerate(steps):
        box = {"boxstyle": "round", "fc": "#e8f0fa", "ec": "black"}
        ax.text(0, -i, where, ha="center", va="center", fontsize=9, weight="bold", bbox=box)
        ax.text(0.8, -i, packet, ha="left", va="center", fontsize=8, family="monospace")
        ax.text(2.4, -i, why, ha="left", va="center", fontsize=8, style="italic", color="gray")
        if i:
            ax.annotate("", (0, -i + 0.25), (0, -i + 0.75), arrowprops={"arrowstyle": "->"})
    last = len(steps) - 1
    green = {"arrowstyle": "->", "color": "tab:green"}
    ax.annotate("", (-0.75, 0), (-0.75, -last), arrowprops=green)
    ax.text(
        -0.8,
        -last / 2,
        back,
        ha="right",
        va="center",
        fontsize=8,
        color="tab:green",
    )
    ax.set_xlim(-2.0, 3.8)
    ax.set_ylim(-last - 0.6, 0.6)
    ax.axis("off")
    ax.set_title(title)
    return ax


def draw_sequence(
    messages: Sequence[tuple[float, bool, str]],
    left: str = "r1 (client)",
    right: str = "r2 (server)",
    title: str = "",
    ax: Axes | None = None,
) -> Axes:
    """A sequence diagram: ``messages`` are ``(seconds, sent_by_left, label)``, in order, one
    row each (downward), each labelled with its time."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1.0 + 0.42 * len(messages)))
    end = max(len(messages) - 1, 1)  # one row per message, in order; the time as a label
    for x, name in ((0, left), (1, right)):
        ax.plot([x, x], [-0.3, end + 0.3], color="gray", lw=1)
        ax.text(x, -0.45, name, ha="center", va="bottom", weight="bold")
    for row, (t, from_left, label) in enumerate(messages):
        start, stop = (0.02, 0.98) if from_left else (0.98, 0.02)
        ax.annotate("", (stop, row + 0.25), (start, row), arrowprops={"arrowstyle": "->"})
        ax.text(0.5, row + 0.05, label, ha="center", va="bottom", fontsize=8)
        ax.text(-0.05, row, f"{t:.2f} s", ha="right", va="center", fontsize=7, color="gray")
    ax.set_ylim(end + 0.6, -0.6)
    ax.set_xlim(-0.3, 1.2)
    ax.axis("off")
    ax.set_title(title, pad=20)
    return ax


def shade_window(ax: Axes, start: float, seconds: float, label: str) -> Axes:
    """The liveness window on a timeline: ``seconds`` from ``start`` (the last datagram)."""
    ax.axvspan(start, start + seconds, color="tab:orange", alpha=0.15, label=label)
    ax.annotate("", (start + seconds, -0.45), (start, -0.45), arrowprops={"arrowstyle": "<->"})
    ax.text(
        start + seconds / 2,
        -0.4,
        f"{seconds:g} s without a datagram",
        ha="center",
        fontsize=8,
        color="tab:orange",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return ax


def winner(routes: Sequence[str], destination: str) -> str:
    """The longest prefix of ``routes`` that contains ``destination`` (the kernel's choice)."""
    address = IPv4Address(destination)
    matching = [IPv4Network(r) for r in routes if address in IPv4Network(r)]
    return str(max(matching, key=lambda n: n.prefixlen))


def draw_prefixes(
    routes: Sequence[str], destinations: Sequence[str], ax: Axes | None = None
) -> Axes:
    """The address space as a line: each route a bar over the addresses it covers, each
    destination a vertical line, labelled with the route that wins for it."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 1.2 + 0.55 * len(routes)))
    span = 2**32
    for y, route in enumerate(routes):
        net = IPv4Network(route)
        low, size = int(net.network_address) / span, max(net.num_addresses / span, 0.004)
        ax.barh(y, size, left=low, color=f"C{y}", alpha=0.7, edgecolor="black")
        ax.text(low + size + 0.005, y, route, va="center", fontsize=9)
    for i, dst in enumerate(destinations):
        x = int(IPv4Address(dst)) / span
        ax.axvline(x, color="black", ls="--", lw=1)
        ax.text(
            x + 0.005,
            len(routes) - 0.4 + 0.35 * i,
            f"{dst}: {winner(routes, dst)} wins",
            ha="left",
            fontsize=9,
        )
    ax.set_yticks([])
    ax.set_xticks(
        [i / 4 for i in range(5)],
        ["0.0.0.0", "64.0.0.0", "128.0.0.0", "192.0.0.0", "255.255.255.255"],
    )
    ax.set_xlim(0, 1.15)
    ax.set_ylim(-0.6, len(routes) + 0.5)
    ax.set_title("longest prefix wins: of the routes that cover a destination, the longest")
    return ax


DEVICE_READS = [
    ("TUN, IFF_NO_PI (tun0)", [("IPv4 header", 20), ("ICMP 8 + data 56", 64)]),
    (
        "TUN with packet info",
        [("tun_pi: flags 2, proto 2", 4), ("IPv4 header", 20), ("ICMP 8 + data 56", 64)],
    ),
    (
        "TAP, IFF_NO_PI (tap0)",
        [("Ethernet 14", 14), ("IPv4 header", 20), ("ICMP 8 + data 56", 64)],
    ),
]
"""Notebook 11: what one ``os.read`` of the device returns for the same ping, per kind."""


def draw_reads(
    rows: Sequence[tuple[str, Sequence[tuple[str, int]]]] = DEVICE_READS, ax: Axes | None = None
) -> Axes:
    """One bar per kind of device: the bytes one read returns for the same 84-byte ping, part
    by part, so that what the kernel adds in front (nothing, tun_pi, Ethernet) stands out."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.8 + 0.7 * len(rows)))
    colours = {"IPv4 header": "#cfe8cf", "ICMP 8 + data 56": "#e8f0fa"}
    for y, (_, parts) in enumerate(reversed(rows)):
        x = 0
        for label, size in parts:
            ax.barh(y, size, left=x, color=colours.get(label, "#f3d3a3"), edgecolor="black")
            if size >= 10:
                ax.text(x + size / 2, y, label, ha="center", va="center", fontsize=8)
            else:  # too narrow to hold its label: above the bar
                ax.text(x, y + 0.5, label, ha="left", va="center", fontsize=8)
            x += size
        ax.text(x + 1, y, f"{x} bytes", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
    ax.set_xlim(0, 120)
    ax.set_xlabel("bytes returned by one os.read() for the same ping (84-byte IPv4 packet)")
    ax.set_title("what the kernel hands the process: the same packet through three devices")
    return ax
