"""``--queue-bytes`` in real namespaces: tun0's ring and the UDP socket's buffers are what it says.

Both daemons size tun0's ``txqueuelen`` from the budget (``queues.ring_entries``: over 65,536
bytes a super-packet on the fast path, over the MTU on the simple one; the default budget is
the data path's) and ask for socket buffers of the budget (the kernel doubles what is asked:
``ss``'s ``rb``/``tb``). Read back with ``ip -j link`` and ``ss -m`` in r1 and r2, and the
tunnel still carries a ping.
"""

from __future__ import annotations

import json
import re

import pytest

from vpnlab import lab
from vpnlab.fast.offload import SUPER_PACKET_BYTES
from vpnlab.lab.inspection import read_status_file
from vpnlab.lab.state import state_dir
from vpnlab.shell.queues import (
    QUEUE_BYTES,
    SERVER_MIN_RING_ENTRIES,
    SESSION_ROOM_BYTES,
    ring_entries,
)

from .helpers import WEB_IP

pytestmark = pytest.mark.lab

NODES = ("r1", "r2")


def txqueuelen(handle, node: str) -> int:
    done = handle.run(node, "ip", "-j", "link", "show", "tun0")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)[0]["txqlen"])


def socket_buffers(handle, node: str) -> list[tuple[int, int]]:
    """rb and tb of each of the daemon's UDP sockets on port 4500 (``ss -uam``), smallest
    first: the client's one; the server's Hello lane, then its data socket."""
    done = handle.run(node, "ss", "-uamnH", "sport", "=", ":4500")
    found = re.findall(r"rb(\d+),t\d+,tb(\d+)", done.stdout)
    assert found, done.stdout
    return sorted((int(rb), int(tb)) for rb, tb in found)


def expected_buffers(node: str, budget: int) -> list[tuple[int, int]]:
    """The budget on both sides (the kernel doubles what is asked), and in the receive buffer
    of the data socket room for its one session (the client's, or r1's at the server); the
    server's Hello lane has the budget only."""
    data = (2 * (budget + SESSION_ROOM_BYTES), 2 * budget)
    return [(2 * budget, 2 * budget), data] if node == "r2" else [data]


def test_the_default_bounds_ring_and_buffers_of_both_daemons(fresh_lab):
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm")  # the default data path: fast
    rings = {"r1": 4, "r2": SERVER_MIN_RING_ENTRIES}  # the client: 4 super-packets
    assert ring_entries(QUEUE_BYTES, SUPER_PACKET_BYTES) == 4
    for node in NODES:
        assert txqueuelen(fresh_lab, node) == rings[node]
        assert socket_buffers(fresh_lab, node) == expected_buffers(node, QUEUE_BYTES)
    for name, node in (("server.json", "r2"), ("client-r1.json", "r1")):  # the status files
        status = read_status_file(state_dir(fresh_lab.prefix) / name) or {}
        assert status.get("queues") == {
            "tun_txqueuelen": rings[node],
            "socket_buffer_bytes": QUEUE_BYTES,
        }
    assert fresh_lab.run("r1", "ping", "-c", "2", "-W", "2", WEB_IP).returncode == 0


def test_queue_bytes_sizes_the_simple_path_by_the_mtu(fresh_lab):
    simple = ["--datapath", "simple", "--mtu", "1400"]
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm", server_args=simple, client_args=simple)
    for node in NODES:  # the default, as on the fast path: 256 KiB, 187 packets of the MTU
        assert txqueuelen(fresh_lab, node) == QUEUE_BYTES // 1400 == 187
        assert socket_buffers(fresh_lab, node) == expected_buffers(node, QUEUE_BYTES)
    lab.stop_vpn(fresh_lab.prefix)
    extra = [*simple, "--queue-bytes", "524288"]
    lab.start_vpn(fresh_lab.prefix, "esp-aes-gcm", server_args=extra, client_args=extra)
    for node in NODES:
        assert txqueuelen(fresh_lab, node) == 524288 // 1400 == 374
        assert socket_buffers(fresh_lab, node) == expected_buffers(node, 524288)
    assert fresh_lab.run("r1", "ping", "-c", "2", "-W", "2", WEB_IP).returncode == 0
