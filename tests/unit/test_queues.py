"""queues.py: tun0's ring sized by bytes, and ``--queue-bytes`` refused below one super-packet."""

from __future__ import annotations

import pytest

from vpnlab import cli
from vpnlab.fast.offload import GSO_MAX_SIZE
from vpnlab.shell.queues import DEFAULT_QUEUE_BYTES, MIN_QUEUE_BYTES, MIN_RING_ENTRIES, ring_entries


def test_the_ring_holds_the_budget_in_its_largest_entries():
    assert ring_entries(DEFAULT_QUEUE_BYTES, GSO_MAX_SIZE) == 4  # fast path: 4 super-packets
    assert ring_entries(DEFAULT_QUEUE_BYTES, 1400) == 187  # simple path: MTU-sized packets
    assert ring_entries(4 * 1024 * 1024, GSO_MAX_SIZE) == 69


def test_the_ring_never_shrinks_below_a_few_entries():
    assert ring_entries(MIN_QUEUE_BYTES, GSO_MAX_SIZE) == MIN_RING_ENTRIES


@pytest.mark.parametrize("role", [["server"], ["client", "--server", "192.0.2.1"]])
def test_a_queue_smaller_than_a_super_packet_is_one_line(capsys, role):
    assert cli.main([*role, "--cipher", "plain", "--queue-bytes", "1000"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"vpnlab {role[0]}: error: --queue-bytes 1000: at least {MIN_QUEUE_BYTES} "
        "(one super-packet)\n"
    )
