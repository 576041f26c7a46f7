"""The captures: "client can for example, ftp to server on the tunnel" (the notes' FTP demo).

A real FTP server (pyftpdlib) on r2's tunnel address and a real client (ftplib) on r1, so that
tun0 shows the notes' ``raw:ip:tcp:ftp`` and the external interface ``...:udpencap:esp``::

    python -m vpnlab.ftp serve --listen 10.8.0.1 --root DIR          # in r2's namespace
    python -m vpnlab.ftp transfer --server 10.8.0.1 --mode active    # in r1's namespace
    python -m vpnlab.ftp get --server 10.8.0.1 --name FILE           # anonymous, read only

``transfer`` logs in as the writable user, uploads a file (STOR), downloads it again (RETR) and
compares the SHA-256 of both. In passive mode the client opens the data connection to the
server; in active mode (PORT) the server connects back to the client's tunnel address
(10.8.0.2), through the tunnel the other way. Everything is bounded: the server's lifetime,
its connections, the size of an upload, and every client socket has a timeout.

From Python (as root, with a lab up) :func:`lab_server` and :func:`lab_transfer` do the same
inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import hashlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.errors import VpnlabError

FTP_PORT = 21
USER = "vpnlab"
PASSWORD = "vpnlab"
"""The writable account: a teaching lab's FTP on a tunnel-only address, not a secret."""
LIFETIME_S = 600.0
"""The server exits by itself after this long, even if nobody stops it."""
MAX_CONNECTIONS = 16
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
CLIENT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 5.0
READY_LINE = "vpnlab-ftp listening on"
MODES = ("passive", "active")


class FtpError(VpnlabError):
    """The FTP server could not start, or a transfer failed."""


# --- the server ---------------------------------------------------------------------------------


def make_server(
    listen: str,
    root: str | Path,
    port: int = FTP_PORT,
    user: str = USER,
    password: str = PASSWORD,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
):
    """ServerConnection's FTP: a pyftpdlib server, anonymous read-only plus one writable user.

    Raises:
        FtpError: the root is not a directory, or the address cannot be bound.
    """
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.servers import FTPServer

    root = Path(root)
    if not root.is_dir():
        raise FtpError(f"FTP root {root} is not a directory")

    class LimitedDTPHandler(DTPHandler):
        """A data connection that aborts an upload larger than ``max_upload_bytes``."""

        def handle_read(self) -> None:
            super().handle_read()
            if self.tot_bytes_received > max_upload_bytes:
                self.close()

        handle_read_event = handle_read

    class Rfc959ActiveDTP(FTPHandler.active_dtp):
        """Active mode from port L-1 (20), as RFC 959 says: tshark then labels it ftp-data."""

        def bind(self, addr) -> None:
            self.set_reuse_addr()
            super().bind(addr)

        def connect_af_unspecified(self, addr, source_address=None):
            if source_address and port > 1:
                with contextlib.suppress(OSError):  # not root: any source port will do
                    return super().connect_af_unspecified(addr, (source_address[0], port - 1))
            return super().connect_af_unspecified(addr, source_address)

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmw")
    authorizer.add_anonymous(str(root), perm="elr")
    handler = type("VpnlabFTPHandler", (FTPHandler,), {})
    handler.authorizer = authorizer
    handler.dtp_handler = LimitedDTPHandler
    handler.active_dtp = Rfc959ActiveDTP
    handler.banner = "vpnlab FTP on the tunnel"
    handler.timeout = 60
    try:
        server = FTPServer((listen, port), handler)
    except OSError as exc:
        raise FtpError(f"cannot listen on {listen}:{port}: {exc.strerror}") from None
    server.max_cons = MAX_CONNECTIONS
    return server


