"""The grader's store, its report and the fault draw, without a lab (no root needed)."""

from __future__ import annotations

import csv
import io
import sqlite3
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from vpnlab import cli
from vpnlab.core.errors import LabError
from vpnlab.grader.client import ask
from vpnlab.grader.judging import MAX_TRIES, StudentLab, check_lab, rebuilt
from vpnlab.grader.report import COLUMNS, plot, rows, to_csv
from vpnlab.grader.store import Attempt, open_store
from vpnlab.lab import faults


def test_store_is_private_and_keeps_attempts_and_faults(tmp_path):
    store = open_store(tmp_path / "grader" / "grader.db")
    assert stat.S_IMODE((tmp_path / "grader").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "grader" / "grader.db").stat().st_mode) == 0o600
    secret = store.secret()
    assert len(secret) == 32 and store.secret() == secret
    store.add(Attempt("ann", "lab", False, 1.0, "failing: ping web"))
    store.add(Attempt("ann", "lab", True, 5.0, ""))
    assert store.tries("ann", "lab") == 2 and store.passed("ann", "lab")
    assert store.tries("bob", "lab") == 0 and not store.passed("bob", "lab")
    first = store.add_fault("ann", "host-route", {"r1": 7}, faults.FAULTS["host-route"].ticket)
    drawn = store.open_fault("ann")
    assert drawn is not None and drawn.id == first and drawn.marks == {"r1": 7}
    assert store.faults_drawn("ann") == 1 and store.open_fault("bob") is None
    store.fix_fault(first)
    assert store.open_fault("ann") is None
    store.close()
    again = open_store(tmp_path / "grader" / "grader.db")
    assert again.secret() == secret and len(again.attempts("ann")) == 2


def test_the_report_reads_the_store_and_writes_nothing(tmp_path, capsys):
    """``vpnlab grader report`` (root, or the service's user, while the service runs) opens
    the store read-only: no write reaches the grades, no file of its own beside them."""
    folder = tmp_path / "grader"
    store = open_store(folder / "grader.db")
    store.add(Attempt("ann", "lab", True, 5.0, ""))
    store.close()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    reader = open_store(folder / "grader.db", read_only=True)
    assert [a.item for a in reader.attempts("ann")] == ["lab"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.add(Attempt("ann", "lab", False, 6.0, "forged"))
    reader.close()
    assert cli.main(["grader", "report", "--store", str(folder / "grader.db")]) == 0
    assert "ann,lab,True,1," in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before
    with pytest.raises(LabError, match="cannot open the grader's store"):
        open_store(folder / "missing.db", read_only=True)
    assert not (folder / "missing.db").exists()


def test_store_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LabError, match="cannot open the grader's store"):
        open_store(tmp_path / "file" / "grader.db")


