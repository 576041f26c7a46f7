"""--fail-closed (issue 27): CleanUp leaves the redirected networks unreachable.

In a namespace of its own (a veth for the way to the server, a veth standing in for tun0),
ClientRouting's SetRouting(1) and CleanUp run for real; ``ip route`` says what is left.
Without --fail-closed the routes are restored (the notes' CleanUp): the traffic would leave
by the default route, unencrypted.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import fresh_prefix

pytestmark = pytest.mark.lab

SETUP = """
ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up
ip addr add 192.0.2.2/24 dev up0 && ip route add default via 192.0.2.1
ip link add tunx type veth peer name tuny && ip link set tunx up && ip link set tuny up
"""
SCRIPT = """
import subprocess, sys
from ipaddress import ip_address
from vpnlab.shell.routing import ClientRouting
routing = ClientRouting(ip_address("198.51.100.2"), "tunx", fail_closed=sys.argv[1] == "1")
routing.apply()
routing.restore()
print(subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout)
"""


def routes_after_cleanup(fail_closed: bool) -> str:
    namespace = f"{fresh_prefix()}fc"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        inside = ["ip", "netns", "exec", namespace]
        subprocess.run([*inside, "sh", "-ec", SETUP], check=True)
        done = subprocess.run(
            [*inside, sys.executable, "-c", SCRIPT, "1" if fail_closed else "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)


def test_fail_closed_leaves_the_redirected_networks_unreachable():
    routes = routes_after_cleanup(fail_closed=True)
    assert "unreachable 0.0.0.0/1" in routes and "unreachable 128.0.0.0/1" in routes
    assert "198.51.100.2 via 192.0.2.1" in routes  # the next run still reaches the server
    assert "tunx" not in routes


def test_without_fail_closed_cleanup_restores_the_routes():
    routes = routes_after_cleanup(fail_closed=False)
    assert "unreachable" not in routes and "0.0.0.0/1" not in routes
    assert "198.51.100.2" not in routes and "default via 192.0.2.1" in routes
