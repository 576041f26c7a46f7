"""CleanUp for the lab: what it created is recorded here, and undone from here.

One state folder per prefix (``/run/vpnlab/{prefix}``, or ``$VPNLAB_STATE_DIR/{prefix}``) holds
``lab.json`` (namespaces, daemons with PIDs and logs, files), the daemons' logs, status files and
the PSK. :func:`teardown` works from that record and, failing it, from the prefix alone, the way
wireguard-go's ``tests/netns.sh`` only kills PIDs in its own namespaces: nothing is killed by
name, nothing outside the lab's namespaces is touched, and every step tolerates things that are
already gone, so ``down`` also works after a ``kill -9`` of anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.records import LabRecord
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, Topology, from_dict

DEFAULT_PREFIX = "vpnlab-"
DEFAULT_BASE_DIR = "/run/vpnlab"
PRIVATE_DIR = ".faults"
"""Beside the state folders: the practice fault records (``lab/faults.py``), 0700."""
NETNS_DIR = Path("/run/netns")
TERM_GRACE_S = 3.0
"""CleanUp: how long daemons get between SIGTERM and SIGKILL."""
CHANGE_WAIT_S = 300.0
"""How long a command that changes a lab waits for another one changing it (:func:`changing`)."""
CHANGING_ENV = "VPNLAB_CHANGING"
"""A lab's prefix, set by a command that holds the lab's turn (:func:`changing`) for the child
that changes the lab for it: an ordinary user's ``vpnlab lab up`` holds it outside the lab's
holder while the root path runs inside (``rootless.forward``)."""

_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,19}-$")
_NODE = r"[a-z][a-z0-9]*"

_children: dict[int, subprocess.Popen[Any]] = {}
"""Daemons started by this process, so they can be reaped (no zombies in long-lived callers)."""


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid lab prefix (``[a-z][a-z0-9]*-``), else LabError."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise LabError(
            f"bad prefix {prefix!r}: use lowercase letters and digits ending in '-', "
            "e.g. 'vpnlab-' (at most 21 characters)"
        )
    return prefix


def base_dir() -> Path:
    return Path(os.environ.get("VPNLAB_STATE_DIR") or DEFAULT_BASE_DIR)


def state_dir(prefix: str) -> Path:
    """The lab's state folder: record, logs, status files, PSK."""
    return base_dir() / check_prefix(prefix)


def namespace(prefix: str, node: str) -> str:
    return f"{prefix}{node}"


# --- one change at a time -----------------------------------------------------------------------

_changing: dict[str, int] = {}
"""The labs this process is changing, with how deep (``up`` starts the VPN inside its change)."""


@contextlib.contextmanager
def changing(prefix: str, base: Path | None = None) -> Iterator[None]:
    """One command at a time changes the lab ``prefix`` (``up``, ``down``, ``start_vpn``,
    ``stop_vpn``): a second one, from another terminal or a notebook, waits for the first
    instead of building or deleting the same namespaces under it (two ``lab up`` at once
    both failed, with "failed to open netns" or "No such file or directory").

    A POSIX lock (``lockf``: a process's own, so no child it forks, pyroute2's among them,
    holds it on) on ``{base}/.{prefix}lock``, which holds the changer's PID for the waiting
    one's message. The file goes when the lab does, so ``down`` leaves nothing behind; a
    waiter that finds it gone (or made anew) takes the new one. Re-entrant in one process, and
    in a child whose environment names the lab in :data:`CHANGING_ENV`. ``base``: the folder of
    the labs' state folders, if not this process's (:func:`base_dir`).

    Raises:
        LabError: another command has changed the lab for :data:`CHANGE_WAIT_S`.
    """
    check_prefix(prefix)
    held_here = prefix in _changing
    if held_here or os.environ.get(CHANGING_ENV) == prefix:
        _changing[prefix] = _changing.get(prefix, 0) + 1
        try:
            yield
        finally:
            _changing[prefix] -= 1
            if not held_here:
                del _changing[prefix]
        return
    base = base or base_dir()
    path = base / f".{prefix}lock"
    fd = _lock(path, prefix)
    _changing[prefix] = 1
    try:
        yield
    finally:
        del _changing[prefix]
        if not (base / prefix).exists():  # the lab is gone: its lock too, while still held
            with contextlib.suppress(OSError):
                path.unlink()
            _remove_base_if_empty()
        os.close(fd)