def test_a_store_others_may_open_is_refused_and_left_as_it_was(tmp_path):
    """``--store`` names any path: a folder or a file others may open is refused in one line
    and never chmod-ed (a file in a 0755 folder, as /etc/passwd, once left /etc 0700)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    listed = shared / "passwd"
    listed.write_text("root:x:0:0:root:/root:/bin/bash\n")
    listed.chmod(0o644)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    readable = private / "grades.db"
    readable.write_bytes(b"")
    readable.chmod(0o644)
    with pytest.raises(LabError, match=f"^the grader's store {private} is a folder"):
        open_store(private)
    for path, named in ((listed, shared), (shared / "new.db", shared), (readable, readable)):
        with pytest.raises(LabError, match=f"may not be in {named}: others may open it"):
            open_store(path)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755 and not (shared / "new.db").exists()
    assert stat.S_IMODE(listed.stat().st_mode) == 0o644 and listed.read_text().startswith("root")
    assert stat.S_IMODE(readable.stat().st_mode) == 0o644


def test_report_one_row_per_student_and_item_with_a_plot(tmp_path):
    attempts = [
        Attempt("ann", "lab", False, 10.0, "failing: ping web"),
        Attempt("ann", "lab", True, 70.0, ""),
        Attempt("ann", "fault:1", True, 80.0, "fixed host-route after 9 s"),
        Attempt("bob", "lab", False, 20.0, "failing: tunnel up"),
    ]
    table = rows(attempts)
    parsed = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert list(parsed[0]) == COLUMNS
    by = {(r["student"], r["item"]): r for r in parsed}
    assert by[("ann", "lab")]["passed"] == "True" and by[("ann", "lab")]["attempts"] == "2"
    assert by[("ann", "lab")]["seconds_to_pass"] == "60.0"
    assert by[("ann", "fault:1")]["detail"] == "fixed host-route after 9 s"
    assert by[("bob", "lab")]["passed"] == "False" and by[("bob", "lab")]["first_pass"] == ""
    plot(table, tmp_path / "grades.png")
    assert (tmp_path / "grades.png").read_bytes()[:4] == b"\x89PNG"


def test_fault_draw_is_per_student_and_keyed_by_the_secret():
    names = [n for n, f in faults.FAULTS.items() if not f.local_only]
    key, other = b"k" * 32, b"o" * 32
    assert faults.draw(names, "ann", key, 0) == faults.draw(names, "ann", key, 0)
    by_student = {faults.draw(names, f"s{i}", key, 0) for i in range(60)}
    assert by_student == set(names)  # students get different faults
    assert [faults.draw(names, "ann", key, n) for n in range(12)] != [
        faults.draw(names, "ann", other, n) for n in range(12)
    ]  # without the secret the sequence is not known


def test_fault_record_round_trip_and_refusals():
    note = faults.FaultRecord("udp-filter", 1.5, {"r1": 4, "r1 netns": 99}, "ab12cd34", 1.0)
    assert faults.FaultRecord.from_json(note.to_json()) == note
    for bad in ('{"version": 0}', '{"version": 1, "name": "nope", "marks": {}}', "[]"):
        with pytest.raises(ValueError):
            faults.FaultRecord.from_json(bad)


def _never_entered(*request):
    raise AssertionError(f"the lab was entered: {request}")


def test_tries_are_limited_in_the_store_before_the_lab_is_entered(tmp_path):
    store = open_store(tmp_path / "grader.db")
    lab = StudentLab(_never_entered, "ann", "nb-")
    for n in range(MAX_TRIES):
        store.add(Attempt("ann", "lab", False, float(n), "failing: ping web"))
    with pytest.raises(LabError, match="no tries left"):
        check_lab(store, lab)
    store.add(Attempt("bob", "lab", True, 1.0, ""))
    with pytest.raises(LabError, match="already passed"):
        check_lab(store, StudentLab(_never_entered, "bob", "nb-"))
    assert store.tries("ann", "lab") == MAX_TRIES


ANSWERS = {  # path: (status, body) as a student's server might meet them between hub and grader
    "/grader/check": (200, b'{"passed": true}'),
    "/grader/page": (200, b"<html>Sign in to JupyterHub</html>"),
    "/grader/list": (200, b"[1, 2]"),
    "/grader/refused": (403, b'{"error": "not a student of this class"}'),
    "/grader/broken": (502, b"<html>Bad Gateway</html>"),
}


class Answering(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_grader_client_takes_a_JSON_object_and_says_anything_else_in_one_line(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "a-token")
        monkeypatch.setenv("VPNLAB_GRADER_URL", f"http://127.0.0.1:{server.server_port}/grader/")
        assert ask("check", {"item": "lab"}) == {"passed": True}
        for verb in ("page", "list"):
            with pytest.raises(LabError, match=r"^the grader at .* answered with no JSON object$"):
                ask(verb)
        with pytest.raises(LabError, match=r"^the grader says: not a student of this class$"):
            ask("refused")
        with pytest.raises(LabError, match=r"^the grader says: Bad Gateway$"):
            ask("broken")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("now", "moved"),
    [
        ({"r1": 7, "r1 netns": 11, "r2": 9, "r2 netns": 12}, False),  # the same lab
        ({"r1": 8, "r1 netns": 11, "r2": 9, "r2 netns": 12}, False),  # the VPN restarted
        ({"r1": 7, "r1 netns": 21, "r2": 9, "r2 netns": 22}, True),  # built anew
        ({"r1": -1, "r1 netns": -1, "r2": -1, "r2 netns": -1}, True),  # no lab: not a lab
    ],
)
def test_an_open_fault_moves_only_to_a_lab_built_anew(now, moved):
    """A restart in the same lab stays visible ("not restarted"); new namespaces get the fault
    injected again (``give_fault``)."""
    old = {"r1": 7, "r1 netns": 11, "r2": 9, "r2 netns": 12}
    assert rebuilt(old, now) is moved
