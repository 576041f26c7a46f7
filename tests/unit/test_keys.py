"""Key files (vpnlab/shell/keys.py): created private, never through a planted link; passphrases
stretched."""

from __future__ import annotations

import os
import random
import stat

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vpnlab import cli
from vpnlab.core.errors import VpnlabError
from vpnlab.shell import keys
from vpnlab.wire.esp import generate_static_keys


def test_psk_is_created_0600(tmp_path):
    path = tmp_path / "psk"
    keys.new_psk(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["keys", "psk", "{tmp}"], "cannot write {tmp}: Is a directory"),
        (
            ["keys", "static", "{tmp}/file/keys"],
            "cannot write {tmp}/file/keys: {tmp}/file is not a folder",
        ),
    ],
)
def test_a_key_file_that_cannot_be_written_is_one_line(tmp_path, capsys, argv, said):
    (tmp_path / "file").write_text("")
    before = sorted(tmp_path.iterdir())
    try:
        status = cli.main([arg.format(tmp=tmp_path) for arg in argv])
    except SystemExit as usage:  # argparse's usage errors exit 2
        status = usage.code
    err = capsys.readouterr().err
    assert status in (1, 2) and err.count("\n") == 1 and said.format(tmp=tmp_path) in err, err
    assert sorted(tmp_path.iterdir()) == before  # no temporary file left beside the target


def test_write_secret_does_not_follow_a_symlink_planted_at_the_tmp_name(tmp_path):
    """Someone who can write the folder plants FILE.tmp -> a file of ours: it stays as it was."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "psk"
    (tmp_path / "psk.tmp").symlink_to(victim)
    keys.write_secret(path, "secret\n")
    assert victim.read_text() == "precious\n"
    assert path.read_text() == "secret\n" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_secret_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        keys.write_secret(tmp_path / "key", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left


def test_read_psk_stretches_a_passphrase_with_scrypt(tmp_path):
    path = tmp_path / "psk"
    keys.write_secret(path, "correct horse battery staple\n")
    expected = Scrypt(salt=b"vpnlab psk", length=32, n=2**14, r=8, p=1).derive(
        b"correct horse battery staple"
    )
    assert keys.read_psk(path) == expected != b"correct horse battery staple"
    hex_key = bytes(range(32))
    keys.write_secret(path, hex_key.hex() + "\n")
    assert keys.read_psk(path) == hex_key  # a hex key is the key itself


def static_file(tmp_path, seed: int = 1):
    path = tmp_path / "static-keys.json"
    keys.write_secret(
        path, generate_static_keys("esp-aes-gcm", random.Random(seed).randbytes).to_json()
    )
    return path


def test_read_static_keys_refuses_a_second_run_of_the_same_role(tmp_path):
    """A static SA's counter starts at 1 in every run: a second server (or client) with the
    same file would send the same GCM nonces again, and its peer's replay window restarts."""
    path, used = static_file(tmp_path), tmp_path / "used"
    first = keys.read_static_keys(path, "server", used)
    assert keys.read_static_keys(path, "client", used) == first  # the other end of the file
    with pytest.raises(VpnlabError, match="vpnlab keys static") as refused:
        keys.read_static_keys(path, "server", used)
    assert "\n" not in str(refused.value) and "used by a server" in str(refused.value)
    markers = list(used.iterdir())
    assert len(markers) == 2 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in markers)
    assert stat.S_IMODE(used.stat().st_mode) == 0o700


def test_read_static_keys_refuses_a_copy_under_another_name(tmp_path):
    """Issue 27: the marker sat beside the file and was named after it, so a copy of the key
    file ran again with the same keys and counters (GCM nonces repeated). Now the marker is
    the SAs' hash, in a state folder of its own."""
    path, used = static_file(tmp_path), tmp_path / "used"
    keys.read_static_keys(path, "server", used)
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "fresh-looking.json"
    keys.write_secret(copy, path.read_text().replace("\n", " \n"))  # another name, layout
    with pytest.raises(VpnlabError, match="used by a server"):
        keys.read_static_keys(copy, "server", used)


def test_read_static_keys_refuses_a_marker_folder_others_may_write(tmp_path):
    used = tmp_path / "used"
    used.mkdir(mode=0o777)
    used.chmod(0o777)
    with pytest.raises(VpnlabError, match="writable by it alone"):
        keys.read_static_keys(static_file(tmp_path), "server", used)


def test_read_static_keys_accepts_fresh_keys_in_the_same_file(tmp_path):
    path, used = static_file(tmp_path, seed=1), tmp_path / "used"
    keys.read_static_keys(path, "server", used)
    static_file(tmp_path, seed=2)  # what `vpnlab keys static FILE` does
    assert keys.read_static_keys(path, "server", used).client_to_server.spi
