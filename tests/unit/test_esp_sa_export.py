"""shell/server.py's key export (``--esp-sa-file``): the rows of every ESP session that is up."""

from __future__ import annotations

from vpnlab.shell import server as server_module
from vpnlab.shell.server import EspSaExport
from vpnlab.wire.esp import esp_sa_rows

from .test_identity import connect, server_core


def test_EspSaExport_formats_each_sessions_rows_once(tmp_path, monkeypatch):
    """Issue 27: every handshake and every end formatted all sessions' rows again (250
    clients connecting: 31,000 sessions' rows in the server's loop)."""
    core = server_core()
    connect(core, "alice", 4007, seed=5)
    connect(core, "bob", 4008, seed=6)
    formatted = []

    def counted(*args):
        formatted.append(args[2])
        return esp_sa_rows(*args)

    monkeypatch.setattr(server_module, "esp_sa_rows", counted)
    export = EspSaExport(tmp_path / "esp_sa", "192.0.2.1")
    export.write(core)
    export.write(core)
    assert formatted == ["192.0.2.2", "192.0.2.2"]  # one per session, not one per write
    rows = [row for row in (tmp_path / "esp_sa").read_text().splitlines() if row[0] != "#"]
    expected = [
        row
        for session in core.sessions.values()
        for row in esp_sa_rows(session.protection, "192.0.2.1", "192.0.2.2")
    ]
    assert rows == expected and len(rows) == 4
    core.close(1.0)
    export.write(core)
    assert [r for r in (tmp_path / "esp_sa").read_text().splitlines() if r[0] != "#"] == []
