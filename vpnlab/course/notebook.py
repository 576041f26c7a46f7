"""The course's helpers: run the lab from a notebook, check exercises, draw the figures.

The notebooks in ``notebooks/`` import this module as ``from vpnlab import course``::

    lab = course.CourseLab("01_tun")      # prefix from $VPNLAB_PREFIX (default "nb-")
    lab.up(vpn=False)                     # `vpnlab lab up --prefix nb- --no-vpn`
    lab.sh("r1", "ip route")              # `ip netns exec nb-r1 ip route`, printed
    lab.record("stack", "raw:ip:icmp")    # key results, for the tests (tests/notebooks)
    course.check("1.1", answer, expected=40, hint="...")
    lab.down()

Everything that touches the lab runs as a subprocess (``vpnlab lab ...``, ``ip netns exec``):
pyroute2's and pyshark's synchronous APIs fail inside Jupyter's running event loop. The one
exception is :func:`netns`, which moves only the notebook's main thread into a lab node for a
``with`` block (``setns(2)``), so that a TUN device can be opened there from the notebook itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vpnlab.core.errors import VpnlabError

DEFAULT_PREFIX = "nb-"
RESULTS_ENV = "VPNLAB_COURSE_RESULTS"
"""If set: a folder where each notebook writes ``<name>.json`` with its key results."""
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 60.0


class CourseError(VpnlabError):
    """A lab command run from a notebook failed."""


class Output(str):
    """A command's output: a ``str`` that Jupyter does not echo (it was printed already)."""

    def _ipython_display_(self) -> None:
        pass


def prefix() -> str:
    """The lab prefix of the course: ``$VPNLAB_PREFIX`` or ``nb-``."""
    return os.environ.get("VPNLAB_PREFIX") or DEFAULT_PREFIX


# --- running things in the lab ------------------------------------------------------------------


def _argv(cmd: str | Sequence[str]) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


