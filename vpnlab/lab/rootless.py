"""Rootless labs: the root path, run unchanged inside a holder that an ordinary user owns.

A *holder* is one process per lab (``unshare --user --map-root-user --mount --pid --fork``,
util-linux): the user is root in a user namespace of their own, with a mount namespace whose
``/run`` is a fresh tmpfs (so ``/run/netns`` exists and the named-namespace code of
``build.py``, ``nodes.py`` and pyroute2 works as it does for root) and a PID namespace of which
the holder is PID 1. Every vpnlab command a user gives (``vpnlab lab ...``, ``vpnlab capture``)
enters the holder of its prefix with ``nsenter -U -m -p`` and runs the root path there; the
experiments that build labs of their own (bench, meltdown, arp-experiment) and JupyterLab run
in a holder of their own (:func:`run`), removed when they end.

CleanUp by construction: the lab's namespaces are owned by the holder's user namespace, its
mounts live in the holder's mount namespace and its processes in the holder's PID namespace.
Killing PID 1 kills every process of the lab; the mounts (the only references to the named
network namespaces) go with the last of them. Nothing is made on the host but the user's own
``~/.vpnlab`` (mode 0700: holders, state folders, logs, keys), and nothing the user may not do
is asked of the kernel: one uid is mapped (no subuid range), and a process in the holder has
no capability over the host's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from vpnlab.core.errors import LabError
from vpnlab.lab.nodes import python_argv
from vpnlab.lab.state import (
    CHANGING_ENV,
    DEFAULT_PREFIX,
    alive,
    base_dir,
    changing,
    check_prefix,
    prefix_namespaces,
)

HOLDER_WAIT_S = 5.0
STOP_GRACE_S = 30.0
"""A command in a holder of its own, stopped: how long its CleanUp may take (``run``)."""
TUN_NODE_ENV = "VPNLAB_TUN_NODE"
"""A character device 10:200 (mode 0666) to bind over /dev/net/tun inside the holder, for a host
whose own /dev/net/tun is 0600 (no udev): an admin makes it once (``mknod -m 0666 FILE c 10 200``
on a filesystem without ``nodev``)."""
APPARMOR_PROFILE = "deploy/apparmor/vpnlab-unshare"
CHANGING_VERBS = ("up", "down", "start-vpn", "stop-vpn")
"""The lab verbs that change a lab: they take the lab's turn (``state.changing``)."""

HOLDER_SCRIPT = """set -e
if [ -n "${VPNLAB_TUN_NODE:-}" ]; then
  mount --bind "$VPNLAB_TUN_NODE" /dev/net/tun \
    || { echo "VPNLAB_TUN_NODE=$VPNLAB_TUN_NODE could not be bound over /dev/net/tun"; exit 1; }
fi
mount -t tmpfs -o mode=0755 vpnlab-run /run
mkdir /run/netns
echo ready
exec sleep infinity
"""
"""PID 1 of the holder: the tun node if one is given, bound before /run is hidden under a tmpfs
(a node in /run would be gone), then /run as that tmpfs (named namespaces)."""

MAX_LABS_ENV = "VPNLAB_MAX_LABS"
"""The most labs a user may have up at once (a class hub sets it; unset: no limit)."""

OWN_LAB_COMMANDS = ("bench", "meltdown", "arp-experiment")
"""Commands that build and remove labs of their own: they run in a holder of their own."""


def home() -> Path:
    """The user's vpnlab folder (``$VPNLAB_HOME``, default ``~/.vpnlab``), made 0700."""
    path = Path(os.environ.get("VPNLAB_HOME") or Path.home() / ".vpnlab")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def inside_env() -> dict[str, str]:
    """The environment of a command in a holder: state under ``~/.vpnlab``, not /run."""
    base = home()
    (base / "run").mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("VPNLAB_STATE_DIR", str(base / "labs"))
    env["XDG_RUNTIME_DIR"] = str(base / "run")  # /run/user/UID is under the holder's tmpfs
    return env


