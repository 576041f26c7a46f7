"""The rootless lab's refusals, read from the host (the lab tests make the namespaces).

``userns_refusal`` reads the sysctls that switch unprivileged user namespaces off; each gives
one line with the fix. ``check_tun`` refuses what is not the TUN device.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vpnlab.core.errors import LabError
from vpnlab.lab import rootless


def sysctls(folder: Path, **values: int) -> Path:
    """A /proc/sys-like folder holding ``values`` (``kernel__x`` is ``kernel/x``)."""
    for name, value in values.items():
        path = folder / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return folder


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"kernel__unprivileged_userns_clone": 0}, "kernel.unprivileged_userns_clone=1"),
        ({"user__max_user_namespaces": 0}, "user.max_user_namespaces"),
        (
            {"kernel__apparmor_restrict_unprivileged_userns": 1},
            "apparmor_parser -r /etc/apparmor.d/vpnlab-unshare",
        ),
    ],
)
def test_each_refusal_is_one_line_with_its_fix(tmp_path, values, words):
    message = rootless.userns_refusal(sysctls(tmp_path, **values))
    assert message is not None and "\n" not in message
    assert words in message and "sudo" in message


def test_a_host_that_allows_user_namespaces_is_not_refused(tmp_path):
    folder = sysctls(
        tmp_path,
        kernel__unprivileged_userns_clone=1,
        user__max_user_namespaces=15000,
        kernel__apparmor_restrict_unprivileged_userns=0,
    )
    assert rootless.userns_refusal(folder) is None
    assert rootless.userns_refusal(tmp_path / "absent") is None  # a kernel without the knobs


def test_the_apparmor_profile_named_in_the_fix_exists():
    repo = Path(__file__).resolve().parents[2]
    profile = (repo / rootless.APPARMOR_PROFILE).read_text()
    assert "userns," in profile and "/usr/bin/unshare" in profile


def test_check_tun_refuses_what_is_not_the_tun_device(tmp_path):
    plain = tmp_path / "tun"
    plain.write_text("")
    with pytest.raises(LabError, match="is not the TUN device"):
        rootless.check_tun(str(plain))
    with pytest.raises(LabError, match="No such file"):
        rootless.check_tun(str(tmp_path / "missing"))


def test_check_tun_accepts_the_hosts_device_for_root():
    if not os.path.exists("/dev/net/tun") or os.geteuid() != 0:
        pytest.skip("needs /dev/net/tun and root (os.access as root)")
    rootless.check_tun("/dev/net/tun")


def test_state_of_a_user_goes_under_their_vpnlab_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VPNLAB_HOME", str(tmp_path / "v"))
    monkeypatch.delenv("VPNLAB_STATE_DIR", raising=False)
    env = rootless.inside_env()
    assert env["VPNLAB_STATE_DIR"] == str(tmp_path / "v" / "labs")
    assert (tmp_path / "v").stat().st_mode & 0o777 == 0o700
    argv = rootless.enter_argv(1234, ["vpnlab", "lab", "status"])
    assert argv[:3] == ["nsenter", "-t", "1234"] and "--preserve-credentials" in argv
    assert argv[-3:] == ["vpnlab", "lab", "status"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("unshare: mount /proc failed: Operation not permitted", "procMount: Unmasked"),
        ("unshare: unshare failed: Operation not permitted", "seccompProfile Unconfined"),
        ("sh: 1: mount: not found", "could not start the lab's holder: sh: 1: mount"),
    ],
)
def test_a_containers_refusal_names_its_setting(line, words):
    """Seen while running the image's entry point in a container (see README, image)."""
    message = rootless._container_refusal(line)
    assert words in message and "\n" not in message
