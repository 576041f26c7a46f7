"""A student's copy of the course, brought up to date at every start of their server
(``deploy/start-singleuser.sh``; docs/class.md, step 7: course updates).

A file the student does not have is copied; one they have not changed since it was copied is
replaced by the new version; one they changed is never overwritten (said once, on stderr: their
server's log). ``~/.vpnlab/course.sha256`` remembers, per file, the version last copied or
offered (``sha256sum``'s format).

"Changed" is what a student's work changes. For a notebook that is its cells' types and sources,
not what JupyterLab writes by itself: opening a notebook starts its kernel, which adds
``language_info`` to the metadata, and autosave then wrote the file, so a notebook a student
only opened or ran counted as theirs and no update reached it. Outputs, execution counts, ids
and the file's formatting do not count; any other file's bytes do.

    python -m vpnlab.course.student_copy COURSE     merge COURSE into ~/course
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

MANIFEST = Path(".vpnlab/course.sha256")
"""Under the student's home: ``FINGERPRINT  NAME`` a line, the version last copied or offered."""


def fingerprint(name: str, data: bytes) -> str:
    """A notebook's cells (type and source), or any other file's bytes, as SHA-256 hex."""
    if name.endswith(".ipynb"):
        try:
            cells = [
                [cell["cell_type"], "".join(cell["source"])] for cell in json.loads(data)["cells"]
            ]
        except (ValueError, KeyError, TypeError):
            pass  # not a notebook's JSON: its bytes, as for any file
        else:
            return hashlib.sha256(json.dumps(cells).encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """``NAME -> FINGERPRINT`` of the manifest (empty if there is none yet)."""
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    return {line[66:]: line[:64] for line in lines if len(line) > 66 and line[64:66] == "  "}


def merge(course: Path, home: Path, say: Callable[[str], None]) -> None:
    """Bring ``home``/course up to date with ``course`` (module docstring)."""
    mine = home / "course"
    manifest_path = home / MANIFEST
    manifest = read_manifest(manifest_path)
    offered: dict[str, str] = {}
    for source in sorted(course.rglob("*")):
        name = source.relative_to(course).as_posix()
        if not source.is_file() or source.name.startswith("."):
            continue
        copied = manifest.get(name)
        try:
            copied = update(source, mine / name, name, copied, say)
        except OSError as exc:  # one file the student made unreadable stops no server
            say(f"vpnlab: course: {name} left as it is: {exc.strerror or exc}")
        if copied:
            offered[name] = copied
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    written = manifest_path.with_name(manifest_path.name + ".new")
    written.write_text("".join(f"{value}  {name}\n" for name, value in offered.items()))
    written.replace(manifest_path)


def update(
    source: Path, target: Path, name: str, copied: str | None, say: Callable[[str], None]
) -> str | None:
    """One file of the course into the student's copy; the fingerprint to remember for it."""
    new = fingerprint(name, source.read_bytes())
    if not target.exists():
        copy(source, target)
        return new
    mine = target.read_bytes()
    have = fingerprint(name, mine)
    if have == new:
        return new
    bytes_hash = hashlib.sha256(mine).hexdigest()  # what the shell version's manifest holds
    if copied in (have, bytes_hash):  # untouched since copied: the new version
        copy(source, target)
        say(f"vpnlab: course: {name} updated")
        return new
    if copied != new:
        say(f"vpnlab: course: {name} has a new version; yours has changes and is kept")
        return new  # said once
    return copied


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m vpnlab.course.student_copy COURSE (a folder)", file=sys.stderr)
        return 2
    umask = os.umask(0o077)  # the student's copy is theirs alone
    try:
        merge(Path(argv[0]), Path.home(), lambda line: print(line, file=sys.stderr))
    except OSError as exc:
        print(f"vpnlab: course: cannot update ~/course: {exc}", file=sys.stderr)
        return 1
    finally:
        os.umask(umask)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
