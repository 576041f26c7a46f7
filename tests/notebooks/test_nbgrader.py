"""The instructor's nbgrader commands (docs/course.md, "Grading with nbgrader"), end to end, on
three students' submissions of notebook 00: complete, partial, and forged (answers copied from
another lab, a forged progress file, a grade cell emptied, the lab object's drawn values
replaced). ``nbgrader autograde`` re-runs each in a fresh lab of the instructor's (as root) with
the hidden tests; the grades must be 4, 1 and 2 of 4. Submissions are put where ``nbgrader
collect`` leaves them (one Unix user runs this test, and the exchange names a submitter by Unix
user). 3 to 6 minutes on the shared 2 cores (three labs built, nbgrader's own start-ups).
A second test runs the exchange itself with real Unix students (steps 2 and 3).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.lab.helpers import assert_gone, fresh_prefix, root_snapshot

from .helpers import NOTEBOOKS, ROOT

pytestmark = pytest.mark.lab

ASSIGNMENT = "00_setup_topology"
POINTS = 4  # 0.2 and 0.4 live (1 each), the fixed facts 0.1 and 0.3 as one set (2)
FORGE_DRAWN = 'lab.drawn = lambda: {"whoami_token": answer_0_4}'
ANSWERS = {  # student: (their answers, the grade autograde must give)
    "complete": (
        {
            "answer_0_1": "4",
            "answer_0_2": 'lab.prefix + "r2"',
            "answer_0_3": '"r2"',
            "answer_0_4": 'lab.whoami("r1", "http://203.0.113.10/token")',
        },
        4,
    ),
    "partial": (
        {"answer_0_1": "4", "answer_0_2": 'lab.prefix + "r2"', "answer_0_3": '"r1"'},
        1,  # 0.2; one fact wrong loses the set; 0.4 not answered
    ),
    "forged": (
        {
            "answer_0_1": "4",  # the facts, from a friend: right
            "answer_0_2": '"nb-r2"',  # the notes' default prefix, not the grading lab's
            # another lab's token, and the lab object told to agree with it
            "answer_0_4": f'"{secrets.token_hex(8)}"\n' + FORGE_DRAWN,
            "answer_0_3": '"r2"',
        },
        2,
    ),
}


def nbgrader(course: Path, *args: str, env: dict[str, str], timeout: float = 120) -> str:
    """``nbgrader ARGS`` in the course directory (this Python's); its output, or a failure."""
    argv = [sys.executable, "-m", "nbgrader", *args]
    done = subprocess.run(
        argv, cwd=course, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def answer(path: Path, answers: dict[str, str], forge: bool) -> None:
    """A student's work on the released notebook: ``variable = ...`` lines filled in; forged:
    a grade cell emptied too (autograde puts it back)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for var, expr in answers.items():
            cell.source = re.sub(rf"^{var} = \.\.\.$", f"{var} = {expr}", cell.source, flags=re.M)
        if forge and cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = "pass"
    nbformat.write(nb, path)


def test_release_submit_collect_autograde_feedback(tmp_path):
    course, exchange = tmp_path / "course", tmp_path / "exchange"
    exchange.mkdir()
    prefix = fresh_prefix()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "VPNLAB_PREFIX": prefix,  # the instructor's fresh lab for each submission
        "VPNLAB_PROGRESS": str(tmp_path / "instructor-progress.jsonl"),
    }
    env.pop("VPNLAB_COURSE_RESULTS", None)
    before = root_snapshot()
    # 1. the course directory and the student edition (nbgrader generate_assignment)
    build = [sys.executable, str(ROOT / "scripts" / "nbgrader_course.py"), str(course)]
    subprocess.run([*build, str(NOTEBOOKS / f"{ASSIGNMENT}.ipynb")], env=env, check=True)
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text() + f"c.Exchange.root = {str(exchange)!r}\n")
    # 2. released; fetched, answered and submitted by each student (as the exchange's collect
    # leaves them: submitted/STUDENT/ASSIGNMENT/; nbgrader names a submitter by Unix user)
    nbgrader(course, "release_assignment", ASSIGNMENT, env=env)
    where = ("--course", "vpnlab", f"--Exchange.root={exchange}")
    nbgrader(tmp_path, "fetch_assignment", ASSIGNMENT, *where, env=env)
    fetched = tmp_path / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    for student, (answers, _grade) in ANSWERS.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / f"{ASSIGNMENT}.ipynb").write_bytes(fetched.read_bytes())
        (folder / "timestamp.txt").write_text("2026-12-04 12:00:00.000000 UTC")
        answer(folder / f"{ASSIGNMENT}.ipynb", answers, forge=student == "forged")
        if student == "forged":  # every exercise "passed", as the student's own file says
            lines = [{"item": f"0.{i}", "passed": True, "time": 0.0} for i in range(1, 5)]
            forged = "".join(json.dumps(line) + "\n" for line in lines)
            (folder / "progress.jsonl").write_text(forged)
    # 3. autograded in fresh labs, feedback generated, grades exported
    try:
        nbgrader(course, "autograde", ASSIGNMENT, "--create", env=env, timeout=900)
    finally:
        subprocess.run(
            [sys.executable, "-m", "vpnlab", "lab", "down", "--prefix", prefix],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert_gone(prefix, {}, [])
    assert root_snapshot() == before, "the root namespace changed"
    nbgrader(course, "generate_feedback", ASSIGNMENT, env=env)
    nbgrader(course, "export", "--to", str(tmp_path / "grades.csv"), env=env)
    grades = _grades(tmp_path / "grades.csv")
    assert grades == {s: (float(g), float(POINTS)) for s, (_a, g) in ANSWERS.items()}
    for student in ANSWERS:
        page = course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        text = page.read_text()
        assert "Score:" in text or "score" in text.lower(), student
    forged = (course / "feedback" / "forged" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "not what this lab shows" in forged  # why 0.2 and 0.4 earned nothing


def _grades(path: Path) -> dict[str, tuple[float, float]]:
    """``{student: (score, max_score)}`` from ``nbgrader export``'s CSV."""
    import csv

    with path.open() as rows:
        return {
            row["student_id"]: (float(row["raw_score"]), float(row["max_score"]))
            for row in csv.DictReader(rows)
        }


def test_students_fetch_and_submit_through_the_exchange_and_collect_takes_them():
    """Steps 2 and 3 as a class does them: real Unix students run the class install's nbgrader
    (``fetch_assignment``, ``submit``), the instructor's ``collect`` takes each submission; a
    student cannot list the exchange's inbound, so no one finds another's submission."""
    from tests.lab.users import install_bin, made_folder, unix_user

    nbgrader_bin = install_bin() / "nbgrader"
    with made_folder() as folder, unix_user("x") as ann, unix_user("y") as ben:
        course, exchange = folder / "course", folder / "exchange"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        build = [sys.executable, str(ROOT / "scripts" / "nbgrader_course.py"), str(course)]
        subprocess.run([*build, str(NOTEBOOKS / f"{ASSIGNMENT}.ipynb")], env=env, check=True)
        config = course / "nbgrader_config.py"
        config.write_text(config.read_text() + f"c.Exchange.root = {str(exchange)!r}\n")
        nbgrader(course, "release_assignment", ASSIGNMENT, env=env)
        where = f"--course vpnlab --Exchange.root={exchange}"
        for student, answers in ((ann, ANSWERS["complete"][0]), (ben, {})):
            work = Path(student.pw_dir) / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            as_student(student, f"cd ~ && {nbgrader_bin} fetch_assignment {ASSIGNMENT} {where}")
            if answers:
                edited = folder / "edited.ipynb"
                edited.write_bytes(work.read_bytes())
                answer(edited, answers, forge=False)
                as_student(student, f"cat > {work}", stdin=edited.read_bytes())
            as_student(student, f"cd ~ && {nbgrader_bin} submit {ASSIGNMENT} {where}")
        listed = as_student(ben, f"ls {exchange}/vpnlab/inbound", check=False)
        assert listed.returncode != 0 and "Permission denied" in listed.stderr
        nbgrader(course, "collect", ASSIGNMENT, f"--Exchange.root={exchange}", env=env)
        for student in (ann, ben):
            taken = course / "submitted" / student.pw_name / ASSIGNMENT
            assert (taken / "timestamp.txt").exists(), sorted(course.rglob("*"))
        mine = course / "submitted" / ann.pw_name / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        sources = "".join(cell.source for cell in nbformat.read(mine, as_version=4).cells)
        assert 'answer_0_3 = "r2"' in sources  # ann's work, as she submitted it


def as_student(
    student: pwd.struct_passwd, script: str, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``script`` in a shell of ``student``'s, as a terminal in their server runs it."""
    done = subprocess.run(
        ["runuser", "-u", student.pw_name, "--", "sh", "-c", script],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"{script}:\n{done.stdout}\n{done.stderr}"
    return done
