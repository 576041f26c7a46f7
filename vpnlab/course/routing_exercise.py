"""Notebook 3's code exercise: the student's SetRouting(1) and CleanUp, judged by r1's kernel.

The student writes ``set_routing(ip, server, gateway)`` and ``clean_up(ip, server, gateway)``;
``ip("route add ...")`` runs ``ip route add ...`` in r1 and raises if it fails. The check gives
r1 a ``tun0`` (opened here and held, as the client daemon would: CreateTunDev, Ifconfig), runs
``set_routing``, asks the kernel where packets would go (``ip route get``) for addresses in each
half of the address space, the web host, the server's neighbour and the server itself, runs
``clean_up`` and compares r1's table with the one before. Whatever the student's code did, the
check puts r1's routes back as they were and closes ``tun0``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Callable

from vpnlab.core.constants import tun_mtu
from vpnlab.course.notebook import CourseLab, netns
from vpnlab.shell.tun import create_tun_dev

SERVER = "198.51.100.2"
GATEWAY = "192.0.2.1"
THROUGH_TUNNEL = {
    "10.20.30.40": "in 0.0.0.0/1",
    "100.64.0.1": "in 0.0.0.0/1 (not in 0.0.0.0/2)",
    "150.0.0.1": "in 128.0.0.0/1",
    "203.0.113.10": "the web host",
    "198.51.100.3": "the server's neighbour (only the server itself bypasses the tunnel)",
}
"""Destinations that must leave r1 through tun0 once SetRouting(1) ran, and why."""
Ip = Callable[[str], str]
Routing = Callable[[Ip, str, str], None]


def routes(lab: CourseLab) -> set[str]:
    """r1's main table as 'DST [via GW] dev DEV' strings."""
    table = json.loads(lab.run("r1", "ip -j route", check=True).stdout)
    return {
        r["dst"] + (f" via {r['gateway']}" if "gateway" in r else "") + f" dev {r['dev']}"
        for r in table
    }


def route_get(lab: CourseLab, dst: str) -> tuple[str, str | None]:
    """(device, gateway) the kernel would use for ``dst`` in r1."""
    done = lab.run("r1", ["ip", "-j", "route", "get", dst])
    if done.returncode != 0:
        return "unreachable", None
    (path,) = json.loads(done.stdout)[:1]
    return path["dev"], path.get("gateway")


def _restore(lab: CourseLab, before: set[str]) -> None:
    """Whatever the student left: extra routes deleted, missing ones put back."""
    for route in routes(lab) - before:
        lab.run("r1", ["ip", "route", "del", *route.split()])
    # the directly connected routes first: a route via a gateway needs the gateway's network
    for route in sorted(before - routes(lab), key=lambda r: " via " in r):
        lab.run("r1", ["ip", "route", "replace", *route.split()])


def _run(step: Routing, ip: Ip, errors: list[str]) -> None:
    try:
        step(ip, SERVER, GATEWAY)
    except Exception as exc:  # the student's bug: a fact of the check, not a traceback
        errors.append(f"{step.__name__}: {type(exc).__name__}: {exc}")


def check_routing_steps(lab: CourseLab, set_routing: Routing, clean_up: Routing) -> dict[str, bool]:
    """SetRouting(1) and CleanUp of the student, in r1 (the VPN must be stopped): the facts."""

    def ip(args: str) -> str:
        return lab.run("r1", ["ip", *shlex.split(args)], check=True).stdout

    original = routes(lab)
    errors: list[str] = []
    with netns(lab.ns("r1")):
        tun, name = create_tun_dev("tun0")
    try:
        lab.run("r1", ["ip", "addr", "add", "10.8.0.2/24", "dev", name], check=True)
        lab.run("r1", ["ip", "link", "set", name, "mtu", str(tun_mtu(0)), "up"], check=True)
        before = routes(lab)  # with tun0's own 10.8.0.0/24
        _run(set_routing, ip, errors)
        facts = {
            f"{dst} ({why}) goes through tun0": route_get(lab, dst)[0] == "tun0"
            for dst, why in THROUGH_TUNNEL.items()
        }
        facts[f"the server {SERVER} goes via {GATEWAY} on eth0 (the host route)"] = route_get(
            lab, SERVER
        ) == ("eth0", GATEWAY)
        facts["the default route is still there, untouched"] = {
            r for r in before if r.startswith("default")
        } <= routes(lab)
        _run(clean_up, ip, errors)
        facts["after clean_up r1's routes are exactly as before"] = routes(lab) == before
    finally:
        with contextlib.suppress(OSError):
            os.close(tun)
        _restore(lab, original)
    facts["your functions raised nothing"] = not errors
    for error in errors:
        print(error)
    return facts
