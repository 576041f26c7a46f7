"""The course's helpers: run the lab from a notebook, check exercises (figures: ``figures.py``).

The notebooks in ``notebooks/`` import this module as ``from vpnlab import course``::

    lab = course.CourseLab("01_tun")      # prefix: the notebook's own, nb01- ($VPNLAB_PREFIX wins)
    lab.up(vpn=False)                     # `vpnlab lab up --prefix nb01- --no-vpn`
    lab.sh("r1", "ip route")              # `ip netns exec nb01-r1 ip route`, printed
    lab.record("stack", "raw:ip:icmp")    # key results, for the tests (tests/notebooks)
    course.predict("7.2", 0)              # a guess, recorded before the demonstration
    course.check_answer("0.2", answer_0_2, lab)  # practice feedback, recorded (progress.py)
    course.grade("0.2", answer_0_2, lab)  # nbgrader's grade cell: what this lab shows now
    course.explain("6.1", "because ...")  # a written explanation, for the instructor
    lab.down()

The figures (``draw_topology``, ``draw_timeline``, ``draw_layers``) are in ``figures.py``.

Each notebook owns its lab: its prefix comes from its number (``nb00-`` for notebook 00), so
opening a second notebook builds a second lab beside the first instead of tearing it down
(a class hub limits how many a student has up at once: ``VPNLAB_MAX_LABS``, ``lab up`` refuses
past it in one line). ``$VPNLAB_PREFIX``, where set (the tests), names every notebook's lab.

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
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vpnlab.core.errors import VpnlabError
from vpnlab.core.reasons import State
from vpnlab.course.grading import check_answer, explain, grade, grade_facts, observe, predict
from vpnlab.lab.nodes import exec_in, popen_in, python_argv, wait_for
from vpnlab.lab.state import drawn_values, namespace, state_dir

__all__ = [
    "CourseError",
    "CourseLab",
    "Output",
    "check_answer",
    "explain",
    "grade",
    "grade_facts",
    "hexdump",
    "netns",
    "observe",
    "predict",
    "prefix",
    "wait_for",
]

DEFAULT_PREFIX = "nb-"
RESULTS_ENV = "VPNLAB_COURSE_RESULTS"
"""If set: a folder where each notebook writes ``<name>.json`` with its key results."""
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 60.0
UP_TIMEOUT_S = 600.0
"""``lab up`` waits for its daemons as long as they make progress (``vpnlab/lab/vpn.py``); this
is only the bound on the whole command, for a machine a whole class shares."""


class CourseError(VpnlabError):
    """A lab command run from a notebook failed."""


class Output(str):
    """A command's output: a ``str`` that Jupyter does not echo (it was printed already)."""

    def _ipython_display_(self) -> None:
        pass


def prefix(notebook: str = "") -> str:
    """The lab prefix of a notebook: ``$VPNLAB_PREFIX`` if set, else the notebook's own.

    ``00_setup_topology`` -> ``nb00-``; a name without a number -> ``nb`` and its letters and
    digits (``hub`` -> ``nbhub-``); no name -> ``nb-``.
    """
    if os.environ.get("VPNLAB_PREFIX"):
        return os.environ["VPNLAB_PREFIX"]
    number = re.match(r"\d+", notebook)
    own = number.group() if number else re.sub(r"[^a-z0-9]", "", notebook.lower())[:12]
    return f"{DEFAULT_PREFIX[:-1]}{own}-"


# --- running things in the lab ------------------------------------------------------------------


def _argv(cmd: str | Sequence[str]) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


class CourseLab:
    """One notebook's lab: its prefix, its commands, its recorded results.

    Args:
        name: the notebook's name (``00_setup``), used for the results file.
        lab_prefix: namespace prefix; default :func:`prefix` of ``name`` (``nb00-``).
    """

    def __init__(self, name: str, lab_prefix: str | None = None) -> None:
        self.name = name
        self.prefix = lab_prefix or prefix(name)
        self.results: dict[str, object] = {"prefix": self.prefix}
        folder = os.environ.get(RESULTS_ENV)
        self.results_file = Path(folder) / f"{name}.json" if folder else None

    # lab commands
    def vpnlab(
        self,
        *args: str,
        check: bool = True,
        show: bool = True,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> str:
        """``vpnlab ARGS --prefix P`` (a lab subcommand), its output printed and returned.

        A failure raises CourseError with the command's whole output (its stderr last: the
        error line, the node, the daemon's log), which is what the notebook shows under the cell.
        """
        argv = python_argv("-m", "vpnlab", *args, "--prefix", self.prefix)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            out = "".join(
                part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                for part in (exc.stdout, exc.stderr)
            )
            raise CourseError(
                f"vpnlab {' '.join(args)} did not finish in {timeout_s:.0f} s:\n{out}".rstrip()
            ) from None
        out = (done.stdout.rstrip() + "\n" + done.stderr.rstrip()).strip()
        if show and out:
            print(out)
        if check and done.returncode != 0:
            raise CourseError(f"vpnlab {' '.join(args)} failed (exit {done.returncode}):\n{out}")
        return Output(out)

    def up(
        self,
        vpn: bool = True,
        cipher: str | None = None,
        nat: bool = True,
        site_to_site: bool = False,
        clients: int = 1,
        mode: str = "tun",
    ) -> dict[str, Any]:
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
        out = self.vpnlab(*args, "--json", show=False, timeout_s=UP_TIMEOUT_S)
        # as `lab status --json`
        status: dict[str, Any] = json.JSONDecoder().raw_decode(out, out.index("{"))[0]
        return status

    def down(self) -> str:
        """CleanUp: remove the lab (namespaces, daemons, state)."""
        return self.vpnlab("lab", "down")

    def status(self) -> dict[str, Any]:
        """``vpnlab lab status --json`` as a dict."""
        status: dict[str, Any] = json.loads(self.vpnlab("lab", "status", "--json", show=False))
        return status

    def start_vpn(
        self,
        cipher: str | None = None,
        server_args: Sequence[str] = (),
        client_args: Sequence[str] = (),
    ) -> str:
        """ServerConnection + ClientConnection: (re)start the VPN daemons.

        ``server_args``, ``client_args``: extra daemon options (``["--isolate-clients"]``,
        ``["--rekey-after", "10"]``); those go through ``vpnlab.lab.start_vpn`` in a
        subprocess, as the CLI has no option for them.
        """
        if not server_args and not client_args:
            return self.vpnlab(
                "lab", "start-vpn", *(["--cipher", cipher] if cipher else []), show=False
            )
        code = (
            "import json, sys; from vpnlab import lab; s, c = json.loads(sys.argv[3]); "
            "lab.start_vpn(sys.argv[1], sys.argv[2] or None, server_args=s, client_args=c)"
        )
        extra = json.dumps([list(server_args), list(client_args)])
        argv = python_argv("-c", code, self.prefix, cipher or "", extra)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        out = (done.stdout + done.stderr).rstrip()
        if done.returncode != 0:
            raise CourseError(f"start_vpn {extra} failed: {out.splitlines()[-1:]}")
        return Output(out)

    def restart_client(self, node: str = "r1") -> None:
        """ClientConnection again: start ``node``'s client with the options it had (the server
        keeps running, SEED task 6); returns once its status file says connected."""
        code = (
            "import sys; from vpnlab.lab.build import start_daemon; "
            "from vpnlab.lab.state import record_of; p, node = sys.argv[1:]; r = record_of(p); "
            "name = 'client-' + node; start_daemon(p, r, name, node, r.daemons[name].argv)"
        )
        status = self.state_dir() / f"client-{node}.json"
        status.unlink(missing_ok=True)  # the old client's last word
        argv = python_argv("-c", code, self.prefix, node)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        if done.returncode != 0:
            raise CourseError(f"restart client-{node}: {(done.stderr or done.stdout).strip()}")

        def connected() -> bool:
            try:
                fields: dict[str, object] = json.loads(status.read_text())
                return fields.get("state") == State.CONNECTED
            except (OSError, ValueError):
                return False

        if not wait_for(connected, 10, 0.1):
            raise CourseError(f"client-{node} not connected 10 s after its restart")

    def stop_vpn(self) -> str:
        return self.vpnlab("lab", "stop-vpn", show=False)

    def ns(self, node: str) -> str:
        """The namespace of ``node``: ``nb00-r1``."""
        return namespace(self.prefix, node)

    def run(
        self,
        node: str,
        cmd: str | Sequence[str],
        timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``ip netns exec {prefix}{node} CMD``; returns the finished process (text output)."""
        done = exec_in(
            self.prefix, node, _argv(cmd), capture_output=True, text=True, timeout=timeout_s
        )
        if check and done.returncode != 0:
            raise CourseError(
                f"{node}: {' '.join(_argv(cmd))}: exit {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    def exec_in(
        self, node: str, argv: list[str], timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``, quietly (``grading.LabView``: what a check reads)."""
        return exec_in(self.prefix, node, argv, capture_output=True, text=True, timeout=timeout)

    def drawn(self) -> dict[str, object]:
        """The values drawn for this lab at ``lab up`` (``grading.LabView``)."""
        return drawn_values(self.prefix)

    def sh(
        self,
        node: str,
        cmd: str | Sequence[str],
        timeout_s: float = COMMAND_TIMEOUT_S,
        show: bool = True,
    ) -> str:
        """Run ``cmd`` in ``node``, print ``node$ cmd`` and its output, return the output."""
        done = self.run(node, cmd, timeout_s)
        out = (done.stdout + done.stderr).rstrip()
        if show:
            text = cmd if isinstance(cmd, str) else shlex.join(cmd)
            print(f"{node}$ {text}" + (f"\n{out}" if out else ""))
        return Output(out)

    def popen(self, node: str, cmd: str | Sequence[str]) -> subprocess.Popen[str]:
        """Start ``cmd`` in ``node`` in the background (text pipes); stop it yourself."""
        return popen_in(
            self.prefix,
            node,
            _argv(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def tap_arp_experiment(self, node: str = "web", name: str = "tap9") -> dict[str, str]:
        """The classic TAP experiment in ``node`` (``vpnlab arp-experiment``, see ``arp.py``):
        the kernel's ARP request read from a hand-made TAP device, the scapy-crafted reply,
        and the ``ip neigh`` line that proves the kernel believed it."""
        argv = python_argv("-m", "vpnlab", "arp-experiment", "--name", name)
        done = self.run(node, argv, check=True)
        experiment: dict[str, str] = json.loads(done.stdout)
        return experiment

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
        return state_dir(self.prefix)

    # results for the tests
    def record(self, key: str, value: object) -> None:
        """Keep a key result of the notebook (written to $VPNLAB_COURSE_RESULTS/<name>.json)."""
        self.results[key] = value
        if self.results_file is not None:
            self.results_file.parent.mkdir(parents=True, exist_ok=True)
            self.results_file.write_text(json.dumps(self.results, indent=2, default=str))


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


def hexdump(data: bytes, width: int = 16) -> str:
    """Bytes as offset, hex and ASCII columns (as ``xxd``)."""
    lines = []
    for i in range(0, len(data), width):
        chunk = data[i : i + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)
