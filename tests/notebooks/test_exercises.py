"""Every exercise's check: the instructor's answer passes, wrong ones fail, True is not 1, and the
student edition (nbgrader's ClearSolutions/ClearHiddenTests) holds no answer. No root needed."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from vpnlab.course import grading
from vpnlab.course.exercises import EXERCISES
from vpnlab.course.notebook import CourseLab
from vpnlab.course.progress import load

from .helpers import NOTEBOOKS, ROOT

CHECK = re.compile(r'course\.check\("([\d.]+)", (answer_\w+)(, lab)?\)')
BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def solutions() -> dict[str, str]:
    """``{exercise: the expression of its answer}`` from the instructor edition's blocks."""
    found = {}
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        for cell in path.read_text().split("# %%"):
            for exercise, var, _lab in CHECK.findall(cell):
                (block,) = BLOCK.findall(cell)
                line = next(ln for ln in block.splitlines() if ln.startswith(f"{var} = "))
                found[exercise] = line.removeprefix(f"{var} = ")
    return found


SOLUTIONS = solutions()
FIXED = sorted(e for e, spec in EXERCISES.items() if spec.measure is None)
MEASURED = sorted(e for e, spec in EXERCISES.items() if spec.measure is not None)

# answers that look right: the numbers and names the notebooks show next to the right one
TEMPTING = {
    "0.1": [5, 3],
    "0.3": ["r1", "isp", "198.51.100.2"],
    "1.1": [16, 18, 24],
    "1.2": [6, 0x45],
    "1.3": [0x0001, 0x1000],
    "1.4": [0x86DD, 0x0806, 4],
    "2.1": [14, 16],
    "2.2": [6, 4],
    "2.3": [1, 2, 4],
    "2.4": [6, 0.5],
    "3.1": ["0.0.0.0/1", "0.0.0.0/0", "default", "128.0.0.0/1 dev tun0"],
    "3.2": [24, 1],
    "3.3": ["eth0", "lo"],
    "3.4": [False, 1, "True"],
    "4.1": ["198.51.100.2", "10.8.0.2"],
    "4.2": ["192.0.2.2", "10.8.0.2"],
    "4.3": ["10.8.0.2", "203.0.113.10"],
    "4.4": ["prerouting", "output", "input"],
    "5.1": [42, 20, 8],
    "5.2": [126, 154, 148],
    "5.3": ["eth:ethertype:ip:tcp:ftp", "ip:tcp:ftp"],
    "5.4": ["0x45000000", "0x00000054"],
    "6.1": [2, 4],
    "6.3": ["SIGKILL", "sigint"],
    "6.4": ["nat", "filter", "inet"],
    "7.1": ["tcp", "esp"],
    "7.3": [4, 1, 0],
    "8.1": ["r2", "web"],
    "8.2": [8, 3],
    "8.3": ["198.51.100.2", "192.0.2.2"],
    "8.4": ["203.0.113.1", "192.0.2.1"],
    "9.1": ["172.16.1.0/24", "10.8.0.0/24"],
    "9.2": ["192.0.2.2", "172.16.2.10"],
    "9.3": ["172.16.2.10", "198.51.100.2", "192.0.2.2"],
    "9.4": [3, 1],
    "10.2": [1, 3, 1.5],
    "10.3": [8, 2, 3],
    "10.4": ["server"],
    "11.1": ["smith0", "smith2", "smith%d"],
    "11.2": [16, 14],
    "11.3": [4],
    "11.4": ["EIO", "EPERM", "22"],
    "12.3": [42, 0, 20],
    "12.4": [False, 1],
    "13.1": [1500, 1500 - 20, 1443],
    "13.2": [1438, 1443, 1472, 1395],
    "13.3": [True, 0],
    "13.5": [1460, 1435, 1400],
    "14.1": ["fd10:8::2/64", "10.8.0.2", "fd10:8::1"],
    "14.2": [1435, 1500, 1280, 1395],
    "14.3": ["2001:db8:1::2", "fd10:8::2", "198.51.100.2"],
    "15.1": [1, 100, 4500],
    "15.2": [1, 4],
    "15.3": ["XfrmInNoStates", "XfrmInStateSeqError", "XfrmOutStateProtoError"],
    "14.4": [4, 6, 50, 17],
}


def wrong_kinds(kind: type, right) -> list:
    """Values of another type that equal the answer in loose Python (``True == 1``)."""
    if kind is int:
        return [bool(right)] if right in (0, 1) else [str(right), [right]]
    if kind is bool:
        return [int(right), str(right)]
    return [right.encode(), [right]]


def test_every_check_has_an_exercise_and_a_solution():
    assert sorted(SOLUTIONS) == sorted(EXERCISES)
    assert set(TEMPTING) == set(FIXED)


def test_no_solutions_file_ships_beside_the_notebooks():
    assert not (ROOT / "tests" / "notebooks" / "solutions.py").exists()


