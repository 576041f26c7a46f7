"""The server's key export (``--esp-sa-file``, vpnlab/shell/server.py ``EspSaExport``): written
once at the end of a loop turn in which sessions started or ended, not once per event.

A real ServerCore (esp-aes-gcm, shared PSK) and real files; the loop's turn with a real socket
pair (the ``loop_parts`` fixture); no root.
"""

from __future__ import annotations

from pathlib import Path

from vpnlab.core.client_core import ClientCore
from vpnlab.core.events import Event, HandshakeCompleted
from vpnlab.core.server_core import ServerCore
from vpnlab.shell.server import EspSaExport

from .helpers import FORMATS, SERVER, SERVER_TUNNEL_ADDRESS, make_loop, receive_one, seeded_random

ESP = FORMATS[2]


def peer(i: int) -> tuple[str, int]:
    return (f"192.0.2.{10 + i}", 4500)


def server_with(clients: int) -> tuple[ServerCore, list[ClientCore], list[Event]]:
    """A server core and ``clients`` client cores connected to it; the server's events."""
    server = ServerCore(ESP, SERVER_TUNNEL_ADDRESS, seeded_random(1))
    cores, events = [], []
    for i in range(clients):
        client = ClientCore(SERVER, ESP.client_handshake(seeded_random(10 + i)))
        client.connect(0.0)
        events += receive_one(server, client.datagrams_to_send()[0][0], peer(i), 0.0)
        for welcome, _ in server.datagrams_to_send():
            receive_one(client, welcome, SERVER, 0.0)
        cores.append(client)
    return server, cores, events


def sa_rows(path: Path) -> list[str]:
    return [row for row in path.read_text().splitlines() if row.startswith('"IPv4"')]


def test_EspSaExport_writes_once_for_all_the_sessions_a_turn_started_or_ended(tmp_path):
    server, clients, events = server_with(3)
    export = EspSaExport(tmp_path / "esp_sa", server, "198.51.100.2")
    for event in events:
        export.note(event)
    assert export.write(1.0) == []
    assert len(sa_rows(tmp_path / "esp_sa")) == 6  # two SAs per session
    (tmp_path / "esp_sa").unlink()
    export.write(2.0)  # nothing started or ended since
    assert not (tmp_path / "esp_sa").exists()
    clients[0].close(3.0)
    for event in receive_one(server, clients[0].datagrams_to_send()[0][0], peer(0), 3.0):
        export.note(event)
    export.write(3.0)
    assert len(sa_rows(tmp_path / "esp_sa")) == 4


def test_EspSaExport_ignores_other_events(tmp_path):
    server, _, events = server_with(1)
    export = EspSaExport(tmp_path / "esp_sa", server, "198.51.100.2")
    assert all(isinstance(event, HandshakeCompleted) for event in events)
    export.note(Event())
    export.write(1.0)
    assert not (tmp_path / "esp_sa").exists()


def test_SelectLoop_calls_end_of_turn_once_a_turn(loop_parts):
    turns: list[float] = []
    tunnel = make_loop(loop_parts, end_of_turn=lambda now: turns.append(now) or [])
    tunnel.turn(report=False)
    tunnel.turn(report=False)
    assert len(turns) == 2 and turns[0] <= turns[1]
