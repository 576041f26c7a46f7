"""The hub's grader service: a student asks it to check their live lab; it answers from outside.

A JupyterHub service (``deploy/jupyterhub/grader_service.py``): the hub starts
``vpnlab grader serve`` as root; it forks the enterer (``enter.py``, the one part that keeps
root, to enter students' labs) and drops, for everything else, to its own Unix user
(``vpnlab-grader``, made by the class install): HTTP, the hub API, judging, its SQLite store
(``store.py``, 0600 in a 0700 folder of that user). No student can read the store or signal
either process (other uids).

Who asks: every request carries the student's hub token (``Authorization: token ...``, the
``JUPYTERHUB_API_TOKEN`` of their single-user server); the service asks the hub who owns it
(``HubAuth.user_for_token``) and judges that user's lab. A name in the request is never read.

    POST .../fault                 a fault drawn for you, injected into your troubleshooting
                                   lab: {"ticket"} (the symptom only)
    POST .../check  {"item": "lab"}            your lab's end-to-end checks (or your open fault)
    POST .../check  {"item": "3.1", "answer"}  a live exercise
    GET  .../attempts              your own attempts, as the store keeps them
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.lab.state import check_prefix

from .enter import Enterer, serve_enterer
from .judging import Enter, StudentLab, check_exercise, check_lab, give_fault
from .store import Store, open_store

MAX_BODY = 64 * 1024
Identify = Callable[[str], str | None]
"""A hub token -> the name of the hub user who owns it, or None."""


def hub_identify(service_name: str = "vpnlab-grader") -> Identify:
    """Ask the hub (``JUPYTERHUB_API_URL``, with the service's ``JUPYTERHUB_API_TOKEN``) whose
    token it is; the token must allow access to this service."""
    from jupyterhub.services.auth import HubAuth

    auth = HubAuth(cache_max_age=0)
    access = {f"access:services!service={service_name}"}

    def identify(token: str) -> str | None:
        model = auth.user_for_token(token, use_cache=False)
        if not model or model.get("kind", "user") != "user" or "scopes" not in model:
            return None
        return str(model["name"]) if auth.check_scopes(access, model) else None

    return identify


class GraderService:
    """Judging for the requests of :class:`Handler`: the store, the enterer, the hub."""

    def __init__(self, store: Store, enter: Enter, identify: Identify, prefix: str) -> None:
        self.store = store
        self.enter = enter
        self.identify = identify
        self.prefix = prefix

    def answer(self, method: str, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request; LabError for what the student gets as an error."""
        student = self.identify(token) if token else None
        if student is None:
            raise PermissionError("not a hub user's token with access to the grader")
        # which of the student's labs (a notebook's own, nb05-; the troubleshooting lab): only
        # ever one in the student's own holder (the enterer sees no other), and a fault is
        # judged against the marks of the lab it was injected into, so no other lab passes it
        lab = StudentLab(self.enter, student, check_prefix(str(body.get("prefix") or self.prefix)))
        verb = path.rstrip("/").rsplit("/", 1)[-1]
        if method == "GET" and verb == "attempts":
            return {
                "student": student,
                "attempts": [asdict(a) for a in self.store.attempts(student)],
            }
        if method == "POST" and verb == "fault":
            return give_fault(self.store, lab)
        if method == "POST" and verb == "check":
            item = str(body.get("item", "lab"))
            if item in ("lab", "fault"):
                return check_lab(self.store, lab)
            return check_exercise(self.store, lab, item, body.get("answer"))
        raise LookupError(f"no {method} {verb}")


class Handler(BaseHTTPRequestHandler):
    """One request: its JSON body in, :meth:`GraderService.answer` out, errors as JSON."""

    service: GraderService

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        header = self.headers.get("Authorization", "")
        token = header.split(None, 1)[1] if header.lower().startswith("token ") else ""
        try:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = json.loads(self.rfile.read(length) or b"{}") if method == "POST" else {}
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
            code, reply = 200, self.service.answer(method, self.path, token, body)
        except PermissionError as exc:
            code, reply = 403, {"error": str(exc)}
        except LookupError as exc:
            code, reply = 404, {"error": str(exc)}
        except (LabError, ValueError) as exc:
            code, reply = 400, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 (a bug of ours: logged, the service goes on)
            traceback.print_exc()
            code, reply = 500, {"error": f"the grader failed: {type(exc).__name__}"}
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"grader: {self.address_string()} {format % args}\n")


def drop_to(user: str) -> None:
    """Become ``user`` for good (no supplementary groups, no way back)."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)


def start_enterer(service_uid: int) -> tuple[int, Enterer]:
    """Fork the enterer (it keeps root); returns its PID and the handle on it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # EOF: service gone
    pid = os.fork()
    if pid == 0:  # the enterer: root, serving until the service closes its end
        ours.close()
        try:
            serve_enterer(theirs, service_uid)
        finally:
            os._exit(0)
    theirs.close()
    return pid, Enterer(ours)


def serve(user: str, store_path: Path, port: int, prefix: str, listen: str = "127.0.0.1") -> int:
    """``vpnlab grader serve``: started as root; serves until SIGTERM or SIGINT."""
    if os.geteuid() != 0:
        raise LabError(
            "the grader starts as root (its enterer keeps root; the rest runs as --user)"
        )
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise LabError(f"no user {user!r}: the class install makes it (scripts/setup.sh)") from None
    identify = hub_identify()  # jupyterhub imported while root can read every file
    enterer_pid, enterer = start_enterer(uid)
    stop_on_signals()
    drop_to(user)
    store = open_store(store_path)
    Handler.service = GraderService(store, enterer.run, identify, prefix)
    server = ThreadingHTTPServer((listen, port), Handler)
    print(f"grader: listening on {listen}:{port} as {user}, enterer pid {enterer_pid}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        enterer.channel.close()  # the enterer ends
        reap(enterer_pid)
        store.close()
    return 0


def stop_on_signals() -> None:
    """SIGINT and SIGTERM end the service through its clean-up (the enterer's channel closed,
    the enterer collected, the store closed), whatever the service inherited: the hub stops a
    service with SIGINT and only 10 s later with SIGTERM, and a process started from a
    background job inherits SIGINT ignored (a hub started so kept its service for 10 s, then
    was itself stopped before its SIGTERM, and the service and the root enterer lived on)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def reap(pid: int, timeout_s: float = 10.0) -> None:
    """Wait (at most ``timeout_s``) for the enterer to end once its channel is closed, and
    collect its exit: a child never waited for stays a zombie until PID 1 finds it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ended, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already collected (or never ours)
            return
        if ended or time.monotonic() >= deadline:
            return
        time.sleep(0.05)
