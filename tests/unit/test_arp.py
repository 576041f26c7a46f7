"""The classic ARP experiment's reply (vpnlab/course/arp.py), crafted without root."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from vpnlab.course.arp import arp_reply


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
