"""Key files: the pre-shared key, static keys, and the tshark ``esp_sa`` export.

Every file here holds secrets, so every file is created with mode 0600 and written whole
(a temporary file, then a rename), never readable half-written.

    psk        32 random bytes in hex: the handshake's pre-shared key (the lab writes it)
    static     a JSON file of SPIs and keys for both directions: no handshake at all
               (as ``ip xfrm`` manual keying); see ``esp.load_static_keys``
    esp_sa     Wireshark/tshark ``esp_sa`` rows, one per line, for the sessions that are up:
               ``tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<row>"``
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vpnlab.core.errors import VpnlabError


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def read_secret(path: Path, what: str) -> str:
    """Read a key file, refusing one that others may read.

    Raises:
        VpnlabError: unreadable, or readable by group or others.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise VpnlabError(f"cannot read the {what} {path}: {reason}") from None
    if mode & 0o077:
        raise VpnlabError(f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")
    return text


def read_psk(path: Path | None) -> bytes | None:
    """The pre-shared key: a file of hex (or raw text) of at least 16 bytes, mode 0600."""
    if path is None:
        return None
    text = read_secret(path, "pre-shared key").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
    if len(key) < 16:
        raise VpnlabError(f"the pre-shared key in {path} is shorter than 16 bytes")
    return key


def new_psk(path: Path) -> None:
    """Write a fresh 32-byte pre-shared key."""
    write_secret(path, os.urandom(32).hex() + "\n")


def esp_sa_text(rows: Iterable[str]) -> str:
    """The esp_sa export: a comment saying how to use it, then one row per line."""
    head = (
        "# vpnlab: tshark esp_sa rows for the sessions that are up (both directions each).\n"
        "# tshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE"
        ' -o "uat:esp_sa:<row>" ...\n'
    )
    return head + "".join(row + "\n" for row in rows)
