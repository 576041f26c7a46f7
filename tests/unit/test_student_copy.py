"""vpnlab/course/student_copy.py: the course merged into a student's ~/course at each start of
their server. A notebook the student only opened (JupyterLab wrote it back with the kernel's
``language_info``, outputs, counts, its own formatting) is still the course's and takes an
update; one whose cells they edited is theirs and is kept. (The script's integration:
tests/lab/test_rootless.py, test_course_update_keeps_the_students_work.)"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from vpnlab.course import student_copy
from vpnlab.course.student_copy import MANIFEST, fingerprint, merge


def notebook(*sources: str) -> dict:
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}}
        | {"outputs": [], "source": source.splitlines(keepends=True)}
        for i, source in enumerate(sources)
    ]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def write(path: Path, nb: dict, indent: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=indent) + "\n")


def opened_and_run(path: Path) -> None:
    """What JupyterLab leaves in a notebook a student opened and ran without editing a cell."""
    nb = json.loads(path.read_text())
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2"}
    for count, cell in enumerate(nb["cells"], 1):
        cell["execution_count"] = count
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["hi\n"]}]
        cell["source"] = "".join(cell["source"])  # a string, not a list of lines
    write(path, nb, indent=2)


@pytest.fixture
def course(tmp_path: Path) -> Path:
    folder = tmp_path / "course"
    write(folder / "00_a.ipynb", notebook("a = 1\n", "answer = ...\n"))
    write(folder / "01_b.ipynb", notebook("b = 1\n"))
    (folder / "data.txt").write_text("v1\n")
    return folder


def said(home: Path, course: Path) -> list[str]:
    lines: list[str] = []
    merge(course, home, lines.append)
    return lines


def test_a_notebook_only_opened_and_run_takes_the_update(tmp_path, course):
    home = tmp_path / "home"
    assert said(home, course) == []  # all copied
    opened_and_run(home / "course/00_a.ipynb")
    write(course / "00_a.ipynb", notebook("a = 2\n", "answer = ...\n"))
    assert said(home, course) == ["vpnlab: course: 00_a.ipynb updated"]
    mine, theirs = (home / "course/00_a.ipynb").read_bytes(), (course / "00_a.ipynb").read_bytes()
    assert fingerprint("00_a.ipynb", mine) == fingerprint("00_a.ipynb", theirs)


def test_a_notebook_whose_cells_the_student_edited_is_kept_and_said_once(tmp_path, course):
    home = tmp_path / "home"
    said(home, course)
    mine = home / "course/00_a.ipynb"
    write(mine, notebook("a = 1\n", "answer = 42\n"))
    write(course / "00_a.ipynb", notebook("a = 2\n", "answer = ...\n"))
    kept = "vpnlab: course: 00_a.ipynb has a new version; yours has changes and is kept"
    assert said(home, course) == [kept]
    assert said(home, course) == []  # said once
    assert "answer = 42" in mine.read_text()


def test_other_files_count_by_their_bytes_and_new_ones_are_copied(tmp_path, course):
    home = tmp_path / "home"
    said(home, course)
    (home / "course/data.txt").write_text("v1 with my note\n")
    (course / "data.txt").write_text("v2\n")
    write(course / "sub/02_c.ipynb", notebook("c = 1\n"))
    (course / ".hidden").write_text("not handed out\n")
    lines = said(home, course)
    assert lines == ["vpnlab: course: data.txt has a new version; yours has changes and is kept"]
    assert (home / "course/sub/02_c.ipynb").exists()
    assert not (home / "course/.hidden").exists()


def test_a_manifest_of_file_hashes_from_before_still_tells_untouched_files(tmp_path, course):
    """The manifests the shell version wrote hold each file's sha256sum: a file it copied and
    the student left alone is still replaced."""
    home = tmp_path / "home"
    (home / "course").mkdir(parents=True)
    lines = []
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (home / "course" / name).write_bytes((course / name).read_bytes())
        lines.append(f"{hashlib.sha256((course / name).read_bytes()).hexdigest()}  {name}\n")
    (home / MANIFEST).parent.mkdir()
    (home / MANIFEST).write_text("".join(lines))
    write(course / "01_b.ipynb", notebook("b = 2\n"))
    assert said(home, course) == ["vpnlab: course: 01_b.ipynb updated"]


def test_main_makes_the_copy_the_students_alone(tmp_path, course, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert student_copy.main([str(course)]) == 0
    assert stat.S_IMODE((home / "course/00_a.ipynb").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "course").stat().st_mode) == 0o700
    assert student_copy.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_file_that_cannot_be_read_is_left_and_the_rest_updated(tmp_path, course):
    """One file the student turned into something else stops no server start."""
    home = tmp_path / "home"
    said(home, course)
    (home / "course/00_a.ipynb").unlink()
    (home / "course/00_a.ipynb").mkdir()  # a folder where the notebook was
    write(course / "01_b.ipynb", notebook("b = 2\n"))
    lines = said(home, course)
    assert lines[0].startswith("vpnlab: course: 00_a.ipynb left as it is: ")
    assert lines[1:] == ["vpnlab: course: 01_b.ipynb updated"]
