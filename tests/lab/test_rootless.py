"""The student's path a second time, as ordinary Unix users: rootless labs (vpnlab/lab/rootless.py).

Two real users, made here and removed after (``users.py``), each run ``vpnlab lab up`` with the
same prefix, so the same namespace names and addresses, at the same time: up, verify (ping and
who-am-I through the tunnel), a capture, FTP through the tunnel, the liveness timeout after a
kill -9, the refusals, then down and kill -9 of the holder, each proven to leave nothing. And
isolation: neither can see, enter or signal the other's lab, nor read its key files.

The users run the session's class install (``users.class_install``: ``scripts/setup.sh
--system`` under /tmp), never this checkout, which may sit in a 0700 home. The host's
/dev/net/tun is 0600 here (no udev): each holder binds a 0666 node the test made
(``VPNLAB_TUN_NODE``), as the issue checked; without it the VPN's start is refused in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpnlab.core.constants import LIVENESS_TIMEOUT_S
from vpnlab.course.classhub import user_processes

from .helpers import SERVER_IP, WEB_IP, root_snapshot, stop_with_sigterm, wait_until
from .users import (
    Student,
    class_install,
    clone_for,
    install_bin,
    made_folder,
    tun_node,
    unix_user,
)

PREFIX = "rl-"
"""Both users' labs: the same prefix, so the same namespace names (rl-r1, ...) and addresses."""


@pytest.fixture(scope="module")
def host() -> Iterator[dict]:
    """The users' Python (the class install's), the TUN node; the root namespace kept as it was."""
    before = root_snapshot()
    with made_folder() as folder:
        yield {"python_bin": install_bin(), "tun": tun_node(folder)}
    assert root_snapshot() == before


@pytest.fixture(scope="module")
def students(host) -> Iterator[tuple[Student, Student]]:
    """Two users, each with their lab up (prefix rl-), removed after; the root namespace kept."""
    with unix_user("a") as a, unix_user("b") as b:
        pair = tuple(
            Student(u, host["python_bin"], {"VPNLAB_TUN_NODE": str(host["tun"])}) for u in (a, b)
        )
        for student in pair:
            up = student.vpnlab("lab", "up", "--prefix", PREFIX)
            assert up.returncode == 0, up.stderr
        yield pair
        for student in pair:
            down = student.vpnlab("lab", "down", "--prefix", PREFIX)
            assert down.returncode == 0, down.stderr
            assert user_processes(student.user.pw_uid) == []
            assert not (student.home / ".vpnlab/labs" / PREFIX).exists()


def status(student: Student) -> dict:
    result = student.vpnlab("lab", "status", "--prefix", PREFIX, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def holder(student: Student) -> int:
    record = json.loads((student.home / ".vpnlab/holders" / f"{PREFIX}.json").read_text())
    return int(record["pid"])


def host_pid(student: Student, daemon: str) -> int:
    """The host's PID of a VPN daemon of the student's lab (the record has the holder's PID)."""
    for pid in user_processes(student.user.pw_uid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [word for word in argv[1:] if word != b"-P"]  # lab.nodes.python_argv's -P
        if words[:3] == [b"-m", b"vpnlab", daemon.encode()]:
            return pid
    raise AssertionError(f"{daemon} of {student.user.pw_name} not found")


def test_verify_as_each_user_same_names_no_clash(students):
    """Both labs at once, same namespaces and addresses: each verifies through its tunnel."""
    for student in students:
        result = student.vpnlab("lab", "verify", "--prefix", PREFIX, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        assert checks[f"who-am-I says {SERVER_IP}"]["ok"]
        assert checks[f"route to {WEB_IP} via tun0"]["ok"]
        assert all(c["ok"] for c in checks.values())  # IPv6 through the tunnel too
        nodes = status(student)["nodes"]
        assert nodes["r1"]["namespace"] == f"{PREFIX}r1" and nodes["r1"]["exists"]
        assert f"{SERVER_IP}/24" in nodes["r2"]["interfaces"]["eth0"]["addresses"]


def test_state_is_the_users_and_closed_to_others(students):
    a, b = students
    folder = a.home / ".vpnlab"
    assert folder.stat().st_uid == a.user.pw_uid and folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "labs" / PREFIX / "lab.json").exists()
    keys = [
        p
        for p in (folder / "labs" / PREFIX).rglob("*")
        if p.is_file() and "key" in p.name or p.name == "esp_sa"
    ]
    assert keys
    for key in keys:
        result = b.run(["cat", str(key)])
        assert result.returncode != 0 and "Permission denied" in result.stderr


def test_capture_as_user(students):
    a, _ = students
    pcap = a.home / "tunnel.pcap"
    result = a.vpnlab("capture", "--prefix", PREFIX, "r2", "eth0", "--count", "4", "-w", str(pcap))
    assert result.returncode == 0, result.stderr
    assert pcap.stat().st_uid == a.user.pw_uid and pcap.stat().st_size > 100
    assert "esp" in result.stdout
    decode = a.vpnlab("capture", "decode", str(pcap))  # a file only: no holder needed
    assert decode.returncode == 0 and "udpencap:esp" in decode.stdout, decode.stderr


def test_tcpdump_refused_dumpcap_works(students):
    """tcpdump drops privileges to a user the holder does not map; dumpcap does not."""
    a, _ = students
    tcpdump = a.vpnlab(
        "lab", "exec", "--prefix", PREFIX, "r1", "tcpdump", "-c1", "-ni", "eth0", timeout=20
    )
    assert tcpdump.returncode != 0
    dumpcap = a.vpnlab(
        "lab",
        "exec",
        "--prefix",
        PREFIX,
        "r1",
        "dumpcap",
        "-q",
        "-i",
        "tun0",
        "-a",
        "duration:1",
        "-w",
        "/dev/null",
        timeout=20,
    )
    assert dumpcap.returncode == 0, dumpcap.stderr


FTP = """
import json, sys
from vpnlab.instruments import ftp
with ftp.lab_server(sys.argv[1]):
    print(json.dumps(ftp.lab_transfer(sys.argv[1], mode="passive", size_bytes=3000)))
"""


def test_ftp_through_the_tunnel_as_user(students):
    """The course's FTP helpers, in the user's holder: a server in r2, a transfer from r1."""
    a, _ = students
    result = a.vpnlab(
        "lab", "exec", "--prefix", PREFIX, "r1", a.python, "-c", FTP, PREFIX, timeout=60
    )
    assert result.returncode == 0, result.stderr
    transfer = json.loads(result.stdout.strip().splitlines()[-1])
    assert transfer["ok"], transfer


def test_isolation_between_users(students):
    """b cannot see a's lab from its holder, nor signal, enter or read a's processes."""
    a, b = students
    server = host_pid(a, "server")
    listing = b.vpnlab("lab", "exec", "--prefix", PREFIX, "r1", "ps", "-eo", "args")
    assert listing.returncode == 0 and str(a.home) not in listing.stdout
    kill = b.run([b.python, "-c", f"import os; os.kill({server}, 15)"])
    assert "PermissionError" in kill.stderr
    for ns in ("net", "user", "mnt", "pid"):
        peek = b.run([b.python, "-c", f"import os; os.readlink('/proc/{server}/ns/{ns}')"])
        assert "PermissionError" in peek.stderr
    enter = b.run(
        ["nsenter", "-t", str(holder(a)), "--user", "--mount", "--preserve-credentials", "true"]
    )
    assert enter.returncode != 0
    assert os.path.exists(f"/proc/{server}")  # a's server still runs
    assert status(a)["daemons"]["server"]["alive"]


def test_liveness_timeout_after_kill_as_user(students):
    """kill -9 of a's client inside its holder: the server drops the session within ~6 s."""
    a, _ = students
    inner_pid = status(a)["daemons"]["client-r1"]["pid"]
    kill = a.vpnlab("lab", "exec", "--prefix", PREFIX, "r1", "kill", "-9", str(inner_pid))
    assert kill.returncode == 0, kill.stderr
    killed = time.monotonic()
    took = wait_until(
        lambda: not status(a)["tunnel"]["server"]["clients"], LIVENESS_TIMEOUT_S + 6, 0.3
    )
    assert took is not None and time.monotonic() - killed < LIVENESS_TIMEOUT_S + 4
    restart = a.vpnlab("lab", "start-vpn", "--prefix", PREFIX)
    assert restart.returncode == 0, restart.stderr


def test_refusals_are_one_line(host):
    """No TUN node for the VPN: one line naming the fix. Commands of a lab that is not up too."""
    with unix_user("c") as c_user:
        c = Student(c_user, host["python_bin"], {})
        up = c.vpnlab("lab", "up", "--prefix", PREFIX)
        assert up.returncode == 1 and len(up.stderr.strip().splitlines()) == 1
        assert "/dev/net/tun is mode 0600" in up.stderr and "VPNLAB_TUN_NODE" in up.stderr
        st = c.vpnlab("lab", "status", "--prefix", PREFIX)
        assert st.returncode == 1 and "no lab with prefix 'rl-' is up" in st.stderr
        no_vpn = c.vpnlab("lab", "up", "--prefix", PREFIX, "--no-vpn")
        assert no_vpn.returncode == 0, no_vpn.stderr
        down = c.vpnlab("lab", "down", "--prefix", PREFIX)
        assert down.returncode == 0 and "holder" in down.stdout
        assert user_processes(c_user.pw_uid) == []


def test_a_tun_node_in_run_is_bound_before_run_is_hidden(host):
    """An admin's node under /run: the holder binds it before its own tmpfs hides /run (it
    bound it after, and every lab failed with mount's "dmesg(1) may have more information").
    Where /run is mounted nodev (systemd's), the refusal is one line naming it instead."""
    folder = Path("/run") / f"vpnlab-test-tun-{os.getpid()}"
    folder.mkdir(mode=0o755)
    try:
        node = tun_node(folder)
        with unix_user("g") as g_user:
            g = Student(g_user, host["python_bin"], {"VPNLAB_TUN_NODE": str(node)})
            up = g.vpnlab("lab", "up", "--prefix", PREFIX)
            if "nodev" in subprocess.run(
                ["findmnt", "-no", "OPTIONS", "-T", str(folder)], capture_output=True, text=True
            ).stdout.split(","):
                assert up.returncode == 1 and "mounted nodev" in up.stderr, up.stderr
            else:
                assert up.returncode == 0, up.stderr
                verify = g.vpnlab("lab", "verify", "--prefix", PREFIX)
                assert verify.returncode == 0, verify.stdout + verify.stderr
            down = g.vpnlab("lab", "down", "--prefix", PREFIX)
            assert down.returncode == 0, down.stderr
            assert user_processes(g_user.pw_uid) == []
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_a_tun_node_on_a_nodev_filesystem_is_refused_in_one_line(tmp_path):
    """A 0666 node where the filesystem refuses devices (a nodev tmpfs, in a mount namespace of
    the test's own): its mode allows it, so only opening it tells; one line names nodev."""
    check = (
        "import sys\nfrom vpnlab.core.errors import LabError\n"
        "from vpnlab.lab.rootless import check_tun\n"
        "try:\n    check_tun(sys.argv[1])\nexcept LabError as exc:\n    sys.exit(str(exc))"
    )
    script = (
        f"mount -t tmpfs -o nodev,mode=0755 vpnlab-test {tmp_path} && "
        f"mknod -m 0666 {tmp_path}/tun c 10 200 && "
        f'exec "$0" -c "$1" {tmp_path}/tun'
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        + [sys.executable, check],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "mounted nodev" in done.stderr and "findmnt -T" in done.stderr
    assert not (tmp_path / "tun").exists()  # the tmpfs went with the mount namespace


def test_killing_the_holder_removes_everything(host):
    """kill -9 of the holder's PID 1: every process of the lab goes, no down needed."""
    with unix_user("d") as d_user:
        d = Student(d_user, host["python_bin"], {"VPNLAB_TUN_NODE": str(host["tun"])})
        up = d.vpnlab("lab", "up", "--prefix", PREFIX)
        assert up.returncode == 0, up.stderr
        assert len(user_processes(d_user.pw_uid)) >= 4  # holder, who-am-I, server, client
        os.kill(holder(d), signal.SIGKILL)
        assert wait_until(lambda: user_processes(d_user.pw_uid) == [], 5) is not None


def test_two_ups_at_once_by_one_user_take_turns(host):
    """Two terminals (or two notebooks' first cells) of one user build the lab at once: the
    second waits for the first's turn, then replaces its lab and holder; one holder is left,
    and down leaves nothing (before, the second stopped the first's holder under it: SIGKILL)."""
    with unix_user("f") as f_user:
        f = Student(f_user, host["python_bin"], {"VPNLAB_TUN_NODE": str(host["tun"])})
        first = f.start_vpnlab("lab", "up", "--no-vpn", "--prefix", PREFIX)
        time.sleep(0.3)  # the first one is building
        second = f.start_vpnlab("lab", "up", "--no-vpn", "--prefix", PREFIX)
        errors = [up.communicate(timeout=120)[1] for up in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], errors
        assert f"waiting for another vpnlab command (PID {first.pid})" in errors[1]
        holders = [pid for pid in user_processes(f_user.pw_uid) if b"unshare" in cmdline(pid)]
        assert len(holders) == 1, "one holder for the one lab"
        assert status(f)["daemons"]["whoami"]["alive"]
        down = f.vpnlab("lab", "down", "--prefix", PREFIX)
        assert down.returncode == 0, down.stderr
        assert list((f.home / ".vpnlab/labs").iterdir()) == []  # no state folder, no lock file
        assert wait_until(lambda: user_processes(f_user.pw_uid) == [], 5) is not None


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_sigterm_to_a_users_experiment_removes_its_lab(host):
    """An experiment in a holder of its own (bench --footprint), SIGTERM'd as JupyterHub or a
    CI's timeout does: it removes its lab (its state folder in the home too), exit 143."""
    with unix_user("e") as e_user:
        e = Student(e_user, host["python_bin"], {"VPNLAB_TUN_NODE": str(host["tun"])})
        state = e.home / ".vpnlab/labs/vfoot-"
        proc = e.start_vpnlab("bench", "--footprint", "--idle-seconds", "60")
        logs = state / "logs"
        err = stop_with_sigterm(proc, lambda: len(list(logs.glob("*.log"))) >= 3, 60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert not state.exists(), "the lab's state folder is left"
        assert wait_until(lambda: user_processes(e_user.pw_uid) == [], 5) is not None


NOTEBOOK = """
import json, sys
from pathlib import Path
from tests.notebooks.helpers import execute
run = execute("00_setup_topology", Path(sys.argv[1]))
print(json.dumps({"results": run.results, "correct": run.text().count("correct"),
                  "facts": run.text().count(": all right")}))
"""


def test_readme_command_and_a_notebook_as_a_new_user(host):
    """A new user without sudo, in a clone of their own: the README's command, then notebook 00.

    ``scripts/netns-lab.sh`` (no sudo) builds, verifies and prints the summary without sudo;
    ``down`` removes it. Notebook 00 runs headless as the tests run it as root (nbclient, the
    reference answers), in a holder of its own (``vpnlab rootless run``, as ``netns-lab.sh
    notebook`` starts JupyterLab), and is checked as ``tests/notebooks`` checks it.
    """
    with unix_user("n") as user:
        clone = clone_for(user)
        student = Student(user, clone / ".venv/bin", {"VPNLAB_TUN_NODE": str(host["tun"])})
        missing = student.run(
            ["bash", "-c", "source scripts/setup.sh; DEB_PACKAGES=(vpnlab-no-such-pkg); setup"],
            cwd=clone,
        )
        assert missing.returncode == 1
        assert (
            "sudo apt-get install -y --no-install-recommends vpnlab-no-such-pkg" in missing.stderr
        )
        env = {"VPNLAB_PREFIX": "rls-"}
        up = student.run(["bash", "scripts/netns-lab.sh"], cwd=clone, env=env, timeout=120)
        assert up.returncode == 0, up.stderr
        assert "verify: all checks passed (vpn on)" in up.stdout
        assert "sudo" not in up.stdout and "exec r2 tshark -ni eth0" in up.stdout
        assert f"{user.pw_dir}/.vpnlab/labs/rls-/logs/" in up.stdout
        down = student.run(["bash", "scripts/netns-lab.sh", "down"], cwd=clone, env=env)
        assert down.returncode == 0 and "stopped the lab's holder" in down.stdout
        assert user_processes(user.pw_uid) == []
        jupyter_lab_answers(student, clone)
        out = clone / "nb-out"
        run = student.run(
            [student.python, "-m", "vpnlab", "rootless", "run", "--"]
            + [student.python, "-c", NOTEBOOK, str(out)],
            cwd=clone,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        r = result["results"]
        assert r["verify_ok"] is True and r["whoami"] == "you are 198.51.100.2"
        assert r["left_after_down"] == []
        # the two live checks (0.2, 0.4) right, and the fixed facts' set (tests/notebooks)
        assert result["correct"] == 2 and result["facts"] == 1
        assert user_processes(user.pw_uid) == []


ENTRY_CELL = """
import json, os
from vpnlab.course.notebook import CourseLab
lab = CourseLab("entry", "img-")
lab.up()
print(json.dumps({"whoami": lab.whoami(), "uid": os.getuid(), "state": str(lab.state_dir())}))
"""


def test_image_entry_point_as_a_plain_script(host):
    """The installed start script (the hub's command, the image's entry point) as a user: the
    student edition merged into ~/course, the server (here a notebook's cell instead of
    jupyterhub-singleuser, VPNLAB_SERVER) in a holder that builds a lab; nothing left after."""
    with unix_user("e") as user:
        env = {"VPNLAB_TUN_NODE": str(host["tun"])}
        student = Student(user, host["python_bin"], env)
        env = {"VPNLAB_SERVER": student.python}  # VPNLAB_PYTHON and the course: the defaults
        script = str(class_install() / "bin/vpnlab-start-singleuser")
        run = student.run([script, "-c", ENTRY_CELL], env=env, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        answer = json.loads(run.stdout.strip().splitlines()[-1])
        assert answer["whoami"] == f"you are {SERVER_IP}" and answer["uid"] == 0
        assert answer["state"].startswith(user.pw_dir)
        course = student.home / "course"
        copied = sorted(p.name for p in course.iterdir())
        assert copied == sorted(p.name for p in (class_install() / "course").iterdir())
        assert (course / "00_setup_topology.ipynb").stat().st_uid == user.pw_uid
        assert user_processes(user.pw_uid) == []  # the holder went with the server


def test_course_update_keeps_the_students_work(host):
    """A course update at the next server start: a new notebook is copied, one the student did
    not touch is replaced, one the student edited is kept as the student left it."""
    with unix_user("m") as user, made_folder() as folder:
        student = Student(user, host["python_bin"], {})
        source = folder / "course"
        source.mkdir(mode=0o755)
        for name in ("a.ipynb", "b.ipynb"):
            (source / name).write_text(f"{name} v1")
            (source / name).chmod(0o644)
        env = {"VPNLAB_COURSE": str(source), "VPNLAB_SERVER": "/bin/true"}
        script = str(class_install() / "bin/vpnlab-start-singleuser")
        first = student.run([script], env=env)
        assert first.returncode == 0, first.stderr
        mine = student.home / "course"
        assert (mine / "a.ipynb").read_text() == "a.ipynb v1"
        edit = student.run(["sh", "-c", "echo my answer >> course/b.ipynb"])
        assert edit.returncode == 0, edit.stderr
        for name in ("a.ipynb", "b.ipynb", "c.ipynb"):
            (source / name).write_text(f"{name} v2")
            (source / name).chmod(0o644)
        second = student.run([script], env=env)
        assert second.returncode == 0, second.stderr
        assert (mine / "a.ipynb").read_text() == "a.ipynb v2"  # untouched: updated
        assert (mine / "b.ipynb").read_text() == "b.ipynb v1my answer\n"  # edited: kept
        assert (mine / "c.ipynb").read_text() == "c.ipynb v2"  # new: copied
        assert "b.ipynb has a new version; yours has changes and is kept" in second.stderr
        third = student.run([script], env=env)  # nothing new: nothing said, nothing changed
        assert "course:" not in third.stderr
        assert (mine / "b.ipynb").read_text() == "b.ipynb v1my answer\n"


def jupyter_lab_answers(student: Student, clone: Path) -> None:
    """``scripts/netns-lab.sh notebook`` as the user: JupyterLab answers in its holder; SIGTERM
    ends it, and the holder with it."""
    import urllib.request

    port = 19000 + os.getpid() % 1000
    log = clone / "notebook.log"
    with open(log, "wb") as out:
        os.fchown(out.fileno(), student.user.pw_uid, student.user.pw_gid)
    lab = subprocess.Popen(
        ["bash", "scripts/netns-lab.sh", "notebook", "--port", str(port)],
        user=student.user.pw_uid,
        group=student.user.pw_gid,
        extra_groups=[],
        cwd=clone,
        env=student.env,
        stdout=open(log, "ab"),  # noqa: SIM115 (the child holds it; closed when it ends)
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        assert wait_until(answers, 60, 0.5) is not None, log.read_text()[-2000:]
        assert (student.home / ".vpnlab/holders").glob("run*.json")
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    assert wait_until(lambda: user_processes(student.user.pw_uid) == [], 10) is not None
