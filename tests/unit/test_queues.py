"""queues.py: tun0's ring sized by bytes, and ``--queue-bytes`` refused below one super-packet."""

from __future__ import annotations

import pytest

from vpnlab import cli
from vpnlab.fast.offload import SUPER_PACKET_BYTES
from vpnlab.shell.queues import (
    MAX_RING_ENTRIES,
    MIN_QUEUE_BYTES,
    MIN_RING_ENTRIES,
    QUEUE_BYTES,
    SERVER_MIN_RING_ENTRIES,
    ring_entries,
)
from vpnlab.shell.tunnel import BATCH


def test_the_ring_holds_the_budget_in_its_largest_entries():
    assert ring_entries(QUEUE_BYTES, SUPER_PACKET_BYTES) == 4  # fast path: 4 super-packets
    assert ring_entries(QUEUE_BYTES, 1400) == 187  # simple path: MTU-sized packets
    assert ring_entries(4 * 1024 * 1024, SUPER_PACKET_BYTES) == 64


def test_the_ring_stays_between_a_few_entries_and_the_kernels_500():
    assert ring_entries(MIN_QUEUE_BYTES, SUPER_PACKET_BYTES) == MIN_RING_ENTRIES
    assert ring_entries(4 * 1024 * 1024, 1400) == MAX_RING_ENTRIES == 500  # the kernel's


@pytest.mark.parametrize("role", [["server"], ["client", "--server", "192.0.2.1"]])
def test_a_queue_smaller_than_a_super_packet_is_one_line(capsys, role):
    assert cli.main([*role, "--cipher", "plain", "--queue-bytes", "1000"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"vpnlab {role[0]}: error: --queue-bytes 1000: at least {MIN_QUEUE_BYTES} "
        "(one super-packet)\n"
    )


def test_the_servers_ring_holds_two_wake_ups_worth_of_small_packets():
    """8 load clients pinging at once lost echo replies in a server ring of 4 entries, 250 in
    one of 64 (the lab test: test_ipv6_only's class of 160)."""
    assert SERVER_MIN_RING_ENTRIES == 2 * BATCH
    assert ring_entries(QUEUE_BYTES, SUPER_PACKET_BYTES, SERVER_MIN_RING_ENTRIES) == 2 * BATCH
    assert ring_entries(512 * 1024, 1400, SERVER_MIN_RING_ENTRIES) == 374  # a budget above it
