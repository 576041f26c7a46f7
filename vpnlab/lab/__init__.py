"""The namespace lab of DESIGN §3: build it, run the VPN in it, look inside, prove it, remove it.

    from vpnlab import lab
    lab.up()                       # r1, isp, r2, web; who-am-I on web; VPN server and client
    print(lab.format_status(lab.status()))
    lab.exec_in("vpnlab-", "r1", ["ip", "route"])
    lab.verify()                   # ping and who-am-I from r1, through the tunnel
    lab.down()                     # everything gone, also after a crash

Notebooks call the same through ``vpnlab lab ...`` in a subprocess. This file is only the
facade: it imports from the modules below, and none of them imports it.

    topology     the lab as data (nodes, links, the tunnel), and TOML topologies
    state        the record of what was made, and CleanUp from it
    nodes        running a command in a node (exec_in, popen_in), wait_for
    build        applying a topology to namespaces (pyroute2); starting daemons
    inspection   status, and status and verify as text
    vpn          starting and stopping the VPN daemons; routing without NAT
    delay        delay and jitter on the isp (netem, or a userspace relay)
    impair       loss on the isp, and delay and jitter through ``delay``
    control      up, down, verify
    faults       troubleshooting labs: up with one hidden fault (``lab up --fault``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "down": "control",
    "up": "control",
    "verify": "control",
    "format_status": "inspection",
    "format_verify": "inspection",
    "status": "inspection",
    "exec_in": "nodes",
    "DEFAULT_PREFIX": "state",
    "DEFAULT_TOPOLOGY": "topology",
    "Topology": "topology",
    "load_topology": "topology",
    "make_topology": "topology",
    "route_back": "vpn",
    "start_vpn": "vpn",
    "stop_vpn": "vpn",
}
"""Each name of the facade and its module: imported when first used (PEP 562), so that
``import vpnlab.lab.state`` (the rootless forwarder, a notebook's helpers) does not load the
VPN's keys, cryptography and the builder along with it."""


def __getattr__(name: str) -> Any:
    if name == "CIPHERS":
        from vpnlab.wire.ciphers import CIPHERS

        return CIPHERS
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vpnlab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vpnlab.lab.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TOPOLOGY",
    "CIPHERS",
    "Topology",
    "load_topology",
    "make_topology",
    "up",
    "down",
    "status",
    "format_status",
    "format_verify",
    "exec_in",
    "verify",
    "start_vpn",
    "stop_vpn",
    "route_back",
]
