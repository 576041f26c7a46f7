"""``vpnlab check --report``: a real progress file in tmp_path, read back per SEED task.

The checks themselves need a lab (tests/lab/test_troubleshooting.py); the report needs none.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from vpnlab import cli
from vpnlab.course import progress
from vpnlab.course.check import CHECKS
from vpnlab.course.progress import Attempt
from vpnlab.course.report import CSV_COLUMNS, SEED_TASKS, known_exercises, report, to_csv
from vpnlab.lab import faults

T0 = 1_764_590_000.0
EXERCISES = ["0.1", "0.2", "0.3", "1.1", "1.2", "1.5", "3.1", "7.1", "8.1"]
"""The notebooks' exercises, as far as these tests are concerned."""
BEYOND_SEED_NOTEBOOKS = {"7", "13", "14", "15"}
"""The TCP meltdown, the MTU, IPv6 and the kernel data plane: no SEED task asks for them."""


@pytest.fixture
def progress_file(tmp_path):
    """A class's worth of one student: exercises of notebooks 0, 1, 3, 7 and two fault labs."""
    path = tmp_path / "progress.jsonl"
    tries = [
        ("0.1", False, 0, ""),
        ("0.1", False, 30, ""),
        ("0.1", True, 90, ""),
        ("0.2", True, 100, ""),
        ("0.3", True, 110, ""),
        ("1.1", False, 200, ""),
        ("3.1", True, 300, ""),
        ("7.1", True, 400, ""),
        ("fault", False, 500, "[aaaaaaaa] failing: ping web, who-am-I"),
        ("fault", True, 620, "[aaaaaaaa] fixed forward-r2 after 130 s"),
        ("fault", False, 700, "[bbbbbbbb] failing: tunnel up"),
        ("lab", True, 800, ""),
    ]
    for item, passed, dt, detail in tries:
        progress.record(Attempt(item, passed, T0 + dt, detail), path)
    path.write_text(path.read_text() + "not json\n")  # a torn line is skipped, not fatal
    return path


def _task(data: dict, number: int) -> dict:
    return next(t for t in data["seed_tasks"] if t["seed_task"] == number)


def test_attempts_first_pass_and_time_to_pass(progress_file):
    data = report(progress.load(progress_file), "alice", EXERCISES)
    assert data["student"] == "alice"
    (first,) = [i for i in _task(data, 1)["items"] if i["item"] == "0.1"]
    assert first["attempts"] == 3 and first["passed"]
    assert first["seconds_to_pass"] == 90.0
    assert first["first_attempt"] == "2025-12-01T11:53:20Z"
    assert first["first_pass"] == "2025-12-01T11:54:50Z"
    assert _task(data, 1)["status"] == "passed"
    tun, untried = _task(data, 2)["items"]
    assert tun["item"] == "1.1" and not tun["passed"] and tun["first_pass"] == ""
    assert (untried["item"], untried["attempts"], untried["passed"]) == ("1.2", 0, False)
    assert _task(data, 2)["status"] == "in progress"
    assert _task(data, 5)["status"] == "passed"  # vpnlab check in a healthy lab
    assert _task(data, 7)["status"] == "not attempted"
    assert [i["item"] for i in _task(data, 7)["items"]] == ["8.1"]


def test_the_nine_seed_tasks_are_all_there_each_with_a_check(progress_file):
    data = report(progress.load(progress_file), "", EXERCISES)
    assert [t["seed_task"] for t in data["seed_tasks"]] == list(range(1, 10))
    assert len(SEED_TASKS) == 9
    assert all(t["checked_by"] for t in data["seed_tasks"])
    tap = _task(data, 9)  # the ARP replies of notebooks 01 and 11, not their TUN exercises
    assert tap["checked_by"] == ["1.5", "11.6"] and tap["status"] == "not attempted"
    assert "1.5" not in [i["item"] for i in _task(data, 2)["items"]]
    assert "11.6" not in _task(data, 2)["checked_by"] and "11.5" in _task(data, 2)["checked_by"]


def test_fault_labs_are_one_item_each_named_only_once_fixed(progress_file):
    data = report(progress.load(progress_file), "", EXERCISES)
    extra = {i["item"]: i for i in data["beyond_seed"]}
    every_fault = {f"fault:{name}" for name in faults.FAULTS}
    assert set(extra) == {"7.1", "fault:unsolved-bbbbbbbb"} | every_fault
    assert sum(i["attempts"] for n, i in extra.items() if n in every_fault) == 2
    assert extra["fault:forward-r2"]["attempts"] == 2
    assert extra["fault:forward-r2"]["seconds_to_pass"] == 120.0
    assert not extra["fault:unsolved-bbbbbbbb"]["passed"]
    unsolved = json.dumps(extra["fault:unsolved-bbbbbbbb"])
    assert not any(name in unsolved for name in faults.FAULTS)


def test_csv_columns_and_rows(progress_file):
    rows = list(
        csv.DictReader(io.StringIO(to_csv(report(progress.load(progress_file), "bob", EXERCISES))))
    )
    assert list(rows[0]) == CSV_COLUMNS
    assert {r["student"] for r in rows} == {"bob"}
    tap = [r for r in rows if r["seed_task"] == "9"]
    assert [(r["item"], r["status"]) for r in tap] == [("1.5", "not attempted")]
    assert {r["seed_task"] for r in rows} >= {str(n) for n in range(1, 10)}
    first = next(r for r in rows if r["item"] == "0.1")
    assert (first["attempts"], first["passed"], first["status"]) == ("3", "True", "passed")
    beyond = [r["item"] for r in rows if r["task"] == "beyond SEED"]
    assert beyond[0] == "7.1" and "fault:forward-r2" in beyond and len(beyond) == 1 + 9 + 1
    untried = next(r for r in rows if r["item"] == "fault:rp-filter")
    assert (untried["attempts"], untried["status"]) == ("0", "not attempted")


def test_cli_writes_the_report_to_a_file(progress_file, tmp_path, capsys):
    out = tmp_path / "alice.csv"
    argv = ["check", "--report", "--progress", str(progress_file), "--student", "alice"]
    assert cli.main([*argv, "--format", "csv", "-o", str(out)]) == 0
    assert "alice" in capsys.readouterr().out
    assert out.read_text().startswith(",".join(CSV_COLUMNS))
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["student"] == "alice"


def test_cli_without_a_progress_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "none.jsonl"
    assert cli.main(["check", "--report", "--progress", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no progress file" in err


def test_random_faults_are_reproducible_and_every_name_is_distinct():
    names = list(faults.FAULTS)
    assert len(names) == 9
    assert faults.choose(names, 3) == faults.choose(names, 3)
    assert {faults.choose(names, seed) for seed in range(50)} == set(names)
    assert not any(name in check for name in names for check in CHECKS)


def test_every_exercise_of_the_notebooks_is_in_a_seed_task_or_beyond_it():
    exercises = known_exercises()
    assert "0.1" in exercises and "11.4" in exercises
    data = report([], "", exercises)
    placed = {i["item"] for t in data["seed_tasks"] for i in t["items"]}
    beyond = {i["item"] for i in data["beyond_seed"] if not i["item"].startswith("fault:")}
    assert placed | beyond == set(exercises) | {"lab"}
    assert {item.split(".")[0] for item in beyond} == BEYOND_SEED_NOTEBOOKS & {
        item.split(".")[0] for item in exercises
    }
