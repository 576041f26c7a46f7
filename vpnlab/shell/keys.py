"""Key files: the pre-shared key, static keys, and the tshark ``esp_sa`` export.

Every file here holds secrets, so every file is created with mode 0600 and written whole
(a temporary file of a fresh random name in the same folder, then a rename), never readable
half-written, and never through a link someone planted where the temporary file would go.

    psk        32 random bytes in hex: the handshake's pre-shared key (the lab writes it);
               a file that is not hex is a passphrase, stretched with scrypt
    static     a JSON file of SPIs and keys for both directions: no handshake at all
               (as ``ip xfrm`` manual keying); see ``esp.load_static_keys``. Each daemon
               claims its SAs once (:func:`read_static_keys`): a marker named by the hash
               of the SAs, in a root-owned state folder, says a server (or client) of this
               machine ran with them, and a second run is refused, whatever the file is
               called or wherever a copy lies
    esp_sa     Wireshark/tshark ``esp_sa`` rows, one per line, for the sessions that are up:
               ``tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<row>"``
"""

from __future__ import annotations

import contextlib
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


USED_STATIC_KEYS = Path("/var/lib/vpnlab/used-static-keys")
"""Where this machine remembers every static SA a daemon ran with (root-owned, 0700)."""


def write_secret(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically.

    The temporary file is made by ``mkstemp`` (O_CREAT | O_EXCL, a random name, mode 0600)
    in the same folder, so a file or link planted at a predictable name is never written.
    ``durable``: the data and the rename reach the disk (fsync of the file, then of the
    folder) before this returns, so a crash leaves the old file or the new one.

    Raises:
        VpnlabError: the folder cannot be made or written, or ``path`` is a folder.
    """
    try:
        _write_secret(path, text, durable)
    except FileExistsError as exc:  # the folders were made up to a file where one must be
        raise VpnlabError(f"cannot write {path}: {exc.filename} is not a folder") from None
    except OSError as exc:
        raise VpnlabError(f"cannot write {path}: {exc.strerror}") from None


def _write_secret(path: Path, text: str, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
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


def _used_folder(folder: Path) -> Path:
    """The folder of used-SA markers, made 0700; refused unless root owns it and only root
    may write it (a marker someone else could delete would guard nothing)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as exc:
        raise VpnlabError(
            f"cannot keep the static-key markers in {folder} ({exc.strerror}): refusing"
        ) from None
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise VpnlabError(f"{folder} must be owned by this user and writable by it alone")
    return folder


def read_static_keys(path: Path, role: str, used: Path = USED_STATIC_KEYS) -> StaticKeys:
    """Static-key mode: read the key file (mode 0600) and claim its SAs for one run of ``role``.

    A static SA's sequence numbers start at 1 in every run, so a second run with the same
    keys would send the same GCM nonces again (and restart its replay window). The first run
    of a role leaves a marker ``ROLE.<sha256 of the SAs>`` (mode 0600, made with O_EXCL) in
    ``used``, a root-owned folder of this machine; a run that finds its SAs' marker refuses to
    start, whatever the key file is called, wherever a copy of it lies. Only a fresh file
    (``vpnlab keys static FILE``: new keys, a new hash) runs again. Another machine has its
    own folder: manual keying cannot know what a copy did elsewhere (docs/daemons.md).

    Args:
        role: "server" or "client" (each sends with its own SA, so each claims the SAs once).
        used: the folder of markers (tests give a temporary one).

    Raises:
        VpnlabError: unreadable or bad file, SAs already used by ``role``, or no marker can
            be written (better refuse than risk the nonces).
    """
    keys = load_static_keys(read_secret(path, "static key file"))
    fingerprint = hashlib.sha256(keys.to_json().encode()).hexdigest()  # the SAs, not the file
    marker = _used_folder(used) / f"{role}.{fingerprint}"
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise VpnlabError(
            f"the SAs in {path} were used by a {role} of this machine before (under this or "
            f"another name: its counters would start again at 1 and repeat GCM nonces): "
            f"write fresh keys with `vpnlab keys static {path}`"
        ) from None
    except OSError as exc:
        raise VpnlabError(f"cannot mark {path} as used ({exc.strerror}): refusing") from None
    with os.fdopen(fd, "w") as out:
        out.write(f"{role} {os.getpid()} {path}\n")
    return keys


def esp_sa_text(rows: Iterable[str]) -> str:
    """The esp_sa export: a comment saying how to use it, then one row per line."""
    head = (
        "# vpnlab: tshark esp_sa rows for the sessions that are up (both directions each).\n"
        "# tshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE"
        ' -o "uat:esp_sa:<row>" ...\n'
    )
    return head + "".join(row + "\n" for row in rows)
