"""Inside a lab node: run a command there, start one there, wait for something to happen.

Every command that the lab, the instruments and the course run in a node goes through
:func:`exec_in` (``ip netns exec {prefix}{node} argv``, as ``vpnlab lab exec`` does) or
:func:`popen_in` (the same, in the background); :func:`run_in` is :func:`exec_in` with the
output captured, for the lab's own ``sysctl``, ``ip`` and ``nft`` calls. Each checks first that
the node is one of the lab's and its namespace exists, so a typo or a lab that is down is one
line (LabError), not a traceback from ``ip``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.state import check_prefix, namespace, ns_exists, topology_of

REQUIRED_TOOLS = {"ip": "iproute2", "sysctl": "procps"}
"""The tools the lab runs, and the Debian package of each."""

SAFE_PATH_FLAG: tuple[str, ...] = ("-P",) if sys.version_info >= (3, 11) else ()
"""``python -P`` (3.11+): the current folder is not put in front of the import path."""


def python_argv(*args: str) -> list[str]:
    """This Python running ``args`` (``-m vpnlab server ...``, ``-c CODE``), as the lab, the
    instruments and the course start it, in a node or not.

    ``python -m`` and ``-c`` import from the current folder first, so root starting a lab
    from a folder that others can write (/tmp, a student's home) would run, as root, in every
    daemon, a ``vpnlab/`` or ``urllib/`` planted there. With ``-P`` the import path is this
    Python's own (and PYTHONPATH's). Python 3.10 has no such switch: there, start labs from a
    folder only you can write (docs/security.md).
    """
    return [sys.executable, *SAFE_PATH_FLAG, *args]


def check_environment() -> None:
    """LabError (one line) unless we are root and have iproute2 and pyroute2."""
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces): run it with sudo, or without it in a "
            "holder of your own: vpnlab rootless run -- COMMAND (docs/class.md)"
        )
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        packages = " ".join(REQUIRED_TOOLS[tool] for tool in missing)
        raise LabError(
            f"missing tools: {', '.join(missing)}: install them with "
            f"'sudo apt-get install {packages}' (sudo scripts/netns-lab.sh installs all it needs)"
        )
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        raise LabError(
            "pyroute2 is not installed in this Python: use the lab's .venv/bin/python "
            "(scripts/netns-lab.sh makes it), or 'pip install vpnlab'"
        ) from None


def namespace_of(prefix: str, node: str) -> str:
    """The namespace of ``node`` (``{prefix}{node}``); LabError if it does not exist."""
    ns = namespace(check_prefix(prefix), node)
    if not ns_exists(ns):
        raise LabError(f"namespace {ns} does not exist: is the lab up? (vpnlab lab up)")
    return ns


def _netns_exec(prefix: str, node: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec {ns} argv``, once the node, its namespace and the command are there."""
    check_environment()
    topology_of(prefix).node(node)  # LabError naming the valid nodes
    ns = namespace_of(prefix, node)
    if not argv:
        raise LabError("no command given")
    if shutil.which(argv[0]) is None and "/" not in argv[0]:
        raise LabError(f"command not found: {argv[0]}")
    return ["ip", "netns", "exec", ns, *argv]


def exec_in(
    prefix: str, node: str, argv: Sequence[str], **subprocess_kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` inside ``node`` (``ip netns exec {prefix}{node} argv``); returns its result.

    Keyword arguments go to :func:`subprocess.run` (``check`` defaults to False).
    Raises LabError for an unknown node, a lab that is not up, or a command that is not found.
    """
    return subprocess.run(_netns_exec(prefix, node, argv), **subprocess_kwargs)


def popen_in(
    prefix: str, node: str, argv: Sequence[str], **popen_kwargs: Any
) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``node`` in the background; keyword arguments go to Popen.

    ``ip netns exec`` execs the program, so the PID is the program's own. Raises as
    :func:`exec_in`.
    """
    return subprocess.Popen(_netns_exec(prefix, node, argv), **popen_kwargs)


def run_in(
    prefix: str, node: str, argv: Sequence[str], check: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """:func:`exec_in` with the output captured as text; ``check``: LabError if it fails.

    The LabError names the command, the namespace and the last line the command wrote.
    """
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = exec_in(prefix, node, argv, check=False, **kwargs)
    if check and result.returncode != 0:
        err = (result.stderr or result.stdout or "").strip().splitlines()
        ns = namespace(prefix, node)
        raise LabError(f"{' '.join(argv)} in {ns} failed: {err[-1] if err else result.returncode}")
    return result


def wait_for(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate()`` every ``interval_s`` until it is true or ``timeout_s`` passed.

    Returns True as soon as it is true; False if it still was not after ``timeout_s`` (it is
    asked once more when the time is up).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def udp_socket_in(prefix: str, node: str, address: str) -> socket.socket:
    """A non-blocking UDP socket of ``node``'s namespace, bound to ``address`` (any port), for
    a process that stays outside the lab (pyroute2 makes it in a child that enters the
    namespace and hands the descriptor back)."""
    from pyroute2 import netns

    sock: socket.socket = netns.create_socket(
        namespace_of(prefix, node), socket.AF_INET, socket.SOCK_DGRAM, flags=0
    )
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock
