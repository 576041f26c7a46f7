"""Every exercise's check: live ones against real labs (a value copied from another lab
fails), fixed facts graded as one set by the hidden tests (their key: the instructor edition),
no answer, digest or salt anywhere a student reads, and the student edition made by nbgrader.
The tests that build labs are marked ``lab``; the others need no root."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.helpers import fresh_prefix
from vpnlab.course import grading
from vpnlab.course.exercises import EXERCISES, FACTS, LIVE
from vpnlab.course.progress import load
from vpnlab.lab import down, up
from vpnlab.lab.draw import WHOAMI_TOKEN

from .helpers import NOTEBOOKS, ROOT

CHECK = re.compile(r'course\.check_answer\("([\d.]+)", (answer_\w+)(, lab)?\)')
BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
FACT_LINE = re.compile(r'^\s*"([\d.]+)": \((answer_\w+), (.*)\),$', re.M)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


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


def fact_keys() -> dict[str, dict[str, object]]:
    """``{notebook: {exercise: key}}`` from each notebook's hidden ``grade_facts`` block."""
    keys: dict[str, dict[str, object]] = {}
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        for block in HIDDEN.findall(path.read_text()):
            if "course.grade_facts(" in block:
                for exercise, _var, key in FACT_LINE.findall(block):
                    # literals, range(), and 11.1's key from the student's template (alice's)
                    value = eval(key, {"__builtins__": {}, "range": range, "template": "alice%d"})
                    keys.setdefault(path.stem, {})[exercise] = value
    return keys


SOLUTIONS = solutions()
KEYS = fact_keys()
KEY = {exercise: key for per_notebook in KEYS.values() for exercise, key in per_notebook.items()}


def first(key):
    """One accepted answer of a key (a range or list holds several)."""
    return key[0] if isinstance(key, range | list | tuple) else key


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
    "6.2": [0, 1, 6],
    "6.3": ["SIGKILL", "sigint"],
    "6.4": ["nat", "filter", "inet"],
    "7.1": ["tcp", "esp"],
    "7.2": [25, 40, 1],
    "7.3": [4, 1, 0],
    "7.4": [60, 15, 10],
    "8.1": ["r2", "web"],
    "8.2": [8, 3],
    "8.3": ["198.51.100.2", "192.0.2.2"],
    "8.4": ["203.0.113.1", "192.0.2.1"],
    "9.1": ["172.16.1.0/24", "10.8.0.0/24"],
    "9.2": ["192.0.2.2", "172.16.2.10"],
    "9.3": ["172.16.2.10", "198.51.100.2", "192.0.2.2"],
    "9.4": [3, 1],
    "10.1": [False, "True"],
    "10.2": [1, 3, 1.5],
    "10.3": [8, 2, 3],
    "10.4.1": ["client", "r2"],
    "10.4.2": ["server", "r1"],
    "10.5": [False, "yes"],
    "11.1": ["alice0", "alice2", "alice%d", "smith1"],
    "11.2": [16, 14],
    "11.3": [4],
    "11.4": ["EIO", "EPERM", "22"],
    "12.3": [42, 0, 20],
    "12.4": [False, 1],
    "12.5": [6, 0, 2],
    "13.1": [1500, 1500 - 20, 1443],
    "13.2": [1438, 1443, 1472, 1395],
    "13.3": [True, 0],
    "13.4": [1407, 1472, 1438, 1411],
    "13.5": [1460, 1435, 1400],
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
    assert sorted(LIVE + FACTS) == sorted(EXERCISES)
    assert set(TEMPTING) == set(FACTS)


def test_every_live_check_is_given_the_lab():
    """A live check judges in the lab: its call passes ``lab`` (else it says so, and fails)."""
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        for exercise, _var, lab in CHECK.findall(path.read_text()):
            assert lab or exercise not in LIVE, exercise


def test_every_fixed_fact_is_in_its_notebooks_hidden_set():
    """Each notebook's facts are graded together, in one hidden block (the only answer key)."""
    assert sorted(KEY) == sorted(FACTS)
    for notebook, keys in KEYS.items():
        assert {e.split(".")[0] for e in keys} == {str(int(notebook[:2]))}


def test_no_answer_digest_or_salt_where_a_student_reads():
    """No digest, salt or answer key in the package: the registry holds kinds and hints only."""
    course = ROOT / "vpnlab" / "course"
    for name in ("exercises.py", "grading.py", "notebook.py", "progress.py", "report.py"):
        text = (course / name).read_text()
        assert "hashlib" not in text and "SALT" not in text and "digest" not in text, name
    assert "results" not in (course / "exercises.py").read_text()  # never what a notebook recorded
    for exercise in FACTS:
        hint = EXERCISES[exercise].hint.lower()
        assert str(first(KEY[exercise])).lower() not in re.split(r"[^\w.:/]+", hint), exercise


def test_no_solutions_file_ships_beside_the_notebooks():
    assert not (ROOT / "tests" / "notebooks" / "solutions.py").exists()


@pytest.mark.parametrize("exercise", FACTS)
def test_fixed_facts_pass_as_a_set_and_one_wrong_fails_it(exercise):
    """The notebook's key passes; one tempting or wrongly typed answer fails the whole set,
    and the message does not say which."""
    notebook = next(n for n, keys in KEYS.items() if exercise in keys)
    answers = {e: (first(k), k) for e, k in KEYS[notebook].items()}
    grading.grade_facts(answers)
    spec, right = EXERCISES[exercise], first(KEY[exercise])
    said = f"the fixed facts ({', '.join(answers)}), graded as a set: not all right"
    for wrong in [*TEMPTING[exercise], *wrong_kinds(spec.kind, right), ...]:
        with pytest.raises(AssertionError) as failed:
            grading.grade_facts({**answers, exercise: (wrong, KEY[exercise])})
        assert str(failed.value) == said  # the same words whichever answer is wrong
    with pytest.raises(ValueError, match="fixed fact"):
        grading.judge(exercise, right, grading.LocalLab("nolab-"))


def test_a_fact_is_recorded_without_a_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPNLAB_PROGRESS", str(tmp_path / "progress.jsonl"))
    grading.check_answer("3.2", ...)  # not answered: nothing recorded
    grading.check_answer("3.2", 32)
    grading.check_answer("3.2", 31)  # right or wrong: the same words
    out = capsys.readouterr().out
    assert out.count("graded by your instructor") == 2 and "correct" not in out
    with pytest.raises(AssertionError, match="not a int"):
        grading.check_answer("3.2", "32")  # the wrong type is said at once
    assert [(a.item, a.passed) for a in load()] == [("3.2", False), ("3.2", False)]


def test_prediction_and_explanation_are_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("VPNLAB_PROGRESS", str(tmp_path / "progress.jsonl"))
    grading.predict("7.4", 60)  # a prediction, recorded before the demonstration
    with pytest.raises(AssertionError, match="words"):
        grading.explain("7.4", "delay")
    grading.explain("7.4", "the delay is on the way back only, so once per round trip")
    items = [(a.item, a.passed) for a in load()]
    assert items == [("7.4:predict", True), ("7.4:explain", False), ("7.4:explain", True)]
    assert json.loads(load()[0].detail) == 60


# --- live exercises, in real labs -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_labs():
    """Two labs up at once, as two students' (each its own drawn values); removed after."""
    if sys.platform != "linux" or not Path("/run").exists():
        pytest.skip("needs Linux")
    prefixes = [fresh_prefix(), fresh_prefix()]
    try:
        for prefix in prefixes:
            up(prefix)
        yield [grading.LocalLab(p) for p in prefixes]
    finally:
        for prefix in prefixes:
            down(prefix)


LIVE_CASES = {  # exercise: (the answer in lab A, from lab A's view; wrong answers anywhere)
    "0.2": (lambda lab: lab.prefix + "r2", ["r2", "nb-r2", "vpnlab-r2"]),
    "0.4": (lambda lab: lab.drawn()[WHOAMI_TOKEN], ["", "0" * 16]),
    "10.6": (lambda lab: "10.8.0.2", ["10.8.0.2/24", "10.8.0.3", "192.0.2.2"]),
    "14.1": (lambda lab: "fd10:8::2", ["fd10:8::2/64", "fd10:8::1", "10.8.0.2"]),
}


@pytest.mark.lab
@pytest.mark.parametrize("exercise", LIVE)
def test_live_answer_is_what_this_lab_shows_and_another_labs_fails(two_labs, exercise):
    lab_a, lab_b = two_labs
    answer_of, wrongs = LIVE_CASES[exercise]
    right = answer_of(lab_a)
    assert grading.judge(exercise, right, lab_a)
    assert grading.judge(exercise, answer_of(lab_b), lab_b)
    if answer_of(lab_a) != answer_of(lab_b):  # drawn or prefixed: lab A's answer is wrong in B
        assert not grading.judge(exercise, right, lab_b)
    for wrong in [*wrongs, *wrong_kinds(EXERCISES[exercise].kind, right)]:
        assert not grading.judge(exercise, wrong, lab_a), wrong
    assert not grading.judge(exercise, right, grading.LocalLab("nolab-"))  # no lab: wrong


@pytest.mark.lab
def test_who_am_i_serves_each_labs_own_token(two_labs):
    tokens = []
    for lab in two_labs:
        done = lab.exec_in("r1", ["curl", "-s", "-m", "3", "http://203.0.113.10/token"])
        tokens.append(done.stdout.strip())
        assert tokens[-1] == lab.drawn()[WHOAMI_TOKEN] and re.fullmatch("[0-9a-f]{16}", tokens[-1])
    assert tokens[0] != tokens[1]


@pytest.mark.lab
def test_a_live_check_in_the_notebook_and_its_grade_cell(two_labs, tmp_path, monkeypatch, capsys):
    """``course.check_answer`` gives practice feedback and records; ``course.grade`` (the grade
    cell) reads the lab afresh, whatever the notebook's object says."""
    from vpnlab.course import notebook as course

    monkeypatch.setenv("VPNLAB_PROGRESS", str(tmp_path / "progress.jsonl"))
    lab_a, lab_b = two_labs
    lab = course.CourseLab("exercises", lab_prefix=lab_a.prefix)
    token = lab.drawn()[WHOAMI_TOKEN]
    course.check_answer("0.4", token, lab)
    with pytest.raises(AssertionError, match="not what your lab shows"):
        course.check_answer("0.4", lab_b.drawn()[WHOAMI_TOKEN], lab)
    assert [(a.item, a.passed) for a in load()] == [("0.4", True), ("0.4", False)]
    course.grade("0.4", token, lab)
    lab.drawn = lambda: {WHOAMI_TOKEN: "forged"}  # a student's code changing the object
    with pytest.raises(AssertionError, match="not what this lab shows"):
        course.grade("0.4", "forged", lab)
    assert "correct" in capsys.readouterr().out


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory):
    """The student edition, made by scripts/student-edition.sh (nbgrader generate_assignment)."""
    out = tmp_path_factory.mktemp("student")
    done = subprocess.run(
        [str(ROOT / "scripts" / "student-edition.sh"), str(out)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(out)},
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
            assert "expected=" not in source and "grade_facts" not in source, name
            for exercise, var, lab in CHECK.findall(source):
                # the cell the student edits: the question's variable and the check, nothing else
                want = f'{var} = ...\n\ncourse.check_answer("{exercise}", {var}{lab})'
                assert source.strip() == want, (name, source)


def test_student_edition_keeps_the_teaching(student_edition):
    text = "\n".join("".join(c["source"]) for nb in student_edition.values() for c in nb["cells"])
    assert text.count("course.check_answer(") == len(EXERCISES)
    assert "course.predict(" in text and "course.explain(" in text
    assert text.count("course.grade(") == len(LIVE)


def test_student_edition_carries_nbgraders_cells(student_edition):
    """Grade cells with points (one per live exercise, one per fixed fact), solution cells,
    every other code cell locked, each with its own id."""
    for name, nb in student_edition.items():
        meta = [c["metadata"].get("nbgrader") for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(meta), name
        ids = [m["grade_id"] for m in meta]
        assert len(ids) == len(set(ids)), name
        points = sum(m.get("points", 0) for m in meta if m["grade"])
        number = str(int(name[:2]))
        mine = [e for e in EXERCISES if e.split(".")[0] == number]
        assert points >= len(mine), name  # (code exercises add behaviour tests)
        assert all(m["locked"] for m in meta if not m["solution"]), name
