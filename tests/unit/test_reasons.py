"""The reasons are enums whose values are the labels the log and the status file always had."""

from __future__ import annotations

import json

from vpnlab.core.reasons import Close, Drop, State
from vpnlab.core.session import Counters
from vpnlab.wire.plain import PLAIN

from .helpers import CorePair, ipv4_packet


def test_a_reason_reads_as_its_label_everywhere():
    assert str(Drop.BAD_ICV) == f"{Drop.BAD_ICV}" == "bad icv"
    assert json.dumps({Drop.BAD_ICV: Close.PEER_LOST}) == '{"bad icv": "peer lost"}'
    assert Drop.TUN_WRITE.detail("No buffer space available") == (
        "tun write: No buffer space available"
    )
    assert State("connected") is State.CONNECTED


def test_the_status_file_keeps_its_strings():
    counters = Counters()
    counters.drops[Drop.SPOOFED_SOURCE] += 1
    counters.drops["spoofed source"] += 1  # the same key
    assert json.loads(json.dumps(counters.as_dict()))["drops"] == {"spoofed source": 2}


def test_a_core_reports_enum_reasons():
    pair = CorePair(PLAIN)
    pair.connect()
    events = pair.client.send_packets([ipv4_packet("10.8.0.99", "203.0.113.10")], pair.now)
    assert events == []
    pair.client_to_server()
    (dropped,) = pair.server_events[-1:]
    assert dropped.reason is Drop.SPOOFED_SOURCE
    pair.client.close(pair.now)
    pair.client_to_server()
    assert pair.server_events[-1].reason is Close.BYE
    assert pair.client.describe(pair.now)["close_reason"] is Close.CLOSED
