"""The lab's record (vpnlab/lab/records.py) through the state folder's lab.json (state.py):
written with its version, an old record without one still read, a foreign one refused."""

from __future__ import annotations

import json

import pytest

from vpnlab.core.errors import LabError
from vpnlab.lab import state
from vpnlab.lab.records import RECORD_VERSION, DaemonRecord, LabRecord

PREFIX = "rec-"

OLD_RECORD = {  # as vpnlab wrote lab.json before records had a version
    "prefix": PREFIX,
    "created": 1764900000.5,
    "namespaces": ["rec-r1", "rec-r2"],
    "daemons": {
        "whoami": {
            "node": "web",
            "argv": ["python3", "-m", "vpnlab", "whoami"],
            "pid": 4242,
            "log": "/run/vpnlab/rec-/logs/whoami.log",
            "started": 1764900001.0,
            "startup_s": 0.212,
        }
    },
    "files": [],
    "topology": None,
    "drawn": {"whoami_token": "ab12"},
    "cipher": "esp-aes-gcm",
    "vpn": True,
    "nat": False,
    "psk": False,
    "mode": "tun",
    "keying": "identity",
    "outer": 4,
}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VPNLAB_STATE_DIR", str(tmp_path))
    (tmp_path / PREFIX).mkdir()
    return tmp_path / PREFIX


def write(folder, data) -> None:
    (folder / "lab.json").write_text(json.dumps(data))


def test_a_saved_record_is_read_back_the_same_with_its_version(folder):
    record = LabRecord(PREFIX, namespaces=["rec-r1"], cipher="plain", drawn={"x": 1})
    record.daemons["server"] = DaemonRecord("r2", ["vpnlab", "server"], 99, "server.log", 5.0)
    state.save(record)
    assert json.loads((folder / "lab.json").read_text())["version"] == RECORD_VERSION
    assert state.load(PREFIX) == record
    assert state.record_of(PREFIX).daemons["server"].pid == 99


def test_an_old_record_without_a_version_is_read_as_version_1(folder):
    write(folder, OLD_RECORD)
    record = state.load(PREFIX)
    assert record is not None
    assert record.daemons["whoami"] == DaemonRecord(**OLD_RECORD["daemons"]["whoami"])
    assert (record.keying, record.nat, record.outer) == ("identity", False, 4)
    assert state.drawn_values(PREFIX) == {"whoami_token": "ab12"}
    state.save(record)  # written again: now with the current version, nothing else changed
    written = json.loads((folder / "lab.json").read_text())
    assert written == {**OLD_RECORD, "troubleshooting": False, "version": RECORD_VERSION}


def test_a_record_of_an_unknown_version_is_refused_in_one_line(folder):
    write(folder, {**OLD_RECORD, "version": 7})
    with pytest.raises(LabError, match="record version 7") as refused:
        state.load(PREFIX)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "shape",
    [
        ["a", "list"],
        {k: v for k, v in OLD_RECORD.items() if k != "prefix"},
        {**OLD_RECORD, "daemons": {"whoami": {"node": "web"}}},
        {**OLD_RECORD, "daemons": ["whoami"]},
    ],
    ids=["not-an-object", "no-prefix", "daemon-without-pid", "daemons-a-list"],
)
def test_a_record_of_the_wrong_shape_is_refused_in_one_line(folder, shape):
    write(folder, shape)
    with pytest.raises(LabError, match="not a record of a lab") as refused:
        state.load(PREFIX)
    assert "\n" not in str(refused.value)


def test_no_record_or_no_json_is_no_lab(folder):
    assert state.load(PREFIX) is None
    (folder / "lab.json").write_text("{half")
    assert state.load(PREFIX) is None
    with pytest.raises(LabError, match="no lab with prefix"):
        state.record_of(PREFIX)
