"""The captures: the notes' ``[eth:ip:udp:udpencap:esp]`` and ``[raw:ip:tcp:ftp]``, made, decoded.

Capturing runs dumpcap inside a lab node (pyshark's LiveCapture cannot see another network
namespace), bounded by a packet count, a duration and a file size::

    with start_capture("vpnlab-", "r2", "eth0", "eth.pcapng", count=50, duration_s=10):
        ...                                   # traffic; dumpcap is already capturing here
    stacks("eth.pcapng")                      # ['eth:ethertype:ip:udp:udpencap:esp', ...]

Reading them back: tshark in a subprocess (:func:`stacks`, :func:`fields`) is fast and works
anywhere, Jupyter included; ``decode.py`` has every layer's and field's bytes and pyshark.
ESP decrypts with ``esp_sa`` rows (``keys=``); ``dissector=True`` loads our dissector
(``vpnlab.lua``: Hello, Welcome and control lines as ``vpnlab``), as ``vpnlab capture decode`` does.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypedDict

from vpnlab.core.errors import LabError, VpnlabError
from vpnlab.lab.nodes import namespace_of, popen_in
from vpnlab.lab.state import state_dir
from vpnlab.wire.esp import esp_sa_rows, load_static_keys

MAX_PACKETS = 10_000
MAX_DURATION_S = 300.0
MAX_FILE_KB = 20_000
READY_TIMEOUT_S = 5.0
SETTLE_S = 0.3
"""After the traffic, how long a capture keeps running so the last replies are in the file."""
LOG_MAX_BYTES = 65536
"""What is read of dumpcap's stderr: its greeting, its statistics or its error (a few lines)."""
TSHARK_TIMEOUT_S = 60.0
EXTERNAL_STACK = "eth:ethertype:ip:udp:udpencap:esp"
"""The notes' external-interface stack, as tshark names it (``ethertype`` included)."""
EXTERNAL_STACK6 = "eth:ethertype:ipv6:udp:udpencap:esp"
"""The same over IPv6 (a server reached at 2001:db8:2::2): only the outer header changes."""
TUN_STACK = "raw:ip:tcp:ftp"
LINK_CHATTER = frozenset(
    {"eth:ethertype:arp", "eth:ethertype:ipv6:icmpv6", "eth:ethertype:ipv6:ipv6.hopopts:icmpv6"}
)
"""What the kernel says on an Ethernet link by itself: ARP (IPv4's neighbour discovery) and,
with IPv6 on, ICMPv6 neighbour and router discovery and MLD reports (these behind a
hop-by-hop header). ``CHATTER_FILTER`` keeps them out of a capture."""
CHATTER_FILTER = "not arp and not icmp6 and not ip6 proto 0"
"""A capture filter without :data:`LINK_CHATTER` (``ip6 proto 0``: the hop-by-hop header of
MLD); an ICMPv6 Packet Too Big on the outer path is filtered out with it."""
DISSECTOR = Path(__file__).with_name("vpnlab.lua")
"""Our tshark dissector (package data): Hello, Welcome and the plain control lines as ``vpnlab``
instead of a bogus ``udpencap:isakmp``; ESP and everything else decode as before."""

TSHARK_USER = 65534
"""nobody (and nogroup), as whom tshark reads captures when we are root (:func:`run_tshark`)."""
TSHARK_TRUE = frozenset({"1", "True"})
"""How tshark writes a true boolean field (``esp.icv_good``): 1 up to 4.0, True from 4.2."""

Keys = str | Path | list[str] | tuple[str, ...] | None
"""esp_sa rows: a file (rows, one a line, or a static-key JSON file), or the rows themselves."""


class CaptureError(VpnlabError):
    """A capture could not be started or stopped, or tshark could not read a file."""


# --- capturing ----------------------------------------------------------------------------------


def _namespace(prefix: str, node: str) -> str:
    try:
        return namespace_of(prefix, node)
    except LabError as exc:  # the same line, as this module's error
        raise CaptureError(str(exc)) from None


