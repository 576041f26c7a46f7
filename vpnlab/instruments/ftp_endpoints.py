"""The FTP of the notes' demo ("client can for example, ftp to server on the tunnel"): both ends.

A real FTP server (pyftpdlib), anonymous read-only plus one writable user, and a real client
(ftplib), nothing of the lab in either: ``ftp.py`` runs them inside lab nodes
(``vpnlab ftp serve|transfer|get`` there).

:func:`transfer` logs in as the writable user, uploads a file (STOR), downloads it again (RETR)
and compares the SHA-256 of both. In passive mode the client opens the data connection to the
server; in active mode (PORT) the server connects back to the client. Everything is bounded:
the server's lifetime, its connections, the size of an upload, and every client socket has a
timeout.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TypedDict

from vpnlab.core.errors import VpnlabError

if TYPE_CHECKING:  # imported where used: only the server needs pyftpdlib (untyped)
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

FTP_PORT = 21
USER = "vpnlab"
PASSWORD = "vpnlab"
"""The writable account: a teaching lab's FTP on a tunnel-only address, not a secret."""
LIFETIME_S = 600.0
"""The server exits by itself after this long, even if nobody stops it."""
MAX_CONNECTIONS = 16
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
CLIENT_TIMEOUT_S = 10.0
READY_LINE = "vpnlab-ftp listening on"
MODES = ("passive", "active")


class FtpError(VpnlabError):
    """The FTP server could not start, or a transfer failed."""


class TransferResult(TypedDict):
    """What :func:`transfer` did (``vpnlab ftp transfer`` prints it as one JSON line)."""

    mode: str
    bytes: int
    sha256_sent: str
    sha256_received: str
    ok: bool
    seconds: float


class GetResult(TypedDict):
    """What :func:`get` fetched (``vpnlab ftp get`` prints it as one JSON line)."""

    mode: str
    name: str
    bytes: int
    sha256: str


# --- the server ---------------------------------------------------------------------------------


def make_ftp_server(
    listen: str,
    root: str | Path,
    port: int = FTP_PORT,
    user: str = USER,
    password: str = PASSWORD,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FTPServer:
    """ServerConnection's FTP: a pyftpdlib server, anonymous read-only plus one writable user.

    Raises:
        FtpError: the root is not a directory, or the address cannot be bound.
    """
    from pyftpdlib.servers import FTPServer

    root = Path(root)
    if not root.is_dir():
        raise FtpError(f"FTP root {root} is not a directory")
    handler = _handler_class(port, max_upload_bytes)
    handler.authorizer.add_user(user, password, str(root), perm="elradfmw")
    handler.authorizer.add_anonymous(str(root), perm="elr")
    try:
        server = FTPServer((listen, port), handler)
    except OSError as exc:
        raise FtpError(f"cannot listen on {listen}:{port}: {exc.strerror}") from None
    server.max_cons = MAX_CONNECTIONS
    return server


def _handler_class(port: int, max_upload_bytes: int) -> type[FTPHandler]:
    """The control connection of :func:`make_ftp_server`'s server: an authorizer of its own,
    uploads of at most ``max_upload_bytes``, active mode from ``port`` - 1."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler

    class LimitedDTPHandler(DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
        """A data connection that aborts an upload larger than ``max_upload_bytes``."""

        def handle_read(self) -> None:
            super().handle_read()
            if self.tot_bytes_received > max_upload_bytes:
                self.close()

        handle_read_event = handle_read

    class Rfc959ActiveDTP(FTPHandler.active_dtp):  # type: ignore[misc]  # pyftpdlib is untyped
        """Active mode from port L-1 (20), as RFC 959 says: tshark then labels it ftp-data."""

        def bind(self, addr: tuple[str, int]) -> None:
            self.set_reuse_addr()
            super().bind(addr)

        def connect_af_unspecified(
            self, addr: tuple[str, int], source_address: tuple[str, int] | None = None
        ) -> socket.AddressFamily:
            family: socket.AddressFamily  # pyftpdlib's (untyped): the family getaddrinfo gave
            if source_address and port > 1:
                with contextlib.suppress(OSError):  # not root: any source port will do
                    family = super().connect_af_unspecified(addr, (source_address[0], port - 1))
                    return family
            family = super().connect_af_unspecified(addr, source_address)
            return family

    class VpnlabFTPHandler(FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
        """The control connection."""

        authorizer = DummyAuthorizer()
        dtp_handler = LimitedDTPHandler
        active_dtp = Rfc959ActiveDTP
        banner = "vpnlab FTP on the tunnel"
        timeout = 60

    return VpnlabFTPHandler


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
    server = make_ftp_server(listen, root, port, user, password)

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
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
) -> TransferResult:
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
) -> GetResult:
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
