"""The captures: "client can for example, ftp to server on the tunnel" (the notes' FTP demo).

A real FTP server on r2's tunnel address and a real client on r1 (``ftp_endpoints.py``), so
that tun0 shows the notes' ``raw:ip:tcp:ftp`` and the external interface ``...:udpencap:esp``::

    vpnlab ftp serve --listen 10.8.0.1 --root DIR          # in r2's namespace
    vpnlab ftp transfer --server 10.8.0.1 --mode active    # in r1's namespace
    vpnlab ftp get --server 10.8.0.1 --name FILE           # anonymous, read only

In active mode (PORT) the server connects back to the client's tunnel address (10.8.0.2),
through the tunnel the other way. From Python (as root, with a lab up) :func:`lab_server` and
:func:`lab_transfer` do the same inside the lab's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.errors import LabError
from vpnlab.instruments.ftp_endpoints import (
    FTP_PORT,
    MODES,
    READY_LINE,
    FtpError,
    TransferResult,
    sha256,
)
from vpnlab.lab.nodes import exec_in, popen_in, python_argv
from vpnlab.lab.state import namespace

__all__ = ["MODES", "FtpError", "LabFtpServer", "lab_server", "lab_transfer", "sha256"]
READY_TIMEOUT_S = 5.0


@dataclass
class LabFtpServer:
    """A running ``vpnlab ftp serve`` inside a lab node (see :func:`lab_server`)."""

    namespace: str
    address: str
    port: int
    root: Path
    process: subprocess.Popen[str]

    def stop(self, timeout_s: float = 3.0) -> None:
        """CleanUp: SIGTERM, then SIGKILL if it lingers (only this PID)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        if self.process.stdout:
            self.process.stdout.close()


@contextlib.contextmanager
def lab_server(
    prefix: str,
    node: str = "r2",
    listen: str = "10.8.0.1",
    root: str | Path | None = None,
    port: int = FTP_PORT,
    lifetime_s: float = 300.0,
) -> Iterator[LabFtpServer]:
    """Run the FTP server in ``{prefix}{node}`` for the ``with`` block; waits until it listens.

    ``root`` defaults to a fresh temporary folder, removed afterwards.

    Raises:
        FtpError: no such namespace, or the server did not start within READY_TIMEOUT_S.
    """
    made = root is None
    folder = Path(tempfile.mkdtemp(prefix="vpnlab-ftp-")) if root is None else Path(root)
    argv = python_argv("-m", "vpnlab", "ftp", "serve", "--listen", listen)
    argv += ["--port", str(port), "--root", str(folder), "--lifetime", str(lifetime_s)]
    try:
        proc = popen_in(
            prefix,
            node,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    except LabError as exc:  # no such node or namespace: the same line, as FtpError
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise FtpError(str(exc)) from None
    handle = LabFtpServer(namespace(prefix, node), listen, port, folder, proc)
    try:
        _wait_ready(proc)
        yield handle
    finally:
        handle.stop()
        if made:
            shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    out = proc.stdout
    assert out is not None  # stdout=PIPE, text=True: lab_ftp_server
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([out], [], [], 0.1)
        if ready:
            line = out.readline()
            if line.startswith(READY_LINE):
                return
            if line:
                seen.append(line.strip())
                continue
        if proc.poll() is not None:
            break
    why = seen[-1] if seen else f"not listening after {READY_TIMEOUT_S} s"
    raise FtpError(f"FTP server did not start: {why}")


def lab_transfer(
    prefix: str,
    node: str = "r1",
    server: str = "10.8.0.1",
    mode: str = "passive",
    size_bytes: int = 4096,
    port: int = FTP_PORT,
    timeout_s: float = 20.0,
    path: str | Path | None = None,
) -> TransferResult:
    """:func:`transfer` run inside ``{prefix}{node}`` (the VPN client); returns its result.

    Uploads ``size_bytes`` of random data, or the file at ``path``.

    Raises:
        FtpError: the transfer failed (its one-line reason) or took longer than ``timeout_s``.
    """
    argv = python_argv("-m", "vpnlab", "ftp", "transfer", "--server", server)
    argv += ["--mode", mode, "--size", str(size_bytes), "--port", str(port)]
    argv += ["--file", str(Path(path).absolute())] if path else []
    try:
        done = exec_in(prefix, node, argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FtpError(f"FTP {mode} transfer from {node} took over {timeout_s} s") from None
    except LabError as exc:  # no such node or namespace: the same line, as FtpError
        raise FtpError(str(exc)) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise FtpError(lines[-1] if lines else "FTP transfer failed")
    # its last line: the JSON of transfer()'s TransferResult (vpnlab/cli/ftp.py prints it)
    result: TransferResult = json.loads(done.stdout.strip().splitlines()[-1])
    return result