def _start_dumpcap(
    prefix: str, node: str, argv: list[str], path: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """dumpcap in the node writing to its stdout, which is ``path``, opened here; its stderr to
    a log without a name (nothing is left of it, whatever ends the capture or us); ``path`` is
    removed again if dumpcap cannot start.

    dumpcap run as root keeps only the capabilities to capture (not CAP_DAC_OVERRIDE), so it
    cannot open a file in a folder that root may not enter without them: a checkout in a
    student's 0700 or 0750 home, with ``sudo``. This process can, so it opens the file."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (the Capture owns it: closed by _finish)
    opened = False
    try:
        with path.open("wb") as out:
            opened = True
            proc = popen_in(
                prefix,
                node,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
    except (LabError, OSError) as exc:
        log.close()
        if opened:  # never what could not be opened: a folder, say
            path.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise CaptureError(f"cannot capture into {path}: {reason}") from None
    return proc, log


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """CleanUp without a gap: from dumpcap's start until a :class:`Capture` holds it, a Ctrl-C
    or SIGTERM is held back, then sent again on the way out (to the handlers put back), so it
    lands where the capture is stopped with it. Without this, a stop landing in between (a
    loaded machine may not run us for a while after the fork) left dumpcap running until its
    own limits ended it. Only the main thread sets handlers; no signal reaches another."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: set outside Python (C), not ours
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for stop in dict.fromkeys(held):
            os.kill(os.getpid(), stop)


def _read(log: IO[bytes]) -> str:
    """What dumpcap wrote to ``log`` so far (read at offset 0 without moving the offset it
    writes at: the file's offset is shared with dumpcap's stderr)."""
    return os.pread(log.fileno(), LOG_MAX_BYTES, 0).decode(errors="replace")


def _last_line(text: str) -> str:
    """The error in a tool's stderr, on one line (without its greetings)."""
    noise = ("Running as user", "Capturing on", "File: ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(noise)]
    return " ".join(lines[-2:]) if lines else "no output"


@dataclass
class Capture:
    """A running dumpcap inside a lab node; as a context manager it stops on exit."""

    path: Path
    namespace: str
    interface: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    """dumpcap's stderr (closed once the capture is finished)."""

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float | None = None) -> Path:
        """Wait until dumpcap stops by itself (count or duration reached); returns the file.

        Raises:
            CaptureError: still running after ``timeout_s`` (it is stopped then).
        """
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(settle_s=0)
            raise CaptureError(f"capture still running after {timeout_s} s") from None
        return self._finish()

    def stop(self, settle_s: float = SETTLE_S) -> Path:
        """CleanUp: let late packets in for ``settle_s``, then SIGINT dumpcap (closes the file)."""
        if self.running:
            time.sleep(settle_s)
        if self.running:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        return self._finish()

    def _finish(self) -> Path:
        text = "" if self.log.closed else _read(self.log)
        self.log.close()
        if not self.path.exists() or self.path.stat().st_size == 0:
            raise CaptureError(f"dumpcap wrote nothing: {_last_line(text)}")
        with contextlib.suppress(OSError):
            self.path.chmod(0o644)  # whatever the umask: a notebook may not run as root
        return self.path

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_capture(
    prefix: str,
    node: str,
    interface: str,
    path: str | Path,
    count: int = 100,
    duration_s: float = 10.0,
    capture_filter: str | None = None,
) -> Capture:
    """The captures: start dumpcap on ``interface`` of ``{prefix}{node}``, writing ``path``.

    Returns once dumpcap really captures (it printed ``File:``, which it does after opening the
    interface; its ``Capturing on`` comes earlier). dumpcap stops by itself after ``count``
    packets or ``duration_s`` seconds, whichever comes first.

    Raises:
        CaptureError: no such namespace or interface, limits out of range, dumpcap failed.
    """
    if not 1 <= count <= MAX_PACKETS:
        raise CaptureError(f"count must be 1..{MAX_PACKETS}, not {count}")
    if not 1 <= duration_s <= MAX_DURATION_S:
        raise CaptureError(f"duration must be 1..{MAX_DURATION_S:.0f} s, not {duration_s}")
    ns = _namespace(prefix, node)
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["dumpcap", "-q", "-i", interface, "-w", "-"]  # to path: _start_dumpcap
    argv += ["-c", str(count), "-a", f"duration:{round(duration_s)}"]
    argv += ["-a", f"filesize:{MAX_FILE_KB}"] + (["-f", capture_filter] if capture_filter else [])
    cap: Capture | None = None
    try:
        with _stops_held():
            proc, log = _start_dumpcap(prefix, node, argv, path)
            cap = Capture(path, ns, interface, proc, log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            exited = not cap.running  # read the log after this: it may say File: and then exit
            text = _read(cap.log)
            if re.search(r"^File: ", text, re.M):
                return cap
            if exited:
                cap.log.close()
                path.unlink(missing_ok=True)
                raise CaptureError(f"dumpcap on {ns} {interface}: {_last_line(text)}")
            time.sleep(0.02)
    except KeyboardInterrupt:  # CleanUp: stopped while starting (Ctrl-C, SIGTERM): dumpcap too
        if cap is not None:
            with contextlib.suppress(CaptureError):
                cap.stop(settle_s=0)
        raise
    with contextlib.suppress(CaptureError):
        cap.stop(settle_s=0)
    path.unlink(missing_ok=True)
    raise CaptureError(f"dumpcap on {ns} {interface} not capturing after {READY_TIMEOUT_S} s")


# --- keys and tshark ----------------------------------------------------------------------------


def load_keys(keys: Keys) -> list[str]:
    """esp_sa rows from ``keys``: rows, a file of rows (``#`` comments), or a static-key JSON."""
    if keys is None:
        return []
    if isinstance(keys, (list, tuple)):
        return [str(row) for row in keys]
    try:
        text = Path(keys).read_text()
    except OSError as exc:
        raise CaptureError(f"cannot read keys {keys}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CaptureError(f"cannot read keys {keys}: not text") from None
    if text.lstrip().startswith("{"):
        return esp_sa_rows(load_static_keys(text).server())
    rows = [line.strip() for line in text.splitlines()]
    return [row for row in rows if row and not row.startswith("#")]


def lab_keys(prefix: str) -> list[str]:
    """The esp_sa rows of a lab's live ESP sessions (the server's export; [] if none)."""
    path = state_dir(prefix) / "esp_sa"
    return load_keys(path) if path.exists() else []


def tshark_options(keys: Keys = None) -> list[str]:
    """tshark ``-o`` options that decrypt ESP and check its ICV with ``keys`` (none: [])."""
    opts: list[str] = []
    rows = load_keys(keys)
    if not rows:
        return opts
    for pref in ("esp.enable_encryption_decode:TRUE", "esp.enable_authentication_check:TRUE"):
        opts += ["-o", pref]
    for row in rows:
        opts += ["-o", f"uat:esp_sa:{row}"]
    return opts


def _unprivileged() -> bool:
    """Whether tshark must leave root to us: we are root, and :data:`TSHARK_USER` exists in this
    user namespace (a rootless lab's holder maps one user only)."""
    if os.geteuid() != 0:
        return False
    try:
        uid_map = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        return False
    for line in uid_map:  # "inside outside count" a range
        inside, _, count = (int(n) for n in line.split())
        if inside <= TSHARK_USER < inside + count:
            return True
    return False


class _TsharkRun(TypedDict, total=False):
    """:func:`subprocess.run`'s arguments for tshark (:func:`_tshark_argv`): none, or as root
    those that run it as :data:`TSHARK_USER`, the capture on its stdin, in a folder of its own."""

    stdin: IO[bytes]
    cwd: str
    env: dict[str, str]
    user: int
    group: int
    extra_groups: list[int]


@contextlib.contextmanager
def _tshark_argv(path: Path, dissector: bool) -> Iterator[tuple[list[str], _TsharkRun]]:
    """tshark's argv up to the options, and how to run it (:func:`subprocess.run` arguments).

    As root, tshark runs as :data:`TSHARK_USER`, reading the capture from its stdin and our
    dissector from a copy in a folder of its own (a checkout in a 0700 home is closed to it):
    Wireshark 4.2 and later run no Lua script given on the command line as root (4.0 did, as
    Debian 12's /etc/wireshark/init.lua allowed), and dissecting packets unprivileged is what
    Wireshark asks of everyone (its wiki, CaptureSetup/CapturePrivileges).
    """
    if not _unprivileged():
        script = ["-X", f"lua_script:{DISSECTOR}"] if dissector else []
        yield ["tshark", "-n", "-r", str(path), *script], {}
        return
    with tempfile.TemporaryDirectory(prefix="vpnlab-tshark-") as folder, path.open("rb") as data:
        os.chmod(folder, 0o755)
        script = []
        if dissector:
            copy = Path(folder) / DISSECTOR.name
            copy.write_bytes(DISSECTOR.read_bytes())
            copy.chmod(0o644)
            script = ["-X", f"lua_script:{copy}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder, "LANG": "C.UTF-8"}
        as_nobody: _TsharkRun = {"user": TSHARK_USER, "group": TSHARK_USER, "extra_groups": []}
        yield (
            ["tshark", "-n", "-r", "-", *script],
            {"stdin": data, "cwd": folder, "env": env, **as_nobody},
        )


def run_tshark(
    path: str | Path, args: list[str], keys: Keys = None, dissector: bool = False
) -> str:
    """tshark on ``path``: its stdout; ``dissector`` loads ours (tshark goes on without a script
    it cannot load, only saying so on stderr: that is an error here)."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"no capture file {path}")
    if shutil.which("tshark") is None:
        raise CaptureError("tshark not found: apt-get install tshark")
    if dissector and not DISSECTOR.is_file():
        raise CaptureError(f"the vpnlab dissector is missing: {DISSECTOR}")
    try:
        with _tshark_argv(path, dissector) as (head, run):
            argv = [*head, *tshark_options(keys), *args]
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, **run
            )
    except FileNotFoundError:  # as root the capture is opened here, not by tshark
        raise CaptureError(f"no capture file {path}") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"tshark took over {TSHARK_TIMEOUT_S} s on {path}") from None
    if done.returncode != 0:
        raise CaptureError(f"tshark on {path}: {_last_line(done.stderr)}")
    said = [line.strip() for line in done.stderr.splitlines() if DISSECTOR.name in line]
    if dissector and said:  # a syntax error names the file, shortened: "...ments/vpnlab.lua:2"
        raise CaptureError(f"tshark could not load {DISSECTOR}: {said[0]}")
    return done.stdout


def fields(
    path: str | Path,
    names: Sequence[str],
    keys: Keys = None,
    display_filter: str | None = None,
    dissector: bool = False,
) -> list[list[str]]:
    """``tshark -T fields``: per packet, the values of ``names`` (repeats joined by ',')."""
    args = ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    args += [arg for name in names for arg in ("-e", name)]
    args += ["-Y", display_filter] if display_filter else []
    return [line.split("\t") for line in run_tshark(path, args, keys, dissector).splitlines()]


def stacks(
    path: str | Path, keys: Keys = None, display_filter: str | None = None, dissector: bool = False
) -> list[str]:
    """The captures: each packet's protocol stack (``frame.protocols``), in order."""
    return [row[0] for row in fields(path, ["frame.protocols"], keys, display_filter, dissector)]


def stack_counts(path: str | Path, keys: Keys = None) -> dict[str, int]:
    """How many packets have each stack, in order of first appearance."""
    return dict(collections.Counter(stacks(path, keys)))