def serve(
    listen: str,
    root: str | Path,
    port: int = FTP_PORT,
    lifetime_s: float = LIFETIME_S,
    user: str = USER,
    password: str = PASSWORD,
) -> int:
    """Run the FTP server until SIGTERM/SIGINT or ``lifetime_s``; prints READY_LINE once bound."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    server = make_server(listen, root, port, user, password)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"{READY_LINE} {listen}:{port} root {root}", flush=True)
    deadline = time.monotonic() + lifetime_s
    try:
        while time.monotonic() < deadline:
            server.serve_forever(timeout=0.5, blocking=False, handle_exit=False)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close_all()
    return 0


# --- the client ---------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _connect(server: str, port: int, mode: str, timeout_s: float) -> ftplib.FTP:
    if mode not in MODES:
        raise FtpError(f"unknown FTP mode {mode!r} (choose from {', '.join(MODES)})")
    ftp = ftplib.FTP(timeout=timeout_s)
    ftp.connect(server, port)
    return ftp


def transfer(
    server: str,
    mode: str = "passive",
    data: bytes | None = None,
    size_bytes: int = 4096,
    name: str = "vpnlab-transfer.bin",
    port: int = FTP_PORT,
    user: str = USER,
    password: str = PASSWORD,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> dict:
    """ClientConnection's FTP: log in, STOR ``data``, RETR it back, compare SHA-256, QUIT.

    Returns:
        ``{"mode", "bytes", "sha256_sent", "sha256_received", "ok", "seconds"}``.

    Raises:
        FtpError: no connection, a refused login or command, a timeout.
    """
    if data is None:
        data = os.urandom(size_bytes)
    if len(data) > MAX_UPLOAD_BYTES:
        raise FtpError(f"upload of {len(data)} bytes is over the {MAX_UPLOAD_BYTES} limit")
    received = io.BytesIO()
    started = time.monotonic()
    try:
        ftp = _connect(server, port, mode, timeout_s)
        with ftp:
            ftp.login(user, password)
            ftp.set_pasv(mode == "passive")
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
            ftp.retrbinary(f"RETR {name}", received.write)
            ftp.quit()
    except (OSError, EOFError, ftplib.Error) as exc:
        raise FtpError(f"FTP {mode} transfer with {server} failed: {exc}") from None
    got = received.getvalue()
    return {
        "mode": mode,
        "bytes": len(data),
        "sha256_sent": sha256(data),
        "sha256_received": sha256(got),
        "ok": got == data,
        "seconds": round(time.monotonic() - started, 3),
    }


def get(
    server: str,
    name: str,
    mode: str = "passive",
    port: int = FTP_PORT,
    timeout_s: float = CLIENT_TIMEOUT_S,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> dict:
    """Anonymous read: RETR ``name``; returns ``{"mode", "name", "bytes", "sha256"}``."""
    received = io.BytesIO()

    def keep(chunk: bytes) -> None:
        if received.tell() + len(chunk) > max_bytes:
            raise FtpError(f"{name} is larger than {max_bytes} bytes")
        received.write(chunk)

    try:
        ftp = _connect(server, port, mode, timeout_s)
        with ftp:
            ftp.login()
            ftp.set_pasv(mode == "passive")
            ftp.retrbinary(f"RETR {name}", keep)
            ftp.quit()
    except (OSError, EOFError, ftplib.Error) as exc:
        raise FtpError(f"anonymous FTP get of {name} from {server} failed: {exc}") from None
    got = received.getvalue()
    return {"mode": mode, "name": name, "bytes": len(got), "sha256": sha256(got)}


# --- in the lab ---------------------------------------------------------------------------------


def _namespace(prefix: str, node: str) -> str:
    from vpnlab.lab import state

    ns = state.namespace(state.check_prefix(prefix), node)
    if not state.ns_exists(ns):
        raise FtpError(f"namespace {ns} does not exist: is the lab up? (vpnlab lab up)")
    return ns


@dataclass
class LabFtpServer:
    """A running ``vpnlab.ftp serve`` inside a lab node (see :func:`lab_server`)."""

    namespace: str
    address: str
    port: int
    root: Path
    process: subprocess.Popen

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
    ns = _namespace(prefix, node)
    made = root is None
    folder = Path(tempfile.mkdtemp(prefix="vpnlab-ftp-")) if made else Path(root)
    argv = [sys.executable, "-m", "vpnlab.ftp", "serve", "--listen", listen, "--port", str(port)]
    argv += ["--root", str(folder), "--lifetime", str(lifetime_s)]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    handle = LabFtpServer(ns, listen, port, folder, proc)
    try:
        _wait_ready(proc)
        yield handle
    finally:
        handle.stop()
        if made:
            shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
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
) -> dict:
    """:func:`transfer` run inside ``{prefix}{node}`` (the VPN client); returns its result.

    Uploads ``size_bytes`` of random data, or the file at ``path``.

    Raises:
        FtpError: the transfer failed (its one-line reason) or took longer than ``timeout_s``.
    """
    ns = _namespace(prefix, node)
    argv = [sys.executable, "-m", "vpnlab.ftp", "transfer", "--server", server, "--mode", mode]
    argv += ["--size", str(size_bytes), "--port", str(port)]
    argv += ["--file", str(Path(path).absolute())] if path else []
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise FtpError(f"FTP {mode} transfer from {node} took over {timeout_s} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise FtpError(lines[-1] if lines else "FTP transfer failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- python -m vpnlab.ftp -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m vpnlab.ftp serve|transfer|get``; errors are one line and exit 1."""
    parser = argparse.ArgumentParser(prog="python -m vpnlab.ftp", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="FTP server (run it in r2's namespace)")
    p.add_argument("--listen", default="10.8.0.1")
    p.add_argument("--port", type=int, default=FTP_PORT)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--lifetime", type=float, default=LIFETIME_S, help="seconds before exiting")
    for name, helptext in (("transfer", "STOR + RETR + SHA-256 check"), ("get", "anonymous RETR")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--server", default="10.8.0.1")
        p.add_argument("--port", type=int, default=FTP_PORT)
        p.add_argument("--mode", choices=MODES, default="passive")
        p.add_argument("--timeout", type=float, default=CLIENT_TIMEOUT_S)
        if name == "transfer":
            p.add_argument("--size", type=int, default=4096, help="bytes of random data")
            p.add_argument("--file", type=Path, help="upload this file instead")
        else:
            p.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args.listen, args.root, args.port, args.lifetime)
        if args.command == "transfer":
            data = args.file.read_bytes() if args.file else None
            result = transfer(
                args.server, args.mode, data, args.size, port=args.port, timeout_s=args.timeout
            )
        else:
            result = get(args.server, args.name, args.mode, args.port, args.timeout)
    except (VpnlabError, OSError) as exc:
        print(f"vpnlab ftp: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    if args.command == "transfer" and not result["ok"]:
        print("vpnlab ftp: error: SHA-256 mismatch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
