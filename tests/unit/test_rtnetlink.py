"""rtnetlink.py's messages, byte by byte: what ``ip`` would send, and the kernel's answers.

The requests against a real kernel are in tests/lab/test_rtnetlink.py (a namespace of their own).
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import ip_address, ip_network

import pytest

from vpnlab.shell import rtnetlink
from vpnlab.shell.rtnetlink import (
    NLMSG_ERROR,
    NLMSGHDR,
    RTMSG,
    Message,
    NetlinkError,
    Route,
    attributes,
    check_ack,
    decode,
    encode,
    parse_route,
    rtattr,
)


def test_an_attribute_is_padded_to_four_bytes_but_its_length_is_not():
    assert rtattr(rtnetlink.IFLA_MTU, struct.pack("=I", 1400)) == bytes.fromhex(
        "0800 0400 78050000"
    )
    odd = rtattr(3, b"tun0\0")  # IFLA_IFNAME: 5 bytes of value
    assert odd == struct.pack("=HH", 9, 3) + b"tun0\0" + bytes(3)


def test_encode_puts_the_header_with_the_whole_length_in_front():
    body = bytes(12)
    data = encode(rtnetlink.RTM_NEWROUTE, rtnetlink.NLM_F_REQUEST, 7, body)
    assert NLMSGHDR.unpack_from(data) == (28, 24, 1, 7, 0)
    assert data[16:] == body


def test_decode_splits_a_datagram_into_its_messages():
    first = encode(rtnetlink.RTM_NEWROUTE, 0, 1, b"abcde")  # 21 bytes, padded to 24 in a batch
    second = encode(rtnetlink.NLMSG_DONE, 2, 1, bytes(4))
    data = first + bytes(-len(first) % 4) + second
    assert decode(data) == [Message(24, 0, 1, b"abcde"), Message(3, 2, 1, bytes(4))]


def test_decode_refuses_a_length_past_the_datagram():
    data = encode(rtnetlink.RTM_NEWROUTE, 0, 1, bytes(8))[:20]
    with pytest.raises(NetlinkError, match="message of 24 bytes in a short read") as info:
        decode(data)
    assert info.value.errno == errno.EBADMSG


def test_attributes_by_type_without_padding_or_nla_flags():
    data = rtattr(1, b"\x0a\x08\x00\x00") + rtattr(0x8000 | 4, struct.pack("=i", 5))
    assert attributes(data) == {1: b"\x0a\x08\x00\x00", 4: struct.pack("=i", 5)}


def error_message(error: int, flags: int = 0, tlvs: bytes = b"") -> Message:
    echoed = NLMSGHDR.pack(32, rtnetlink.RTM_NEWROUTE, 0x405, 9, 0)
    return Message(NLMSG_ERROR, flags, 9, struct.pack("=i", error) + echoed + tlvs)


def test_error_zero_is_the_acknowledgement():
    check_ack(error_message(0), "route replace 10.8.0.0/24")  # returns: nothing raised


def test_a_negative_errno_is_one_line_naming_the_request():
    with pytest.raises(NetlinkError) as info:
        check_ack(error_message(-errno.EEXIST), "route replace 10.8.0.0/24")
    assert info.value.errno == errno.EEXIST
    assert str(info.value) == "route replace 10.8.0.0/24: File exists"


def test_the_extended_ack_gives_the_reason_in_words():
    flags = rtnetlink.NLM_F_CAPPED | rtnetlink.NLM_F_ACK_TLVS
    tlvs = rtattr(rtnetlink.NLMSGERR_ATTR_MSG, b"Nexthop has invalid gateway\0")
    with pytest.raises(NetlinkError) as info:
        check_ack(error_message(-errno.EINVAL, flags, tlvs), "route replace 10.0.0.0/8")
    assert str(info.value) == (
        "route replace 10.0.0.0/8: Invalid argument (Nexthop has invalid gateway)"
    )
    assert "\n" not in str(info.value)


def test_parse_route_reads_what_route_get_answers():
    body = RTMSG.pack(socket.AF_INET, 32, 0, 0, 254, 3, 0, 1, 0)
    body += rtattr(rtnetlink.RTA_DST, ip_address("203.0.113.10").packed)
    body += rtattr(rtnetlink.RTA_OIF, struct.pack("=i", 3))
    body += rtattr(rtnetlink.RTA_GATEWAY, ip_address("198.51.100.1").packed)
    route = parse_route(Message(rtnetlink.RTM_NEWROUTE, 0, 1, body))
    assert route == Route(ip_network("203.0.113.10/32"), 3, ip_address("198.51.100.1"))


def test_parse_route_without_a_destination_is_the_default_route():
    body = RTMSG.pack(socket.AF_INET6, 0, 0, 0, 254, 3, 0, rtnetlink.RTN_UNREACHABLE, 0)
    route = parse_route(Message(rtnetlink.RTM_NEWROUTE, 0, 1, body))
    assert route == Route(ip_network("::/0"), kind="unreachable")


def test_a_route_says_itself_as_ip_would():
    assert str(Route(ip_network("0.0.0.0/1"), 4)) == "0.0.0.0/1 dev #4"
    via = Route(ip_network("10.0.0.0/8"), 2, ip_address("10.8.0.1"))
    assert str(via) == "10.0.0.0/8 via 10.8.0.1 dev #2"
    assert str(Route(ip_network("::/1"), kind="unreachable")) == "unreachable ::/1"


def test_link_index_of_a_missing_interface_is_one_line():
    with pytest.raises(NetlinkError, match="^no interface nosuch0$") as info:
        rtnetlink.link_index("nosuch0")
    assert info.value.errno == errno.ENODEV
