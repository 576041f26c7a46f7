"""The class install (``scripts/setup.sh --system``, docs/class.md) from any checkout.

- From a clone in a 0700 folder (a Debian 12 home): ``git clone`` of this checkout's HEAD into
  a 0700 parent, ``setup.sh --system`` from the clone into a prefix of the test's own (the
  installed package holds the clone's modules, not a stale one an older build left in
  ``build/lib``, and nothing is written into the clone), then the student paths against that
  install: a rootless lab as a new Unix user (up, verify, down) and a hub that spawns a
  server for a student whose notebook cell builds a lab.
- What the install holds: the student edition only. No file under the prefix has the content
  of an instructor notebook (or its jupytext pair), and no notebook in it holds a solution or a
  hidden test.
- ``hidepid=2`` on /proc (docs/class.md): in a private mount namespace (never the host's
  /proc), a student's ``ps`` no longer shows another student's processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from vpnlab.course.classhub import user_processes

from .helpers import SERVER_IP, root_snapshot, wait_until
from .test_jupyterhub import LAB_CELL, running_hub, tail
from .users import (
    REPO,
    Student,
    build_class_install,
    class_install,
    install_bin,
    made_folder,
    tun_node,
    unix_user,
)

INSTRUCTOR_MARKS = ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "END SOLUTION")


def test_the_suite_paths_from_a_clone_in_a_0700_home(tmp_path):
    """``git clone`` into a 0700 folder, the class install built from the clone, then a rootless
    lab and a hub spawn as new users on that install."""
    before = root_snapshot()
    home = Path(tempfile.mkdtemp(prefix="vpnlab-home-", dir="/tmp"))
    home.chmod(0o700)
    prefix = Path(tempfile.mkdtemp(prefix="vpnlab-clone-install-", dir="/tmp"))
    prefix.chmod(0o755)
    try:
        clone = home / "vpnlab"
        cloned = subprocess.run(
            ["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cloned.returncode == 0, cloned.stderr
        stale = clone / "build/lib/vpnlab/stale_module.py"  # an older checkout's build
        stale.parent.mkdir(parents=True)
        stale.write_text("DELETED_SINCE = 1\n")
        build_class_install(prefix, source=clone)
        assert not str(os.path.realpath(install_bin(prefix))).startswith(str(home))
        assert installed_modules(prefix) == modules(clone / "vpnlab")
        assert untracked(clone) == ["build/"], "the install wrote into the checkout"
        with unix_user("k") as user, made_folder() as folder:
            student = Student(user, install_bin(prefix), {"VPNLAB_TUN_NODE": str(tun_node(folder))})
            up = student.vpnlab("lab", "up", "--prefix", "cl-")
            assert up.returncode == 0, up.stderr
            verify = student.vpnlab("lab", "verify", "--prefix", "cl-", "--json")
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert all(c["ok"] for c in json.loads(verify.stdout)["checks"])
            down = student.vpnlab("lab", "down", "--prefix", "cl-")
            assert down.returncode == 0, down.stderr
            assert user_processes(user.pw_uid) == []
        with unix_user("j") as user, running_hub(tmp_path, prefix) as hub:
            name = user.pw_name
            assert hub.spawn(name) in (201, 202)
            assert wait_until(lambda: hub.ready(name), 90, 0.5) is not None, tail(hub)
            answer = hub.answer(name, LAB_CELL.format(name="00_setup_topology"))
            assert answer["prefix"] == "nb00-" and answer["whoami"] == f"you are {SERVER_IP}"
            assert hub.api("DELETE", f"/hub/api/users/{name}/server")[0] in (202, 204)
            assert wait_until(lambda: hub.stopped(name), 40, 0.5) is not None
            assert wait_until(lambda: user_processes(user.pw_uid) == [], 10) is not None
    finally:
        subprocess.run(["rm", "-rf", str(home), str(prefix)], check=False, timeout=120)
    assert root_snapshot() == before


def modules(package: Path) -> list[str]:
    """The package's modules, as paths below it."""
    return sorted(str(p.relative_to(package)) for p in package.rglob("*.py"))


def installed_modules(prefix: Path) -> list[str]:
    """The modules of the vpnlab installed in the class install's venv."""
    (site,) = (prefix / "venv/lib").glob("python3*/site-packages")
    return modules(site / "vpnlab")


def untracked(checkout: Path) -> list[str]:
    """What git does not track in the checkout, ignored files included."""
    status = ["git", "-C", str(checkout), "status", "--porcelain", "--ignored"]
    lines = subprocess.run(status, capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted(line[3:] for line in lines)


def test_the_install_holds_the_student_edition_only():
    """No instructor notebook (or jupytext pair) anywhere under the install; no solution or
    hidden test in the course it serves; everything readable, nothing writable by others."""
    prefix = class_install()
    instructor = {
        hashlib.sha256(path.read_bytes()).hexdigest(): path.name
        for path in (REPO / "notebooks").glob("[0-9][0-9]_*")
        if path.is_file()
    }
    found = []
    for folder, _, files in os.walk(prefix):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            mode = path.stat().st_mode
            assert mode & 0o004 and not mode & 0o022, f"{path}: mode {mode & 0o777:o}"
            if path.suffix in (".ipynb", ".py") and path.stat().st_size > 1000:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest in instructor:
                    found.append(f"{path} is {instructor[digest]}")
    assert found == []
    course = sorted((prefix / "course").iterdir())
    assert [p.name for p in course] == sorted(
        p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")
    )
    for notebook in course:
        text = notebook.read_text()
        assert not any(mark in text for mark in INSTRUCTOR_MARKS), notebook


def test_hidepid_hides_other_students_processes():
    """/proc mounted with hidepid=2 in a private mount namespace: a student's ps sees their own
    processes only; with a plain /proc mount the other student's are visible."""
    with unix_user("s") as a, unix_user("t") as b:
        other = subprocess.Popen(
            ["sleep", "30"], user=b.pw_uid, group=b.pw_gid, extra_groups=[], cwd="/"
        )
        try:
            seen = {}
            for options in ("rw", "hidepid=2"):
                script = (
                    f"mount -t proc -o {options} proc /proc && "
                    f"exec setpriv --reuid {a.pw_uid} --regid {a.pw_gid} --clear-groups "
                    "ps -eo uid="
                )
                done = subprocess.run(
                    ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert done.returncode == 0, done.stderr
                seen[options] = {int(u) for u in done.stdout.split()}
            assert b.pw_uid in seen["rw"]
            assert b.pw_uid not in seen["hidepid=2"] and seen["hidepid=2"] == {a.pw_uid}
        finally:
            other.kill()
            other.wait(timeout=10)
