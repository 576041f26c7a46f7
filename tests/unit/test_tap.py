"""``--mode tap`` without root: device flags, names, MTU, and the crafted ARP reply."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Ether

from vpnlab.core.errors import SetupError
from vpnlab.course.arp import arp_reply
from vpnlab.fast.loop import FastTunnel
from vpnlab.tap import device_flags, device_mtu, device_name
from vpnlab.tun import IFF_NO_PI, IFF_TAP, IFF_TUN


def test_device_flags_tap_and_tun():
    assert device_flags("tap") == IFF_TAP | IFF_NO_PI
    assert device_flags("tun") == IFF_TUN | IFF_NO_PI
    with pytest.raises(SetupError, match="simple data path"):
        device_flags("tap", FastTunnel.tun_flags)


def test_device_name_and_mtu():
    assert device_name("tap", "tun0") == "tap0"
    assert device_name("tap", "smith0") == "smith0"
    assert device_name("tun", "tun0") == "tun0"
    assert device_mtu("tap", 1435) == 1421 and device_mtu("tun", 1435) == 1435


def test_arp_reply_answers_the_request():
    request = bytes(
        Ether(src="4e:8a:56:02:c3:98", dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc="4e:8a:56:02:c3:98", psrc="10.9.0.1", pdst="10.9.0.99")
    )
    reply = Ether(arp_reply(request, "02:00:5e:00:53:99"))
    assert reply.dst == "4e:8a:56:02:c3:98" and reply.src == "02:00:5e:00:53:99"
    arp = reply[ARP]
    assert (arp.op, arp.psrc, arp.hwsrc, arp.pdst, arp.hwdst) == (
        2,
        "10.9.0.99",
        "02:00:5e:00:53:99",
        "10.9.0.1",
        "4e:8a:56:02:c3:98",
    )
