"""rtnetlink.py against the kernel: what it sets, ``ip -j`` reads back the same.

A namespace of the test's own with a veth pair, d0 and d1 (d0 is to the test what tun0 is to the
daemons: a device of the namespace); the requests run inside it (``ip netns exec``) and the
namespace is deleted in ``finally``, also when an assertion fails.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab

REQUESTS = """
import json
from ipaddress import ip_address, ip_interface, ip_network
from vpnlab.shell.rtnetlink import NetlinkError, Route, Rtnetlink, link_index
from vpnlab.shell.tun import IFA_F_NODAD

with Rtnetlink() as netlink:
    index = link_index("d0")
    netlink.set_link(index, mtu=1400, txqueuelen=7)
    netlink.replace_address(index, ip_interface("10.8.0.1/24"))
    netlink.replace_address(index, ip_interface("fd10:8::1/64"), IFA_F_NODAD)
    netlink.set_link(index, up=True)
    routes = [
        Route(ip_network("192.0.2.0/24"), index),
        Route(ip_network("198.51.100.0/24"), index, ip_address("10.8.0.254")),
        Route(ip_network("2001:db8:1::/48"), index),
        Route(ip_network("203.0.113.0/24"), kind="unreachable"),
        Route(ip_network("2001:db8:2::/48"), kind="unreachable"),
    ]
    for route in routes:
        netlink.replace_route(route)
    netlink.replace_route(routes[0])  # replace: a second time is no error
    netlink.delete_route(routes[2])
    path = netlink.get_route(ip_address("198.51.100.7"))
    errors = []
    off_link = ip_address("203.0.113.1")  # inside the unreachable route
    for bad in (
        lambda: netlink.replace_route(Route(ip_network("10.0.0.0/8"), index, off_link)),
        lambda: netlink.delete_route(routes[2]),
        lambda: netlink.set_link(index + 100, up=True),
        lambda: link_index("nosuch0"),
    ):
        try:
            bad()
        except NetlinkError as exc:
            errors.append([exc.errno, str(exc)])
answer = {"index": index, "path": [str(path.dst), path.oif, str(path.gateway)], "errors": errors}
print(json.dumps(answer))
"""


def ip_json(namespace: str, *args: str) -> list[dict]:
    done = subprocess.run(["ip", "-n", namespace, "-j", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "[]")


def test_links_addresses_and_routes_read_back_by_ip(prefix):
    namespace = f"{prefix}rt"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        ns = ["ip", "netns", "exec", namespace]
        subprocess.run([*ns, "ip", "link", "add", "d0", "type", "veth", "peer", "d1"], check=True)
        subprocess.run([*ns, "ip", "link", "set", "d1", "up"], check=True)
        done = subprocess.run(
            [*ns, sys.executable, "-c", REQUESTS], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        index = answer["index"]

        (link,) = ip_json(namespace, "link", "show", "d0")
        assert link["ifindex"] == index and link["mtu"] == 1400 and "UP" in link["flags"]
        assert link["txqlen"] == 7  # --queue-bytes: tun0's ring (queues.py)

        addresses = {
            (a["local"], a["prefixlen"]): a
            for a in ip_json(namespace, "addr", "show", "d0")[0]["addr_info"]
        }
        assert ("10.8.0.1", 24) in addresses
        assert ("fd10:8::1", 64) in addresses
        assert addresses[("fd10:8::1", 64)].get("nodad") is True

        routes = {r["dst"]: r for r in ip_json(namespace, "route", "show")}
        assert routes["192.0.2.0/24"]["dev"] == "d0" and routes["192.0.2.0/24"]["scope"] == "link"
        assert routes["198.51.100.0/24"]["gateway"] == "10.8.0.254"
        assert routes["203.0.113.0/24"]["type"] == "unreachable"
        routes6 = {r["dst"]: r for r in ip_json(namespace, "-6", "route", "show")}
        assert "2001:db8:1::/48" not in routes6  # added, then deleted
        assert routes6["2001:db8:2::/48"]["type"] == "unreachable"
        assert routes6["fd10:8::/64"]["dev"] == "d0"

        assert answer["path"] == ["198.51.100.7/32", index, "10.8.0.254"]  # ip route get
        (gateway_off_link, already_gone, no_link, no_name) = answer["errors"]
        assert gateway_off_link[0] == 101  # ENETUNREACH: 203.0.113.0/24 is unreachable
        assert gateway_off_link[1].startswith("route replace 10.0.0.0/8 via 203.0.113.1 dev #")
        assert already_gone[1].startswith("route del 2001:db8:1::/48 dev #")
        assert no_link[1].startswith(f"link set #{index + 100} up: No such device")
        assert no_name == [19, "no interface nosuch0"]  # ENODEV
        assert all("\n" not in text for _, text in answer["errors"])
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