@pytest.mark.parametrize("exercise", FIXED)
def test_fixed_answer_passes_wrong_ones_fail(exercise):
    spec = EXERCISES[exercise]
    right = ast.literal_eval(SOLUTIONS[exercise])  # a literal, nothing of the notebook
    assert grading.judge(exercise, right, spec)
    assert spec.digest == grading.digest(exercise, right)
    for wrong in TEMPTING[exercise]:
        assert not grading.judge(exercise, wrong, spec), wrong
    for wrong in wrong_kinds(spec.kind, right):
        assert not grading.judge(exercise, wrong, spec), wrong
    assert spec.hint and str(right).lower() not in re.split(r"[^\w.:/]+", spec.hint.lower())


def measured_lab() -> CourseLab:
    """A CourseLab as the notebooks leave it: the results they recorded (no lab needed)."""
    lab = CourseLab("exercises", lab_prefix="ex-")
    lab.results.update(
        keepalives_after_kill=3,
        captures={"udp": {"tun0": 40, "eth0": 0}, "tcp": {"tun0": 3, "eth0": 25}},
        ping_base_ms=0.1,
        ping_delayed_ms=31.4,
        short_checksum_ok=True,
        one_way_received=3,
        largest_ping_payload=1410,
        task6={"late_echo": "typed while down\n", "after_echo": "after\n", "address": "10.8.0.2"},
    )
    return lab


MEASURED_CASES = {  # exercise: (right answers, wrong answers) for measured_lab()
    "0.2": (["ex-r2", " EX-R2 "], ["r2", "ex-r1", "nb-r2"]),
    "6.2": ([3, 2, 4], [0, 6, 5, True]),
    "7.2": ([0], [25, 40, 1, False]),
    "7.4": ([30, 31, 40, 22], [60, 15, 0, True]),
    "10.1": ([True], [1, False, "True"]),
    "12.5": ([3], [6, 0, 2, True]),
    "13.4": ([1410], [1407, 1472, 1438, 1411]),
    "10.5": ([True], [False, 1, "yes"]),
    "10.6": (["10.8.0.2"], ["10.8.0.3", "10.8.0.2/24", "192.0.2.2"]),
}


@pytest.mark.parametrize("exercise", MEASURED)
def test_measured_answer_is_compared_with_the_lab(exercise):
    spec, lab = EXERCISES[exercise], measured_lab()
    rights, wrongs = MEASURED_CASES[exercise]
    for right in rights:
        assert grading.judge(exercise, right, spec, lab), right
    for wrong in wrongs:
        assert not grading.judge(exercise, wrong, spec, lab), wrong
    with pytest.raises(ValueError, match="lab=lab"):
        grading.judge(exercise, rights[0], spec)


def test_every_try_is_recorded_and_guessing_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("VPNLAB_PROGRESS", str(tmp_path / "progress.jsonl"))
    spec = EXERCISES["3.2"]
    grading.check("3.2", ..., spec)  # not answered: nothing recorded
    for wrong in range(grading.MAX_FAILED):
        with pytest.raises(AssertionError, match="not quite"):
            grading.check("3.2", wrong, spec)
    with pytest.raises(AssertionError, match="not judged"):
        grading.check("3.2", 32, spec)  # right, but after too many guesses
    attempts = load()
    assert [a.item for a in attempts] == ["3.2"] * (grading.MAX_FAILED + 1)
    assert not any(a.passed for a in attempts)
    assert attempts[0].detail == "answer 0"


def test_prediction_then_check_then_explanation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPNLAB_PROGRESS", str(tmp_path / "progress.jsonl"))
    lab = measured_lab()
    grading.predict("7.4", 60)  # a wrong prediction, recorded before the demonstration
    grading.check("7.4", 31, EXERCISES["7.4"], lab)
    assert "your prediction 60 was wrong" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="words"):
        grading.explain("7.4", "delay")
    grading.explain("7.4", "the delay is on the way back only, so once per round trip")
    items = [(a.item, a.passed) for a in load()]
    assert items == [
        ("7.4:predict", True),
        ("7.4", True),
        ("7.4:explain", False),
        ("7.4:explain", True),
    ]
    assert json.loads(load()[0].detail) == 60
    assert load()[-1].detail.startswith("the delay is on the way back")


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory):
    """The student edition, made by scripts/student-edition.sh (nbgrader through nbconvert)."""
    out = tmp_path_factory.mktemp("student")
    done = subprocess.run(
        [str(ROOT / "scripts" / "student-edition.sh"), str(out)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.ipynb")}


def test_student_edition_has_no_solution_and_no_expected_literal(student_edition):
    instructor = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert set(student_edition) == instructor
    for name, nb in student_edition.items():
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            assert "SOLUTION" not in source and "HIDDEN TESTS" not in source, name
            assert "expected=" not in source, name
            for exercise, var, lab in CHECK.findall(source):
                # the cell the student edits: the question's variable and the check, nothing else
                want = f'{var} = ...\n\ncourse.check("{exercise}", {var}{lab})'
                assert source.strip() == want, (name, source)


def test_student_edition_keeps_the_teaching(student_edition):
    text = "\n".join("".join(c["source"]) for nb in student_edition.values() for c in nb["cells"])
    assert text.count("course.check(") == len(EXERCISES)
    assert "course.predict(" in text and "course.explain(" in text
