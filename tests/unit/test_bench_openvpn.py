"""The bench's OpenVPN case waits for this round's "connected", not an earlier round's.

A daemon's log keeps every start's lines (``start_daemon`` appends), so from the second round
on the client's log already said "Initialization Sequence Completed" before this round's
OpenVPN had started: the idle ping then took the lab's routed path (0.01 ms) or found no route
(none), and iperf3 began before the tunnel (found 2026-12-07 in a 3-round bench).
"""

from __future__ import annotations

from vpnlab.course.bench import OPENVPN_READY, logged_since


def test_an_earlier_rounds_connected_does_not_count(tmp_path):
    log = tmp_path / "openvpn-client.log"
    log.write_bytes(b"--- 14:14:41 openvpn --config c\n" + OPENVPN_READY + b"\n")
    earlier = log.stat().st_size
    with log.open("ab") as file:
        file.write(b"--- 14:17:02 openvpn --config c\nTLS: Initial packet from ...\n")
    assert logged_since(log, 0, OPENVPN_READY)  # what the bench asked before the fix
    assert not logged_since(log, earlier, OPENVPN_READY)
    with log.open("ab") as file:
        file.write(b"2026-12-07 14:17:03 " + OPENVPN_READY + b"\n")
    assert logged_since(log, earlier, OPENVPN_READY)


def test_a_log_not_yet_written_is_not_ready(tmp_path):
    assert not logged_since(tmp_path / "missing.log", 0, OPENVPN_READY)