class CourseLab:
    """One notebook's lab: its prefix, its commands, its recorded results.

    Args:
        name: the notebook's name (``00_setup``), used for the results file.
        lab_prefix: namespace prefix; default :func:`prefix`.
    """

    def __init__(self, name: str, lab_prefix: str | None = None) -> None:
        self.name = name
        self.prefix = lab_prefix or prefix()
        self.results: dict[str, Any] = {"prefix": self.prefix}
        folder = os.environ.get(RESULTS_ENV)
        self.results_file = Path(folder) / f"{name}.json" if folder else None

    # lab commands
    def vpnlab(self, *args: str, check: bool = True, show: bool = True) -> str:
        """``vpnlab ARGS --prefix P`` (a lab subcommand), its output printed and returned."""
        argv = [sys.executable, "-m", "vpnlab", *args, "--prefix", self.prefix]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        out = (done.stdout + done.stderr).rstrip()
        if show and out:
            print(out)
        if check and done.returncode != 0:
            raise CourseError(f"vpnlab {' '.join(args)} failed: {out.splitlines()[-1:]}")
        return Output(out)

    def up(self, vpn: bool = True, cipher: str | None = None, nat: bool = True,
           site_to_site: bool = False, clients: int = 1, mode: str = "tun") -> dict[str, Any]:
        """Build the lab (replacing an older one of this prefix); returns its status.

        ``nat=False``: ``--nat off``; ``site_to_site``: h1 and h2 behind the gateways;
        ``clients``: more VPN clients (r1, r3, ...); ``mode="tap"``: Ethernet frames on tap0.
        """
        args = ["lab", "up"] + ([] if vpn else ["--no-vpn"])
        args += ["--cipher", cipher] if cipher else []
        args += [] if nat else ["--nat", "off"]
        args += ["--site-to-site"] if site_to_site else []
        args += ["--clients", str(clients)] if clients != 1 else []
        args += ["--mode", mode] if mode != "tun" else []
        self.vpnlab(*args, show=False)
        return self.status()

    def down(self) -> str:
        """CleanUp: remove the lab (namespaces, daemons, state)."""
        return self.vpnlab("lab", "down")

    def status(self) -> dict[str, Any]:
        """``vpnlab lab status --json`` as a dict."""
        return json.loads(self.vpnlab("lab", "status", "--json", show=False))

    def start_vpn(self, cipher: str | None = None, server_args: Sequence[str] = ()) -> str:
        """ServerConnection + ClientConnection: (re)start the VPN daemons.

        ``server_args``: extra server options (``["--isolate-clients"]``); those go through
        ``vpnlab.lab.start_vpn`` in a subprocess, as the CLI has no option for them.
        """
        if not server_args:
            return self.vpnlab("lab", "start-vpn", *(["--cipher", cipher] if cipher else []),
                               show=False)
        code = ("import sys; from vpnlab import lab; "
                "lab.start_vpn(sys.argv[1], sys.argv[2] or None, server_args=sys.argv[3:])")
        argv = [sys.executable, "-c", code, self.prefix, cipher or "", *server_args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        out = (done.stdout + done.stderr).rstrip()
        if done.returncode != 0:
            raise CourseError(f"start_vpn {' '.join(server_args)} failed: {out.splitlines()[-1:]}")
        return Output(out)

    def stop_vpn(self) -> str:
        return self.vpnlab("lab", "stop-vpn", show=False)

    def ns(self, node: str) -> str:
        """The namespace of ``node``: ``nb-r1``."""
        return f"{self.prefix}{node}"

    def run(self, node: str, cmd: str | Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S,
            check: bool = False) -> subprocess.CompletedProcess:
        """``ip netns exec {prefix}{node} CMD``; returns the finished process (text output)."""
        argv = ["ip", "netns", "exec", self.ns(node), *_argv(cmd)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise CourseError(f"{node}: {' '.join(_argv(cmd))}: exit {done.returncode}: "
                              f"{(done.stderr or done.stdout).strip()}")
        return done

    def sh(self, node: str, cmd: str | Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S,
           show: bool = True) -> str:
        """Run ``cmd`` in ``node``, print ``node$ cmd`` and its output, return the output."""
        done = self.run(node, cmd, timeout_s)
        out = (done.stdout + done.stderr).rstrip()
        if show:
            text = cmd if isinstance(cmd, str) else shlex.join(cmd)
            print(f"{node}$ {text}" + (f"\n{out}" if out else ""))
        return Output(out)

    def popen(self, node: str, cmd: str | Sequence[str]) -> subprocess.Popen:
        """Start ``cmd`` in ``node`` in the background (text pipes); stop it yourself."""
        argv = ["ip", "netns", "exec", self.ns(node), *_argv(cmd)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    def tap_arp_experiment(self, node: str = "web", name: str = "tap9") -> dict[str, str]:
        """The classic TAP experiment in ``node`` (``python -m vpnlab.tap``, see ``tap.py``):
        the kernel's ARP request read from a hand-made TAP device, the scapy-crafted reply,
        and the ``ip neigh`` line that proves the kernel believed it."""
        done = self.run(node, [sys.executable, "-m", "vpnlab.tap", "--name", name], check=True)
        return json.loads(done.stdout)

    def whoami(self, node: str = "r1", url: str = "http://203.0.113.10/") -> str:
        """The who-am-I answer seen from ``node`` (curl, 3 s at most)."""
        return self.run(node, ["curl", "-s", "-m", "3", url]).stdout.strip()

    def daemon_pid(self, name: str) -> int | None:
        """PID of a lab daemon (``server``, ``client-r1``, ``whoami``) if it is running."""
        info = self.status()["daemons"].get(name) or {}
        return info.get("pid") if info.get("alive") else None

    def log(self, name: str) -> str:
        """The log of a lab daemon (``server``, ``client-r1``)."""
        path = self.state_dir() / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def state_dir(self) -> Path:
        from vpnlab.lab.state import state_dir

        return state_dir(self.prefix)

    # results for the tests
    def record(self, key: str, value: Any) -> None:
        """Keep a key result of the notebook (written to $VPNLAB_COURSE_RESULTS/<name>.json)."""
        self.results[key] = value
        if self.results_file is not None:
            self.results_file.parent.mkdir(parents=True, exist_ok=True)
            self.results_file.write_text(json.dumps(self.results, indent=2, default=str))


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passed; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


# --- entering a namespace from the notebook itself ----------------------------------------------


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def netns(namespace: str) -> Iterator[None]:
    """Run the ``with`` block's code (this thread only) inside the named network namespace.

    Sockets and TUN devices opened in the block belong to ``namespace`` and keep working
    after it; the thread always returns to its own namespace, even if the block raises.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise CourseError(f"no namespace {namespace}: is the lab up?") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


# --- exercises ----------------------------------------------------------------------------------


def check(exercise: str, answer: Any, expected: Any = None, hint: str = "",
          test=None) -> None:
    """Autograder-style feedback for one exercise.

    ``answer`` still ``...`` (Ellipsis): says so (so "Run all" goes on). Otherwise compares
    with ``expected`` (or calls ``test(answer)``): prints a tick, or raises AssertionError
    with the hint.
    """
    if answer is Ellipsis:
        print(f"Exercise {exercise}: not answered yet (replace ... with your answer). {hint}")
        return
    ok = bool(test(answer)) if test is not None else _same(answer, expected)
    if not ok:
        raise AssertionError(f"Exercise {exercise}: not quite ({answer!r}). Hint: {hint}")
    print(f"Exercise {exercise}: correct \N{CHECK MARK} ({answer!r})")


def _same(answer: Any, expected: Any) -> bool:
    if isinstance(expected, float) or isinstance(answer, float):
        try:
            return abs(float(answer) - float(expected)) <= 1e-6 + 0.01 * abs(float(expected))
        except (TypeError, ValueError):
            return False
    if isinstance(expected, str) and isinstance(answer, str):
        return answer.strip().lower() == expected.strip().lower()
    return answer == expected


def hexdump(data: bytes, width: int = 16) -> str:
    """Bytes as offset, hex and ASCII columns (as ``xxd``)."""
    lines = []
    for i in range(0, len(data), width):
        chunk = data[i:i + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)


# --- figures ------------------------------------------------------------------------------------

_POS = {"r1": (0.0, 0.0), "isp": (4.0, 0.0), "r2": (8.0, 0.0), "web": (4.0, -3.0)}


def draw_topology(status: dict[str, Any], ax=None):
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
    colors = {"client": "#cfe8ff", "router": "#eeeeee", "server": "#ffe2c6", "web": "#d8f5d0"}
    for a, b, label in (("r1", "isp", "192.0.2.0/24"), ("isp", "r2", "198.51.100.0/24"),
                        ("isp", "web", "203.0.113.0/24")):
        if a in nodes and b in nodes:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            ax.plot([x1, x2], [y1, y2], color="black", lw=2, zorder=1)
            vertical = x1 == x2
            ax.text((x1 + x2) / 2 + (0.15 if vertical else 0), (y1 + y2) / 2 + 0.25, label,
                    ha="left" if vertical else "center", fontsize=9, color="dimgray")
    tun = {n: i for n, node in nodes.items() for i in node.get("interfaces", {}) if i == "tun0"}
    if "r1" in tun and "r2" in tun:
        xs = [pos["r1"][0], 4.0, pos["r2"][0]]
        ax.plot(xs, [0.6, 1.6, 0.6], color="tab:red", lw=2, ls="--", zorder=1)
        ax.text(4.0, 1.75, "VPN tunnel 10.8.0.0/24 over UDP 4500", ha="center",
                color="tab:red", fontsize=10)
    for name, node in nodes.items():
        x, y = pos[name]
        lines = [f"{name}  [{node.get('role', '')}]", node.get("namespace", "")]
        for ifname, itf in node.get("interfaces", {}).items():
            if ifname != "lo":
                lines.append(f"{ifname} {' '.join(itf.get('addresses', [])) or '-'}")
        if daemons.get(name):
            lines.append("runs: " + ", ".join(sorted(daemons[name])))
        face = colors.get(node.get("role", ""), "white") if node.get("exists") else "#ffcccc"
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=9, zorder=2,
                bbox={"boxstyle": "round,pad=0.5", "fc": face, "ec": "black"})
    ax.set_xlim(-2.2, 10.2)
    ax.set_ylim(-4.2, 2.3)
    ax.axis("off")
    ax.set_title(f"vpnlab topology (prefix {status['prefix']}, cipher {status.get('cipher')})")
    return ax


def draw_timeline(events: Sequence[tuple[float, str, str]], lanes: Sequence[str],
                  title: str = "", marks: Sequence[tuple[float, str]] = (), ax=None):
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


def draw_layers(packet: Any, ax=None, title: str = ""):
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
        ax.text(start + 1, y, f"{layer.name}  bytes {start}-{start + layer.size - 1}"
                f" ({layer.size} B)", va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("byte offset in the frame")
    ax.set_xlim(0, max(packet.length, 1) * 1.02)
    ax.set_title(title or f"packet {packet.number}: {packet.stack} ({packet.length} B)")
    return ax
