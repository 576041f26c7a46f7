"""CleanUp's record of a lab (``lab.json`` in its state folder), typed: what ``lab up`` writes and
every later command reads.

:class:`LabRecord` holds the namespaces, daemons and files a lab created (so that ``lab down``
removes exactly those) and the options it was built and last started with. It is turned into
JSON and back here only (``state.py`` reads and writes the file). The record carries a
``version``: a record without one was written before the field existed and reads as version 1
(the same fields), so labs made by an older vpnlab can still be inspected and taken down; a
record of a version this vpnlab does not know, or of the wrong shape, is refused with a
one-line LabError.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from vpnlab.core.errors import LabError

RECORD_VERSION = 2
"""1: the untyped record of before (no ``version`` key); 2: the same fields, with ``version``."""
KNOWN_VERSIONS = (1, 2)


@dataclass
class DaemonRecord:
    """A daemon the lab started: where it runs, how, its PID and log (``build.start_daemon``)."""

    node: str
    argv: list[str]
    pid: int
    log: str
    started: float = 0.0
    startup_s: float | None = None
    """Seconds from start until it was ready (the server's status file, a client connected)."""


@dataclass
class LabRecord:
    """What a lab created and how it was built: the input of ``teardown`` and of every command
    that acts on a lab that is up."""

    prefix: str
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    daemons: dict[str, DaemonRecord] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    topology: dict[str, object] | None = None
    """The topology's ``to_dict()`` (None: the default topology)."""
    drawn: dict[str, object] = field(default_factory=dict)
    """The values drawn for this lab at ``lab up`` (``draw.py``)."""
    cipher: str | None = None
    vpn: bool = False
    nat: bool = True
    psk: bool = False
    mode: str | None = None
    keying: str | None = None
    outer: int | None = None
    troubleshooting: bool = False
    version: int = RECORD_VERSION

    def to_json(self) -> dict[str, object]:
        """The record as ``lab.json`` holds it (always the current version)."""
        data = asdict(self)
        data["version"] = RECORD_VERSION
        return data

    @classmethod
    def from_json(cls, data: object) -> LabRecord:
        """The record of ``data`` (parsed ``lab.json``); LabError for an unknown version or a
        wrong shape."""
        if not isinstance(data, dict):
            raise LabError("lab.json is not a record of a lab (not a JSON object)")
        version = data.get("version", 1)
        if version not in KNOWN_VERSIONS:
            raise LabError(f"lab.json has record version {version!r}: this vpnlab reads 1 and 2")
        names = {f.name for f in fields(cls)}
        try:
            daemons = {
                str(name): DaemonRecord(**daemon) for name, daemon in data["daemons"].items()
            }
            values = {k: v for k, v in data.items() if k in names and k != "daemons"}
            record = cls(**values, daemons=daemons)
        except (KeyError, TypeError, AttributeError) as exc:
            raise LabError(f"lab.json is not a record of a lab ({exc})") from None
        record.version = RECORD_VERSION
        return record
