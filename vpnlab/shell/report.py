"""What a daemon tells the student: a readable log and a JSON status file.

Log lines carry the wall-clock time, so two daemons' logs can be read side by side:

    14:02:03.120 client  state connecting -> connected  tunnel 10.8.0.2/24
    14:02:09.551 server  peer lost  192.0.2.2:4500 (no datagram for 6.0 s)

The status file (``--status-file``) is rewritten at most once a second and on every change of
state; ``vpnlab lab status`` reads it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from vpnlab.core.events import (
    DatagramDropped,
    EndpointMoved,
    Event,
    HandshakeCompleted,
    SessionClosed,
)
from vpnlab.core.reasons import DropLabel, State


def clock() -> str:
    """The wall-clock time with milliseconds, for log lines."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


class Reporter:
    """Writes log lines and the status file of one daemon."""

    def __init__(self, role: str, status_file: Path | None, stream: TextIO = sys.stdout) -> None:
        self.role = role
        self.status_file = status_file
        self.stream = stream
        self.fields: dict[str, object] = {"role": role, "pid": os.getpid(), "state": State.STARTING}
        self._written_at = 0.0
        self._seen_drops: set[DropLabel] = set()

    def log(self, message: str) -> None:
        print(f"{clock()} {self.role:<7} {message}", file=self.stream, flush=True)

    def state(self, state: State, detail: str = "") -> None:
        """Log a state change and write it to the status file at once."""
        old = self.fields.get("state")
        self.fields["state"] = state
        self.log(f"state {old} -> {state}" + (f"  {detail}" if detail else ""))
        self.write_status(force=True)

    def event(self, event: Event) -> None:
        """Log what the core reported (drops are only counted: a flood must not fill the log)."""
        if isinstance(event, HandshakeCompleted):
            self.log(f"hello from {event.peer[0]}:{event.peer[1]}: tunnel {event.tunnel_address}")
        elif isinstance(event, SessionClosed):
            self.log(f"session {event.peer[0]}:{event.peer[1]} closed: {event.reason}")
        elif isinstance(event, EndpointMoved):
            self.log(
                f"session {event.old[0]}:{event.old[1]} moved to {event.peer[0]}:{event.peer[1]}"
            )
        elif isinstance(event, DatagramDropped) and event.reason not in self._seen_drops:
            self._seen_drops.add(event.reason)
            self.log(f"dropped: {event.reason} (first time; later ones are only counted)")

    def update(self, **fields: object) -> None:
        self.fields.update(fields)

    def write_status(self, force: bool = False) -> None:
        """Rewrite the status file (atomically), at most once a second unless forced."""
        now = time.monotonic()
        if self.status_file is None or (not force and now - self._written_at < 1.0):
            return
        self._written_at = now
        self.fields["updated"] = time.time()
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(status_text(self.fields))
        os.replace(tmp, self.status_file)


def status_text(fields: dict[str, object]) -> str:
    """The status file's JSON, a field a line, each value in JSON's compact form: indented
    throughout, the encoder is pure Python (5 ms a second in the server's loop with 250
    clients); compact, it is the C one."""
    lines = [
        f" {json.dumps(key)}: {json.dumps(value, default=str)}" for key, value in fields.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"
