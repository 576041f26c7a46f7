"""Key files: the pre-shared key, static keys, and the tshark ``esp_sa`` export.

Every file here holds secrets, so every file is created with mode 0600 and written whole
(a temporary file of a fresh random name in the same folder, then a rename), never readable
half-written, and never through a link someone planted where the temporary file would go.

    psk        32 random bytes in hex: the handshake's pre-shared key (the lab writes it);
               a file that is not hex is a passphrase, stretched with scrypt
    static     a JSON file of SPIs and keys for both directions: no handshake at all
               (as ``ip xfrm`` manual keying); see ``esp.load_static_keys``. Each daemon
               claims it once (:func:`read_static_keys`): a hidden marker beside it says a
               server (or client) ran with these keys, and a second run is refused
    esp_sa     Wireshark/tshark ``esp_sa`` rows, one per line, for the sessions that are up:
               ``tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<row>"``
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vpnlab.core.errors import VpnlabError
from vpnlab.wire.esp import StaticKeys, load_static_keys

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


def read_static_keys(path: Path, role: str) -> StaticKeys:
    """Static-key mode: read the key file (mode 0600) and claim it for one run of ``role``.

    A static SA's sequence numbers start at 1 in every run, so a second run with the same
    keys would send the same GCM nonces again (and restart its replay window). The first run
    of a role leaves a marker ``.FILE.ROLE.<fingerprint>.used`` (mode 0600, made with
    O_EXCL) beside the file; a run that finds its keys' marker refuses to start. A fresh file
    (``vpnlab keys static FILE``) has a new fingerprint; the old markers are then removed.

    Args:
        role: "server" or "client" (each sends with its own SA, so each claims the file once).

    Raises:
        VpnlabError: unreadable or bad file, already used by ``role``, or no marker can be
            written (a read-only folder: better refuse than risk the nonces).
    """
    keys = load_static_keys(read_secret(path, "static key file"))
    fingerprint = hashlib.sha256(keys.to_json().encode()).hexdigest()[:16]  # not the layout
    marker = path.with_name(f".{path.name}.{role}.{fingerprint}.used")
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise VpnlabError(
            f"{path} was used by a {role} before (its counters would start again at 1 and "
            f"repeat GCM nonces): write a fresh one with `vpnlab keys static {path}`"
        ) from None
    except OSError as exc:
        raise VpnlabError(f"cannot mark {path} as used ({exc.strerror}): refusing") from None
    with os.fdopen(fd, "w") as out:
        out.write(f"{role} {os.getpid()}\n")
    for old in path.parent.glob(f".{glob.escape(path.name)}.{role}.*.used"):
        if old != marker:
            old.unlink(missing_ok=True)
    return keys


def esp_sa_text(rows: Iterable[str]) -> str:
    """The esp_sa export: a comment saying how to use it, then one row per line."""
    head = (
        "# vpnlab: tshark esp_sa rows for the sessions that are up (both directions each).\n"
        "# tshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE"
        ' -o "uat:esp_sa:<row>" ...\n'
    )
    return head + "".join(row + "\n" for row in rows)