def _lock(path: Path, prefix: str) -> int:
    """The lock of :func:`changing`, once no one else holds it: its open descriptor."""
    deadline = time.monotonic() + CHANGE_WAIT_S
    told = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LabError(f"lab {prefix}: cannot lock {path}: {exc.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise LabError(f"lab {prefix}: cannot lock {path}: {exc.strerror}") from None
            holder = os.pread(fd, 16, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if time.monotonic() > deadline:
                raise LabError(
                    f"lab {prefix}: another vpnlab command (PID {holder}) has been changing it "
                    f"for {CHANGE_WAIT_S:.0f} s; let it finish, or stop it"
                ) from None
            if not told:
                print(
                    f"[vpnlab] lab {prefix}: waiting for another vpnlab command (PID {holder}) "
                    "that is changing it",
                    file=sys.stderr,
                )
                told = True
            time.sleep(0.1)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the changer before us removed it with its lab
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def _remove_base_if_empty() -> None:
    """The default state folder (``/run/vpnlab``) goes with the last lab in it."""
    if base_dir() == Path(DEFAULT_BASE_DIR):
        with contextlib.suppress(OSError):
            base_dir().rmdir()  # only if empty: other labs keep it


# --- the record ---------------------------------------------------------------------------------


def load(prefix: str) -> LabRecord | None:
    """The lab's record, or None if there is none (or it is no JSON); LabError for a record of
    an unknown version or the wrong shape (``records.py``)."""
    try:
        data = json.loads((state_dir(prefix) / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    return LabRecord.from_json(data)


def _remove_private(prefix: str) -> None:
    """CleanUp of the lab's practice fault record; the private folder too once it holds no
    record (its secret and counter go with it: the next fault is drawn under a fresh one)."""
    private = base_dir() / PRIVATE_DIR
    with contextlib.suppress(OSError):
        (private / f"{prefix}.json").unlink()
    if private.is_dir() and not list(private.glob("*.json")):
        shutil.rmtree(private, ignore_errors=True)


def save(record: LabRecord) -> None:
    """Write the record atomically (write-ahead: called before each thing is created)."""
    folder = state_dir(record.prefix)
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = folder / "lab.json.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True))
    os.replace(tmp, folder / "lab.json")


# --- namespaces and processes -------------------------------------------------------------------


def prefix_namespaces(prefix: str) -> list[str]:
    """Namespaces that look like this lab's: ``{prefix}{node}`` in /run/netns."""
    pattern = re.compile(re.escape(check_prefix(prefix)) + _NODE + "$")
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if pattern.match(n))
    except OSError:
        return []


def ns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def ns_ids(names: list[str]) -> dict[tuple[int, int], str]:
    """(device, inode) of each existing namespace file: what /proc/PID/ns/net also shows."""
    ids = {}
    for name in names:
        try:
            st = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = name
    return ids


def pid_ns_id(pid: int) -> tuple[int, int] | None:
    """(device, inode) of PID's network namespace, None if it is gone or a zombie."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in(ids: dict[tuple[int, int], str]) -> list[int]:
    """Every process whose network namespace is one of ``ids`` (never us or our parents)."""
    spare = _self_and_ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in spare and pid_ns_id(int(entry)) in ids:
            found.append(int(entry))
    return found


def _self_and_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def alive(pid: int | None) -> bool:
    """True if PID runs (zombies count as dead; our own children get reaped on the way)."""
    if not pid:
        return False
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def register_child(proc: subprocess.Popen[Any]) -> None:
    _children[proc.pid] = proc


def stop_pids(pids: list[int], grace_s: float | None = None) -> list[int]:
    """CleanUp: SIGTERM, wait up to ``grace_s`` (TERM_GRACE_S), then SIGKILL what is left.

    Returns the PIDs that were running.
    """
    grace_s = TERM_GRACE_S if grace_s is None else grace_s
    pids = [p for p in pids if alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    stubborn = [p for p in pids if alive(p)]
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while any(alive(p) for p in stubborn) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids


def stop_daemons(record: LabRecord, names: list[str] | None = None) -> list[str]:
    """Stop recorded daemons (all, or ``names``) whose PID still runs in a lab namespace."""
    ids = ns_ids(record.namespaces or prefix_namespaces(record.prefix))
    daemons = record.daemons
    chosen = [n for n in daemons if names is None or n in names]
    chosen.sort(key=lambda n: daemons[n].started, reverse=True)  # last started first
    done = []
    for name in chosen:
        pid = daemons[name].pid
        if pid and alive(pid) and pid_ns_id(pid) in ids:
            stop_pids([pid])
            done.append(f"stopped {name} (pid {pid})")
    return done


def remove_namespace(name: str) -> bool:
    """Delete one namespace (its veths, routes and nft tables go with it). False if absent."""
    path = NETNS_DIR / name
    if not path.exists():
        return False
    from pyroute2 import netns  # imported late: `vpnlab lab --help` should not need it

    try:
        netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError:
        # the fallback iproute2 uses: lazy unmount then unlink, by hand
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    return not path.exists()


def teardown(prefix: str) -> list[str]:
    """CleanUp: undo everything of the lab ``prefix``; returns what was done, one line each.

    1. recorded daemons: TERM then KILL, only if the PID still runs in a lab namespace;
    2. any other process left in a lab namespace (orphans of a killed ``up``, or one that
       entered while we looked): the same, until none is left;
    3. the namespaces, from the record and from the prefix;
    4. the state folder.
    Never raises for things already gone.
    """
    check_prefix(prefix)
    try:
        record = load(prefix) or LabRecord(prefix)
    except LabError:  # a record this vpnlab cannot read: the prefix alone says what to remove
        record = LabRecord(prefix)
    names = sorted(set(record.namespaces) | set(prefix_namespaces(prefix)))
    record.namespaces = names
    done = stop_daemons(record)
    ids: dict[tuple[int, int], str] = {}
    for _ in range(5):  # again if a namespace appears meanwhile (orphan of a killed `up`)
        ids.update(ns_ids(names))  # kept after the names go: a process still holds its ns
        orphans = stop_pids(pids_in(ids)) if ids else []
        if orphans:
            done.append(f"stopped {len(orphans)} other process(es) in the lab: {orphans}")
        for name in reversed(names):
            if remove_namespace(name):
                done.append(f"deleted namespace {name}")
        time.sleep(0.02 if names else 0)
        late = prefix_namespaces(prefix)
        # a process that entered a namespace between the look and the delete (an `ip netns
        # exec` under way when a signal stopped its parent) keeps that namespace alive: again
        if not late and not (ids and pids_in(ids)):
            break
        names = late
    leftover = [n for n in names if ns_exists(n)]
    folder = state_dir(prefix)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"removed {folder}")
    _remove_private(prefix)
    _remove_base_if_empty()
    if leftover:
        raise LabError(f"could not delete namespaces {leftover}")
    return done


def record_of(prefix: str) -> LabRecord:
    """The record of a lab that is up; LabError if there is none."""
    record = load(prefix)
    if record is None:
        raise LabError(f"no lab with prefix {prefix!r} is up (run: vpnlab lab up)")
    return record


def drawn_values(prefix: str) -> dict[str, object]:
    """The values drawn for the lab at ``lab up`` (``draw.py``), {} for a lab without them."""
    record = load(prefix)
    return dict(record.drawn) if record else {}


def topology_of(prefix: str) -> Topology:
    """The topology a lab was built with (the default one if nothing is recorded)."""
    record = load(prefix)
    if record and record.topology:
        return from_dict(record.topology)
    return DEFAULT_TOPOLOGY
