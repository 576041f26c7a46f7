"""CreateTunDev's ifreq struct (the ioctl itself needs root: see tests/lab)."""

import struct

import pytest

from vpnlab.core.errors import SetupError
from vpnlab.shell.tun import IFF_NO_PI, IFF_TUN, ifreq


def test_ifreq_layout_is_name_then_flags():
    raw = ifreq("tun0", IFF_TUN | IFF_NO_PI)
    assert len(raw) == 40
    assert raw[:16] == b"tun0" + bytes(12)
    assert struct.unpack("H", raw[16:18])[0] == 0x1001
    assert raw[18:] == bytes(22)


@pytest.mark.parametrize("name", ["", "a" * 16, "with space", "a/b"])
def test_ifreq_rejects_bad_names(name):
    with pytest.raises(SetupError):
        ifreq(name, IFF_TUN)


def test_ifreq_accepts_15_characters():
    assert ifreq("a" * 15, IFF_TUN)[:15] == b"a" * 15


def test_ifreq_too_long_name_says_how_long_and_the_limit():
    with pytest.raises(SetupError, match=r"'vpnlab-tunnel-0001' has 18 characters.*at most 15"):
        ifreq("vpnlab-tunnel-0001", IFF_TUN)


def test_ifreq_passes_a_name_template_to_the_kernel():
    # "smith%d": the kernel picks the number (smith0, smith1, ...; notebook 11 shows it)
    assert ifreq("smith%d", IFF_TUN)[:16] == b"smith%d" + bytes(9)
