"""The grader's only privileged part: enter a student's rootless lab from outside their processes.

A student's lab lives in a *holder* (``vpnlab/lab/rootless.py``): PID 1 of a PID namespace,
in a user namespace the student owns, whose mount namespace holds the lab's named network
namespaces under ``/run/netns``. Entering another uid's user namespace needs privilege, so the
grader service keeps root in one small process, the *enterer* (:func:`serve_enterer`, forked
before the service drops to its own user), which does only this:

1. Who: the student's uid from the hub's name (``pwd``), never a uid or PID the student sends;
   a uid below MIN_STUDENT_UID (root, system users, the grader) is refused.
2. Which process: the holder is found in /proc, not in a file the student writes: a process
   of that uid that is PID 1 of its PID namespace (``NSpid``), in a user namespace other than
   the host's whose owner (``NS_GET_OWNER_UID``) is that uid.
3. Which namespace: ``/proc/HOLDER/root/run/netns/{prefix}{node}`` is opened ``O_PATH`` (no
   device, FIFO or symlink at the end is opened), must be an nsfs file of type network
   (``NS_GET_NSTYPE``) whose owning user namespace (``NS_GET_USERNS``) is the holder's: a bind
   mount of the host's network namespace or another student's is refused.
4. How: ``nsenter --user=FD --net=FD`` on the opened descriptors (no race with a changed mount),
   without ``--preserve-credentials``: the command runs as root *of the student's user
   namespace*, i.e. as the student's uid on the host, with no supplementary group (they are
   dropped before) and capabilities only over the student's own namespaces; in the host's
   mount namespace (the student's bind mounts over ``/usr/bin`` are not seen), with a clean
   environment, from ``/``. Only ``ping``, ``ip``, ``nft``, ``sysctl`` and the service's own
   Python run (paths fixed here).

So whatever the unprivileged service asks, the enterer can do nothing in a student's lab that
the student could not do there, and nothing anywhere else.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.state import check_prefix
from vpnlab.lab.topology import DEFAULT_TOPOLOGY

MIN_STUDENT_UID = 1000
MAX_TIMEOUT_S = 60.0
MAX_MESSAGE = 1 << 20
NS_GET_USERNS = 0xB701
NS_GET_NSTYPE = 0xB703
NS_GET_OWNER_UID = 0xB704
CLONE_NEWNET = 0x40000000
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("ping", "ip", "nft", "sysctl")
PYTHON = sys.executable
"""What ``python`` runs in a lab: the service's own (root-owned in a class install)."""
_refused_uids: set[int] = {0}
"""Never a student: root, and the grader's own user (:func:`serve_enterer` adds it)."""


@dataclass(frozen=True)
class Holder:
    """A student's holder: its PID and its user namespace (an open descriptor)."""

    pid: int
    userns_fd: int


