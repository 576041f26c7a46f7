"""Real Unix users for the rootless tests: made by the test (as root), removed after, always.

:func:`unix_user` makes one with ``useradd -m`` and, in ``finally``, kills the processes that
user still has (by PID, from /proc) and removes it with ``userdel -r``. :class:`Student` runs
commands as that user (``subprocess`` sets the uid, gid and groups; no su, no PAM).

The user needs a Python that can import this worktree's vpnlab. The worktree's venv may sit on
a Python under /root (pyenv), which other users cannot run; :func:`user_python` then makes a
venv from the system's Python of the same version whose ``.pth`` names this worktree and the
venv's site-packages (the same wheels; only the interpreter differs), in a folder the test made.
:func:`tun_node` is what the issue checked on a host whose /dev/net/tun is 0600: a 0666 node
(c 10 200) in a folder the test made, which the holder binds over /dev/net/tun
(``VPNLAB_TUN_NODE``). The host's own node is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count(1)


def user_processes(uid: int) -> list[int]:
    """The PIDs of ``uid``'s running processes (zombies, which hold nothing, left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if (
                    os.stat(f"/proc/{entry}").st_uid == uid
                    and stat.rsplit(")", 1)[1].split()[0] != "Z"
                ):
                    pids.append(int(entry))
    return pids


@contextlib.contextmanager
def unix_user(tag: str = "u") -> Iterator[pwd.struct_passwd]:
    """A fresh Unix user (home 0700), removed with its home and processes afterwards."""
    if shutil.which("useradd") is None:
        pytest.skip("no useradd: cannot make a Unix user for the rootless tests")
    name = f"vlr{os.getpid() % 100000}{tag}{next(_counter)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, timeout=30)
    try:
        user = pwd.getpwnam(name)
        os.chmod(user.pw_dir, 0o700)
        yield user
    finally:
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(name).pw_uid
            for _ in range(20):
                pids = user_processes(uid)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30, check=False)


class Student:
    """A made user, the Python they run and the environment of their commands."""

    def __init__(self, user: pwd.struct_passwd, python_bin: Path, env: dict[str, str]) -> None:
        self.user = user
        self.home = Path(user.pw_dir)
        self.python = str(python_bin / "python")
        self.env = {
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            **env,
        }

    def run(
        self, argv: Sequence[str], timeout: float = 90, **kwargs
    ) -> subprocess.CompletedProcess:
        """``argv`` as this user in their home, output as text, ``timeout`` seconds at most."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            list(argv),
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            cwd=kwargs.pop("cwd", self.user.pw_dir),
            env={**self.env, **kwargs.pop("env", {})},
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def vpnlab(self, *args: str, timeout: float = 90, **kwargs) -> subprocess.CompletedProcess:
        """``python -m vpnlab ARGS`` as this user."""
        return self.run([self.python, "-m", "vpnlab", *args], timeout=timeout, **kwargs)


def _others_can_run(path: str) -> bool:
    """True if every folder above ``path`` and the file itself are open to others."""
    real = Path(os.path.realpath(path))
    return all(os.stat(part).st_mode & 1 for part in [*real.parents, real])


def _python_for_others() -> str:
    """This Python's interpreter if other users can run it, else the system's of its version."""
    for candidate in (sys.executable, getattr(sys, "_base_executable", sys.executable)):
        if _others_can_run(candidate):
            return candidate
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None or not _others_can_run(system):
        pytest.skip(f"no {version} that other users can run (the venv's is {sys.executable})")
    return system


def make_venv(venv: Path, repo: Path = REPO) -> Path:
    """A venv others can run that imports vpnlab from ``repo`` and this venv's packages.

    Made with ``--without-pip``: a ``.pth`` names ``repo`` and this venv's site-packages (the
    same wheels, no download); ``bin/vpnlab``, ``bin/jupyter`` and ``bin/jupyter-lab`` are
    ``python -m`` scripts.
    Returns its bin folder.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = _python_for_others()
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = venv / "lib" / version / "site-packages"
    (site / "vpnlab-test.pth").write_text(f"{repo}\n{purelib}\n")
    for tool, module in (
        ("vpnlab", "vpnlab"),
        ("jupyter", "jupyter"),
        ("jupyter-lab", "jupyterlab"),
    ):
        script = venv / "bin" / tool
        script.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/python" -m {module} "$@"\n')
        script.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True, timeout=30)
    return venv / "bin"


def user_python(folder: Path) -> Path:
    """The bin folder of a Python other users can run that imports this worktree's vpnlab."""
    return make_venv(folder / "venv")


def clone_for(user: pwd.struct_passwd) -> Path:
    """The repository as a student has it: its files in ``~/vpnlab``, the user's own, with a
    ``.venv`` that ``scripts/setup.sh`` takes as up to date (its stamp: pyproject.toml's hash
    and the ``test`` extra, as ``create_venv`` writes it)."""
    clone = Path(user.pw_dir) / "vpnlab"
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = clone / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    make_venv(clone / ".venv", clone)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (clone / ".venv" / ".vpnlab-installed").write_text(f"{digest}test\n")
    subprocess.run(
        ["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(clone)], check=True, timeout=30
    )
    return clone


@contextlib.contextmanager
def made_folder() -> Iterator[Path]:
    """A folder the test made (0711: others may pass, not list), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="vpnlab-rootless-", dir="/tmp"))
    try:
        folder.chmod(0o711)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tun_node(folder: Path) -> Path:
    """A 0666 TUN node (c 10 200) of the test's own, for the holder to bind over /dev/net/tun."""
    node = folder / "tun"
    os.mknod(node, 0o020666, os.makedev(10, 200))
    node.chmod(0o666)  # the node the test made, never the host's
    return node