# --- checks: one line each, with the fix ----------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def userns_refusal(proc_sys: Path = Path("/proc/sys")) -> str | None:
    """Why this host refuses an ordinary user a user namespace, with the fix; None if it allows.

    Read from the sysctls alone (``proc_sys`` is a parameter so tests can give a folder).
    """
    if _read_int(proc_sys / "kernel/unprivileged_userns_clone") == 0:
        return (
            "unprivileged user namespaces are off (kernel.unprivileged_userns_clone=0, Debian <= "
            "10): an admin enables them with 'sysctl -w kernel.unprivileged_userns_clone=1', "
            "or run the lab with sudo"
        )
    if _read_int(proc_sys / "user/max_user_namespaces") == 0:
        return (
            "user namespaces are off (user.max_user_namespaces=0): an admin sets it to e.g. "
            "'sysctl -w user.max_user_namespaces=15000', or run the lab with sudo"
        )
    if _read_int(proc_sys / "kernel/apparmor_restrict_unprivileged_userns") == 1:
        return (
            "AppArmor restricts unprivileged user namespaces (Ubuntu >= 23.10): install "
            f"vpnlab's profile once: sudo install -m 644 {APPARMOR_PROFILE} /etc/apparmor.d/ "
            "&& sudo apparmor_parser -r /etc/apparmor.d/vpnlab-unshare (or run the lab with sudo)"
        )
    return None


def check_tun(node: str | None = None) -> None:
    """LabError (one line, with the fix) unless the user may open the TUN device the VPN needs."""
    node = node or os.environ.get(TUN_NODE_ENV) or "/dev/net/tun"
    try:
        st = os.stat(node)
    except OSError as exc:
        raise LabError(f"{node}: {exc.strerror}: the VPN needs the TUN device") from None
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (10, 200):
        raise LabError(f"{TUN_NODE_ENV}={node} is not the TUN device (c 10 200)")
    if not os.access(node, os.R_OK | os.W_OK):
        raise LabError(
            f"{node} is mode {st.st_mode & 0o777:04o}, not open to you (Debian's and Ubuntu's "
            "udev make it 0666): an admin runs 'chmod 0666 /dev/net/tun', or makes a node "
            f"('mknod -m 0666 FILE c 10 200') that {TUN_NODE_ENV}=FILE names; without the VPN: "
            "vpnlab lab up --no-vpn"
        )
    try:  # opened and closed: no device is made until a TUNSETIFF
        os.close(os.open(node, os.O_RDWR))
    except PermissionError:  # the mode allows it: its filesystem refuses devices
        raise LabError(
            f"{node} cannot be opened although its mode allows it: its filesystem is mounted "
            f"nodev ('findmnt -T {node}'); an admin makes the node where devices open, such "
            "as /opt/vpnlab (not /run, /tmp or /dev/shm)"
        ) from None
    except OSError as exc:
        raise LabError(f"{node}: {exc.strerror}: the VPN needs the TUN device") from None


def check_tools() -> None:
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"{' and '.join(missing)} missing: apt-get install util-linux")


def check_lab_limit(prefix: str, others: Sequence[str]) -> None:
    """LabError (one line) if ``others`` (labs up besides ``prefix``) reach ``$VPNLAB_MAX_LABS``."""
    limit = os.environ.get(MAX_LABS_ENV)
    if not limit or not limit.isdigit() or len(others) < int(limit):
        return
    names = ", ".join(sorted(others))
    raise LabError(
        f"{len(others)} labs up already ({names}), the most you may have at once is {limit}: "
        f"take one down first (lab.down() in its notebook, or vpnlab lab down --prefix "
        f"{sorted(others)[0]})"
    )


def labs_here() -> list[str]:
    """The prefixes of the labs up in this ``/run/netns`` (a holder's, or the host's for root)."""
    try:
        folders = [d.name for d in base_dir().iterdir() if (d / "lab.json").is_file()]
    except OSError:
        return []
    return [name for name in folders if _valid(name) and prefix_namespaces(name)]


def _valid(prefix: str) -> bool:
    try:
        check_prefix(prefix)
    except LabError:
        return False
    return True


