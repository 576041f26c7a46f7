"""The design notes' numbers (vpnlab/core/constants.py): tun0's MTU from each format's overhead."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP

from vpnlab.core.constants import tun_mtu
from vpnlab.wire.crypto import algorithm
from vpnlab.wire.esp import generate_static_keys
from vpnlab.wire.plain import PLAIN


def test_tun_mtu_is_derived_from_each_formats_overhead():
    assert tun_mtu(algorithm("esp-aes-gcm").overhead_bytes) == 1435
    assert tun_mtu(algorithm("esp-null").overhead_bytes) == 1443
    assert tun_mtu(PLAIN.overhead_bytes) == 1472
    # the largest inner packet still gives a 1500-byte outer packet, never more
    keys = generate_static_keys("esp-aes-gcm", random.Random(1).randbytes)
    session = keys.server()
    inner = bytes(IP(dst="10.8.0.2") / TCP() / bytes(1435 - 40))
    assert 20 + 8 + len(session.seal(inner)) <= 1500
