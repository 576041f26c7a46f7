"""Real Unix users for the rootless and hub tests: made by the test (as root), removed after.

:func:`unix_user` makes one with ``useradd -m`` (home 0700, as Debian 12 makes it) and, in
``finally``, kills the processes that user still has (by PID, from /proc) and removes it with
``userdel -r``. :class:`Student` runs commands as that user (``subprocess`` sets the uid, gid and
groups; no su, no PAM).

The users run the **class install** (``scripts/setup.sh --system``), never this checkout or its
venv: a checkout may sit in a 0700 home (Debian 12), which no other user can read.
:func:`class_install` builds it once per test session under a folder the session made in /tmp
(``VPNLAB_TEST_CLASS_INSTALL``, set and removed by ``tests/conftest.py``), under a lock, so
every worker and test file shares one build (about 75 s with a warm pip cache).
:func:`tun_node` is what the issue checked on a host whose /dev/net/tun is 0600: a 0666 node
(c 10 200) in a folder the test made, which the holder binds over /dev/net/tun
(``VPNLAB_TUN_NODE``). The host's own node is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vpnlab.course import classhub
from vpnlab.course.classhub import remove_user

from ..conftest import CLASS_INSTALL_ENV

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900
_counter = itertools.count(1)


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
        remove_user(name)


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
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",  # Debian's, no sbin
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

    def start_vpnlab(self, *args: str) -> subprocess.Popen:
        """``python -m vpnlab ARGS`` as this user, in the background; its stderr piped."""
        return subprocess.Popen(
            [self.python, "-m", "vpnlab", *args],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            cwd=self.user.pw_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )


def build_class_install(prefix: Path, source: Path = REPO) -> Path:
    """``scripts/setup.sh --system`` of ``source`` into ``prefix`` (as root); returns ``prefix``."""
    env = {**os.environ, "VPNLAB_SYSTEM_PREFIX": str(prefix), "VPNLAB_GRADER_USER": "none"}
    done = subprocess.run(
        ["bash", str(source / "scripts/setup.sh"), "--system"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"setup.sh --system failed:\n{done.stderr[-3000:]}")
    return prefix


@functools.cache
def class_install() -> Path:
    """The session's class install (``PREFIX/venv``, ``course``, ``proxy``, ``bin``).

    Built once for the whole session, in the folder ``tests/conftest.py`` made for it: the
    first worker builds it under an flock, the others wait and find it built.
    """
    folder = Path(os.environ[CLASS_INSTALL_ENV])
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    prefix = folder / "install"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            shutil.rmtree(prefix, ignore_errors=True)
            build_class_install(prefix)
            (folder / "built").touch()
    return prefix


def install_bin(prefix: Path | None = None) -> Path:
    """The bin folder of the class install's venv (its python, vpnlab, jupyter)."""
    return (prefix or class_install()) / "venv/bin"


def clone_for(user: pwd.struct_passwd) -> Path:
    """The repository as a student has it: its files in ``~/vpnlab``, the user's own, with a
    ``.venv`` that ``scripts/setup.sh`` takes as up to date (its stamp: pyproject.toml's hash
    and the ``test`` extra, as ``create_venv`` writes it): the class install's Python, whose
    ``.pth`` names the clone first (its vpnlab) and the class install's packages after."""
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
    python = install_bin() / "python"
    venv = clone / ".venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    version = Path(site).parent.name  # python3.11
    (venv / "lib" / version / "site-packages" / "vpnlab-test.pth").write_text(f"{clone}\n{site}\n")
    tools = (("vpnlab", "vpnlab"), ("jupyter", "jupyter"), ("jupyter-lab", "jupyterlab"))
    for tool, module in tools:
        script = venv / "bin" / tool
        script.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/python" -m {module} "$@"\n')
        script.chmod(0o755)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / ".vpnlab-installed").write_text(f"{digest}test\n")
    subprocess.run(
        ["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(clone)], check=True, timeout=30
    )
    return clone


def made_folder() -> contextlib.AbstractContextManager[Path]:
    """A folder the test made in /tmp (0711: others may pass, not list), removed after."""
    return classhub.made_folder("vpnlab-rootless-")


def tun_node(folder: Path) -> Path:
    """A 0666 TUN node (c 10 200) of the test's own, for the holder to bind over /dev/net/tun."""
    node = folder / "tun"
    os.mknod(node, 0o020666, os.makedev(10, 200))
    node.chmod(0o666)  # the node the test made, never the host's
    return node