def labs_held() -> list[str]:
    """The prefixes whose holder runs (``vpnlab lab up`` as an ordinary user, outside a hub)."""
    folder = home() / "holders"
    names = [p.stem for p in folder.glob("*.json") if not p.stem.startswith("run")]
    return [name for name in names if holder_pid(name) is not None]


# --- the holder -------------------------------------------------------------------------------


def _holder_file(name: str) -> Path:
    folder = home() / "holders"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{name}.json"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time): a PID reused by another process differs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder_pid(name: str) -> int | None:
    """PID 1 of the holder ``name`` (as the host sees it), or None if it does not run."""
    try:
        record = json.loads(_holder_file(name).read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if alive(pid) and _start_time(pid) == record.get("start"):
        return pid
    return None


def start_holder(name: str) -> int:
    """Start the holder ``name`` (replacing one that runs) and return its PID 1.

    Raises LabError, naming the host's refusal and its fix, if no holder can be made.
    """
    check_tools()
    stop_holder(name)
    log = _holder_file(name).with_suffix(".log")
    argv = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork"]
    argv += ["--mount-proc", "--propagation", "private", "--kill-child", "--"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "/bin/sh", "-c", HOLDER_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + HOLDER_WAIT_S
    while b"ready" not in log.read_bytes() and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            break
        time.sleep(0.01)
    children = _children_of(proc.pid)
    if proc.poll() is not None or not children:
        proc.kill()
        proc.wait(timeout=HOLDER_WAIT_S)
        lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
        raise LabError(userns_refusal() or _container_refusal(lines[-1]))
    pid = children[0]
    record = {"pid": pid, "start": _start_time(pid), "unshare": proc.pid, "created": time.time()}
    _holder_file(name).write_text(json.dumps(record))
    return pid


def _container_refusal(line: str) -> str:
    """The holder's last line, with the fix where a container's defaults are the cause."""
    message = f"could not start the lab's holder: {line}"
    if "mount /proc" in line:
        return (
            f"{message}: this /proc is partly masked (a container's default); give the "
            "container an unmasked /proc (Kubernetes: procMount: Unmasked, deploy/z2jh/values.yaml)"
        )
    if "unshare failed" in line:
        return (
            f"{message}: in a container, its seccomp profile or a chroot refuses user "
            "namespaces (Kubernetes: seccompProfile Unconfined, deploy/z2jh/values.yaml); "
            "or run the lab with sudo"
        )
    return message


def _children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def stop_holder(name: str) -> bool:
    """CleanUp: SIGKILL the holder's PID 1, so every process, mount and namespace goes.

    Returns True if a holder was running.
    """
    pid = holder_pid(name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + HOLDER_WAIT_S
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    for path in (_holder_file(name), _holder_file(name).with_suffix(".log")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return pid is not None


def enter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """``nsenter`` into the holder PID (user, mount and PID namespaces) as its root, in our cwd."""
    enter = ["nsenter", "-t", str(pid), "--user", "--mount", "--pid", "--preserve-credentials"]
    return [*enter, f"--wd={os.getcwd()}", "--", *argv]


def run(argv: Sequence[str], name: str | None = None) -> int:
    """Run ``argv`` in a holder of its own; the holder and all in it go when ``argv`` ends.

    SIGTERM or SIGINT end it too (how JupyterHub stops a single-user server): ``argv`` is given
    the signal and up to ``STOP_GRACE_S`` for its CleanUp (a benchmark removes its lab and its
    state folder in the user's home), then the holder goes. Returns the exit status of
    ``argv``, or 128 + the signal's number.
    """
    name = name or f"run{os.getpid()}"
    pid = start_holder(name)
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        proc = subprocess.Popen(enter_argv(pid, argv), env=inside_env())
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached argv too (the terminal's process group)
            _let_finish(proc, None)
            return 128 + signal.SIGINT
        except SystemExit:
            _let_finish(proc, signal.SIGTERM)
            raise
    finally:
        stop_holder(name)
        signal.signal(signal.SIGTERM, previous)


def _let_finish(enter: subprocess.Popen[Any], signum: int | None) -> None:
    """CleanUp: send ``signum`` to what ``nsenter`` started (its one child, ``argv``), then wait
    up to ``STOP_GRACE_S`` for it to end."""
    if signum is not None:
        children = Path(f"/proc/{enter.pid}/task/{enter.pid}/children")
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(child), signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        enter.wait(STOP_GRACE_S)


def _raise_exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


# --- the vpnlab commands of an ordinary user -------------------------------------------------


def forward(command: str, argv: Sequence[str], prefix: str | None, verb: str | None) -> int:
    """Run ``vpnlab ARGV`` (the ``command`` with the lab verb ``verb``) for an ordinary user.

    ``lab up`` starts a fresh holder for ``prefix`` (the old lab and its holder go first),
    ``lab down`` removes the lab and then its holder; these and the other verbs that change a
    lab (:data:`CHANGING_VERBS`) wait for the lab's turn first. Any other lab verb and
    ``capture`` enter the holder of ``prefix``; the experiments run in a holder of their own.
    """
    inner = python_argv("-m", "vpnlab", *argv)
    if command in OWN_LAB_COMMANDS:
        return run(inner)
    prefix = check_prefix(prefix or os.environ.get("VPNLAB_PREFIX") or DEFAULT_PREFIX)
    if command == "lab" and verb in CHANGING_VERBS:
        with changing(prefix, Path(inside_env()["VPNLAB_STATE_DIR"])):
            return _change(prefix, verb, argv, inner)
    pid = holder_pid(prefix)
    if pid is None:
        raise LabError(f"no lab with prefix {prefix!r} is up (run: vpnlab lab up)")
    sys.stdout.flush()
    os.execvpe("nsenter", enter_argv(pid, inner), inside_env())


def _change(prefix: str, verb: str, argv: Sequence[str], inner: list[str]) -> int:
    """A lab verb that changes the lab, run in the lab's holder while this process holds the
    lab's turn (``state.changing``; the command inside is told so, :data:`CHANGING_ENV`): two
    ``lab up`` at once replaced each other's holder, and the first died of SIGKILL."""
    if verb == "down":
        return _down(prefix, inner)
    if verb == "up":
        check_lab_limit(prefix, [name for name in labs_held() if name != prefix])
        if "--no-vpn" not in argv:
            check_tun()
        stop_holder(prefix)
        _remove_state(prefix)  # the old lab went with its holder; its record must not linger
        pid: int | None = start_holder(prefix)
    else:
        pid = holder_pid(prefix)
    if pid is None:
        raise LabError(f"no lab with prefix {prefix!r} is up (run: vpnlab lab up)")
    return _enter(pid, prefix, inner)


def _enter(pid: int, prefix: str, inner: list[str]) -> int:
    """Run ``inner`` in the holder ``pid`` on behalf of this process's turn; its exit status.
    Ctrl-C reaches it too (the terminal's process group); a SIGTERM (``cli.process.Stopped``)
    is passed on to it; either way it gets up to ``STOP_GRACE_S`` for its CleanUp."""
    sys.stdout.flush()
    proc = subprocess.Popen(enter_argv(pid, inner), env={**inside_env(), CHANGING_ENV: prefix})
    try:
        return proc.wait()
    except KeyboardInterrupt as exc:
        _let_finish(proc, getattr(exc, "signum", None))
        raise


def _down(prefix: str, inner: list[str]) -> int:
    """``lab down``: the lab's own CleanUp inside its holder, then the holder itself."""
    pid = holder_pid(prefix)
    code = 0 if pid is None else _enter(pid, prefix, inner)
    if stop_holder(prefix):
        print(f"stopped the lab's holder (pid {pid}): its namespaces and processes are gone")
    else:
        print(f"lab {prefix}: no holder to remove")
    _remove_state(prefix)
    return code


def _remove_state(prefix: str) -> None:
    shutil.rmtree(Path(inside_env()["VPNLAB_STATE_DIR"]) / prefix, ignore_errors=True)