def student_uid(name: str) -> int:
    """The uid of the hub's user ``name``; LabError for an unknown or non-student account."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except (KeyError, TypeError):
        raise LabError(f"no Unix user {name!r}") from None
    if uid < MIN_STUDENT_UID or uid in _refused_uids:
        raise LabError(f"{name!r} is not a student account (uid {uid})")
    return uid


def _pid1_of_its_namespace(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 (closed by the loop's end)
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    return False


def _owner_uid(userns_fd: int) -> int:
    buf = array.array("I", [0])
    fcntl.ioctl(userns_fd, NS_GET_OWNER_UID, buf, True)
    return buf[0]


def find_holders(uid: int) -> list[Holder]:
    """Every holder of ``uid`` (step 2 of the module docstring), newest last."""
    host_userns = os.stat("/proc/self/ns/user").st_ino
    found = []
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid or not _pid1_of_its_namespace(pid):
                continue
            fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_ino != host_userns and _owner_uid(fd) == uid:
                found.append(Holder(pid, fd))
                continue
        except OSError:
            pass
        os.close(fd)
    return found


def node_netns(holder: Holder, prefix: str, node: str) -> int | None:
    """An open descriptor of the lab node's network namespace in ``holder`` (step 3), or None
    if that holder has no such namespace of its own."""
    nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    path = f"/proc/{holder.pid}/root/run/netns/{prefix}{node}"
    try:
        handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(handle).st_dev != nsfs_dev:
            return None
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(handle)
    try:
        if fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
            same = os.fstat(owner).st_ino == os.fstat(holder.userns_fd).st_ino
            os.close(owner)
            if same:
                return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _tool(name: str) -> str:
    """The fixed path of an allowed command (the service's Python for ``python``)."""
    if name == "python":
        return PYTHON
    path = shutil.which(name, path=SAFE_PATH) if name in TOOLS else None
    if path is None:
        raise LabError(f"the grader does not run {name!r} in a lab")
    return path


def run_in_student_lab(
    student: str,
    prefix: str,
    node: str,
    argv: list[str],
    input: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """``argv`` (its first word one of TOOLS or ``python``) in ``node`` of ``student``'s lab
    ``prefix``, the way the module docstring says. Needs root.

    Raises LabError if the student has no such lab (no holder with that node).
    """
    uid = student_uid(student)
    check_prefix(prefix)
    DEFAULT_TOPOLOGY.node(node)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise LabError("no command given")
    command = [_tool(argv[0]), *argv[1:]]
    holders = find_holders(uid)
    try:
        for holder in reversed(holders):
            netns = node_netns(holder, prefix, node)
            if netns is None:
                continue
            try:
                return _nsenter(holder, netns, command, input, min(timeout, MAX_TIMEOUT_S))
            finally:
                os.close(netns)
    finally:
        for holder in holders:
            os.close(holder.userns_fd)
    raise LabError(f"{student} has no lab {prefix!r} up (no holder with {prefix}{node})")


def _nsenter(
    holder: Holder, netns: int, command: list[str], input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    argv = [_tool_nsenter(), f"--user=/proc/self/fd/{holder.userns_fd}"]
    argv += [f"--net=/proc/self/fd/{netns}", "--", *command]
    return subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
        env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
        pass_fds=(holder.userns_fd, netns),
        preexec_fn=lambda: os.setgroups([]),  # noqa: PLW1509 (no threads hold locks we need)
    )


def _tool_nsenter() -> str:
    path = shutil.which("nsenter", path=SAFE_PATH)
    if path is None:
        raise LabError("nsenter missing: apt-get install util-linux")
    return path


# --- the enterer process and the service's handle on it --------------------------------------


REQUEST = ("student", "prefix", "node", "argv", "input", "timeout")
"""The arguments of :func:`run_in_student_lab`, in order: the fields of a request."""


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        args = [request[name] for name in REQUEST[:4]]
        text = request.get("input")
        timeout = float(request.get("timeout", 30))
        student, prefix, node = (str(arg) for arg in args[:3])
        done = run_in_student_lab(student, prefix, node, list(args[3]), text, timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    except (LabError, KeyError, TypeError, ValueError) as exc:
        return {"error": str(exc)}
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def _serve_one(conn: socket.socket) -> None:
    with conn:
        try:
            request = _receive(conn)
            reply = _answer(request) if isinstance(request, dict) else {"error": "bad request"}
        except (ValueError, LabError, OSError):
            reply = {"error": "bad request"}
        with contextlib.suppress(OSError):
            _send(conn, reply)


def serve_enterer(channel: socket.socket, service_uid: int) -> None:
    """The enterer's loop (root): each message on ``channel`` carries one connection (a
    descriptor) on which one request comes and its answer goes, in a thread of its own. Ends
    when the service closes ``channel``. ``service_uid`` (the grader's user) is never a student.
    """
    _refused_uids.add(service_uid)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        except OSError:
            return
        if not fds:
            return
        conn = socket.socket(fileno=fds[0])
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


class Enterer:
    """The unprivileged service's handle on the enterer: :meth:`run` sends one request over a
    fresh socket pair whose other end goes to the enterer (``SCM_RIGHTS``)."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self._lock = threading.Lock()

    def run(self, *request: Any) -> subprocess.CompletedProcess[str]:
        """As :func:`run_in_student_lab`, its arguments in order (REQUEST); raises as it does."""
        message = dict(zip(REQUEST, request, strict=False))
        argv, timeout = list(message["argv"]), float(message.get("timeout", 30))
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with mine:
            with self._lock, theirs:
                socket.send_fds(self.channel, [b"r"], [theirs.fileno()])
            mine.settimeout(timeout + 10)
            _send(mine, message)
            reply = _receive(mine)
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired(argv, timeout)
        if "error" in reply:
            raise LabError(str(reply["error"]))
        return subprocess.CompletedProcess(
            argv, int(reply["returncode"]), str(reply["stdout"]), str(reply["stderr"])
        )


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 65536))
        if not chunk:
            raise LabError("the grader's enterer hung up")
        data += chunk
    return data


def _receive(conn: socket.socket) -> Any:
    """One length-prefixed JSON message (at most MAX_MESSAGE bytes)."""
    (size,) = struct.unpack("!I", _exactly(conn, 4))
    if size > MAX_MESSAGE:
        raise LabError("the grader's enterer got a message too large")
    return json.loads(_exactly(conn, size))
