"""Key files: the pre-shared key, static keys, and the tshark ``esp_sa`` export.

Every file here holds secrets, so every file is created with mode 0600 and written whole
(a temporary file of a fresh random name in the same folder, then a rename), never readable
half-written, and never through a link someone planted where the temporary file would go.

    psk        32 random bytes in hex: the handshake's pre-shared key (the lab writes it);
               a file that is not hex is a passphrase, stretched with scrypt
    static     a JSON file of SPIs and keys for both directions: no handshake at all
               (as ``ip xfrm`` manual keying); see ``esp.load_static_keys``
    esp_sa     Wireshark/tshark ``esp_sa`` rows, one per line, for the sessions that are up:
               ``tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<row>"``
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vpnlab.core.errors import VpnlabError

PASSPHRASE_SALT = b"vpnlab psk"
"""Fixed, so both ends derive the same key from the same passphrase (it is not secret)."""
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically.

    The temporary file is made by ``mkstemp`` (O_CREAT | O_EXCL, a random name, mode 0600)
    in the same folder, so a file or link planted at a predictable name is never written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    """The pre-shared key: a file of hex, or a passphrase, of at least 16 bytes, mode 0600.

    A passphrase (anything that is not hex) is stretched with scrypt (n=2**14, r=8, p=1, a
    fixed salt) into a 32-byte key, so a guessable word is not the key itself.
    """
    if path is None:
        return None
    text = read_secret(path, "pre-shared key").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
        if len(key) >= 16:
            key = passphrase_key(key)
    if len(key) < 16:
        raise VpnlabError(f"the pre-shared key in {path} is shorter than 16 bytes")
    return key


def passphrase_key(passphrase: bytes) -> bytes:
    """The 32-byte key a passphrase stands for (scrypt, as ``read_psk`` uses it)."""
    kdf = Scrypt(salt=PASSPHRASE_SALT, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase)


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
