"""shell/report.py: the status file a daemon rewrites once a second."""

from __future__ import annotations

import io
import json

from vpnlab.shell.report import Reporter, status_text


def test_status_file_is_json_a_field_a_line(tmp_path):
    """Issue 27: indented whole, the JSON encoder was the pure-Python one (5 ms a second in
    the server's loop with 250 clients); a field a line, each value compact, it is the C one."""
    clients = [{"peer": f"192.0.2.{i}:4500", "silent_s": 0.5} for i in range(3)]
    reporter = Reporter("server", tmp_path / "server.json", io.StringIO())
    reporter.update(clients=clients, counters={"drops": {"bad mac1": 7}})
    reporter.write_status(force=True)
    text = (tmp_path / "server.json").read_text()
    status = json.loads(text)
    assert status["clients"] == clients and status["counters"]["drops"]["bad mac1"] == 7
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == 2 + len(status)
    assert text == status_text(status)
