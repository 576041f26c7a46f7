"""tap.py without root: the TUNSETIFF flags of ``--mode tap`` and of each data path, names, MTU.

The ARP reply of the classic experiment (vpnlab/course/arp.py): test_arp.py.
"""

from __future__ import annotations

import pytest

from vpnlab.core.errors import SetupError
from vpnlab.fast.datapath import FastDatapath
from vpnlab.fast.offload import IFF_VNET_HDR
from vpnlab.shell.tap import device_flags, device_mtu, device_name
from vpnlab.shell.tun import IFF_NO_PI, IFF_TAP, IFF_TUN
from vpnlab.shell.tunnel import SimpleDatapath


def test_device_flags_tap_and_tun():
    assert device_flags("tap") == IFF_TAP | IFF_NO_PI
    assert device_flags("tun") == IFF_TUN | IFF_NO_PI
    with pytest.raises(SetupError, match="simple data path"):
        device_flags("tap", FastDatapath.tun_flags)


def test_device_name_and_mtu():
    assert device_name("tap", "tun0") == "tap0"
    assert device_name("tap", "smith0") == "smith0"
    assert device_name("tun", "tun0") == "tun0"
    assert device_mtu("tap", 1435) == 1421 and device_mtu("tun", 1435) == 1435


def test_tun_flags_add_vnet_hdr_only_on_the_fast_path():
    assert device_flags("tun", FastDatapath.tun_flags) & IFF_VNET_HDR
    assert not device_flags("tun", SimpleDatapath.tun_flags) & IFF_VNET_HDR
