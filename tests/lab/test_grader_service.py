"""The hub's grader with real parts: a real JupyterHub (its REST API and token checks; no
proxy, which the grader does not use) that starts the real service from the class deployment's
block (``deploy/jupyterhub/grader_service.py``: ``vpnlab grader serve`` as root, its enterer
keeping root, the rest as a real separate Unix user), and real student Unix users, each with a
rootless lab (a holder), asking with their own hub tokens (made through the hub's API: a
token of the user; a server's own token needs a spawned server, which this test does not run).

What is shown, in one class session:

- a student asks for a fault: the grader draws it, injects it from outside the student's
  processes, keeps it in its store; the student gets the ticket and nothing in their reach
  names the fault; their check fails, a forged progress file and forged state change nothing;
- the student cannot read the store, nor signal the service or its enterer;
- identity comes from the hub token only: a name in the body is ignored, a bogus token is
  refused, and another student's check judges that student's own (healthy) lab;
- the repair (as the student would type it) passes; a restart instead of a repair fails;
- the instructor's report (CSV and PNG) reads the store.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from vpnlab.core.errors import LabError
from vpnlab.course.classhub import user_processes
from vpnlab.grader import enter
from vpnlab.grader.report import COLUMNS
from vpnlab.lab.state import DEFAULT_PREFIX

from .helpers import root_snapshot, wait_until
from .test_troubleshooting import REPAIRS
from .users import REPO, Student, install_bin, made_folder, tun_node, unix_user

pytestmark = pytest.mark.lab

PREFIX = DEFAULT_PREFIX  # a student's on the one-server hub: no $VPNLAB_PREFIX, `vpnlab lab`'s
BLOCK = REPO / "deploy/jupyterhub/grader_service.py"
BASE = 21000 + os.getpid() % 1000 * 2
HUB_PORT, GRADER_PORT = BASE, BASE + 1
HUB_CONFIG = """
from jupyterhub.proxy import Proxy

class NoProxy(Proxy):
    \"\"\"The grader is reached directly; nothing is proxied in this test.\"\"\"
    should_start = False
    async def add_route(self, routespec, target, data): pass
    async def delete_route(self, routespec): pass
    async def get_all_routes(self): return {{}}

c = get_config()
c.JupyterHub.proxy_class = NoProxy
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{folder}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.JupyterHub.services = [{{"name": "test-admin", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [
    {{"name": "test-admin", "scopes": ["admin:users", "tokens"], "services": ["test-admin"]}},
]
load_subconfig("{block}")  # the class deployment's grader block, as jupyterhub_config.py loads it
"""


def hub_api(token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{HUB_PORT}/hub/api{path}",
        data=data,
        method=method,
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}


def grader_api(token: str, verb: str, body: dict | None = None) -> tuple[int, dict]:
    """A request to the grader, as ``vpnlab grader`` makes it (any token, any body)."""
    data = json.dumps(body or {}).encode() if verb != "attempts" else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{GRADER_PORT}/services/vpnlab-grader/{verb}",
        data=data,
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=180) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:  # not listening (yet)
        return 0, {}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def ignore_sigint() -> None:
    """The hub as a background job starts it (``cmd &``, ``.ci/run`` run by a script): SIGINT
    ignored, and its service inherits that. The hub stops its service with SIGINT, then 10 s
    later SIGTERM; the service must end on the first (``service.stop_on_signals``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_states(pids: list[int]) -> dict[int, str]:
    """Each process's state and parent (``/proc/PID/stat``: "Z 1" is a zombie PID 1 has not
    collected yet), for a failure's message."""
    states = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        states[pid] = f"{fields[0]} parent {fields[1]}"
    return states


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def services(hub: int, grader_uid: int) -> list[int]:
    """The grader service's processes the hub started (its enterers are root's)."""
    return [p for p in user_processes(grader_uid) if p in descendants(hub)]


@pytest.fixture
def session(tmp_path):
    """A hub, the grader service, two students with hub tokens; all removed after."""
    pytest.importorskip("jupyterhub")
    before = root_snapshot()
    admin = secrets.token_hex(32)
    with ExitStack() as stack:
        folder = stack.enter_context(made_folder())
        python_bin = install_bin()  # the class install: root-owned, every user runs it
        grader = stack.enter_context(unix_user("g"))
        students = [stack.enter_context(unix_user(tag)) for tag in ("a", "b")]
        hub_dir = tmp_path / "hub"
        hub_dir.mkdir()
        config = HUB_CONFIG.format(
            hub_port=HUB_PORT, folder=hub_dir, admin_token=admin, block=BLOCK
        )
        (hub_dir / "config.py").write_text(config)
        store_dir = folder / "grader"  # as the class install makes it: the grader's, 0700
        store_dir.mkdir(mode=0o700)
        os.chown(store_dir, grader.pw_uid, grader.pw_gid)
        env = {
            **os.environ,
            "VPNLAB_GRADER_USER": grader.pw_name,
            "VPNLAB_GRADER_STORE": str(store_dir / "grader.db"),
            "VPNLAB_GRADER_PORT": str(GRADER_PORT),
            "VPNLAB_GRADER_PREFIX": PREFIX,
            "VPNLAB_GRADER_PYTHON": str(python_bin / "python"),
        }
        log = stack.enter_context(open(tmp_path / "hub.log", "wb"))  # noqa: SIM115
        hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(hub_dir / "config.py")],
            cwd=hub_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ignore_sigint,
        )
        stack.callback(stop, hub)
        up = wait_until(lambda: hub_api(admin, "GET", "/")[0] == 200, 60, 0.5)
        assert up is not None, (tmp_path / "hub.log").read_text()[-3000:]
        tokens = {}
        for user in students:
            assert hub_api(admin, "POST", f"/users/{user.pw_name}")[0] == 201
            code, made = hub_api(admin, "POST", f"/users/{user.pw_name}/tokens", {})
            assert code == 201, code
            tokens[user.pw_name] = made["token"]
        ready = wait_until(lambda: grader_api("x", "attempts")[0] == 403, 30, 0.3)
        assert ready is not None, (tmp_path / "hub.log").read_text()[-3000:]
        (service,) = services(hub.pid, grader.pw_uid)
        env = {
            "VPNLAB_TUN_NODE": str(tun_node(folder)),
            "VPNLAB_GRADER_URL": f"http://127.0.0.1:{GRADER_PORT}/services/vpnlab-grader/",
        }
        people = [
            Student(u, python_bin, {**env, "JUPYTERHUB_API_TOKEN": tokens[u.pw_name]})
            for u in students
        ]
        try:
            yield people, service, grader, store_dir / "grader.db"
        finally:
            for student in people:
                student.vpnlab("lab", "down", "--prefix", PREFIX, timeout=120)
            enterers = [e for s in services(hub.pid, grader.pw_uid) for e in children(s)]
        stop(hub)  # the hub stops its service; the enterer ends with it
        gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in enterers), 30)
        assert gone is not None, f"the enterer outlived the service: {process_states(enterers)}"
    assert root_snapshot() == before


def fault_in_store(store: Path, student: str) -> str:
    """What only the grader (and root, the instructor) reads: the student's open fault."""
    with sqlite3.connect(store) as db:
        row = db.execute(
            "SELECT name FROM faults WHERE student = ? AND fixed IS NULL", (student,)
        ).fetchone()
    return row[0]


def repair_as(student: Student, fault: str) -> None:
    """The repair of test_troubleshooting, typed by the student in their own lab."""
    for node, command in REPAIRS[fault]:
        done = student.vpnlab("lab", "exec", "--prefix", PREFIX, node, "--", *command.split())
        assert done.returncode == 0, done.stderr


def test_a_class_session_with_the_grader(session, tmp_path):
    (alice, bob), service, grader, store = session
    up = alice.vpnlab("lab", "up", "--prefix", PREFIX, "--fault", "grader", timeout=240)
    assert up.returncode == 0, up.stderr
    assert "the ticket: " in up.stdout
    fault = fault_in_store(store, alice.user.pw_name)
    assert fault not in up.stdout + up.stderr
    named = alice.run(["grep", "-rl", fault, str(alice.home / ".vpnlab")])
    assert named.stdout == "", f"{fault} named in {named.stdout}"
    assert bob.vpnlab("lab", "up", "--prefix", PREFIX, timeout=240).returncode == 0

    # the store and the service are out of the student's reach
    assert alice.run(["cat", str(store)]).returncode != 0
    assert alice.run(["ls", str(store.parent)]).returncode != 0
    enterer = children(service)
    for pid in (service, *enterer):
        kill = alice.run(["kill", "-0", str(pid)])
        assert kill.returncode != 0 and "not permitted" in kill.stderr
    owners = {os.stat(f"/proc/{p}").st_uid for p in (service, *enterer)}
    assert owners == {grader.pw_uid, 0}
    assert os.stat(store).st_mode & 0o777 == 0o600

    # identity comes from the hub token only; nonsense is refused, never a crash
    assert grader_api("not-a-token", "check", {"item": "lab"})[0] == 403
    alice_token = alice.env["JUPYTERHUB_API_TOKEN"]
    assert grader_api(alice_token, "nothing")[0] == 404
    assert grader_api(alice_token, "check", {"item": "no-such-exercise"})[0] == 400
    code, reply = grader_api(alice_token, "check", {"item": "lab", "student": bob.user.pw_name})
    assert code == 200 and not reply["ok"] and reply["item"] == "fault:1"
    began = time.monotonic()
    checked = bob.vpnlab("grader", "check", timeout=240)
    print(f"a healthy lab's check through the grader: {time.monotonic() - began:.1f} s")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["item"] == "lab"

    # forged progress and state earn nothing
    (alice.home / ".vpnlab").mkdir(exist_ok=True)
    alice.run(
        ["sh", "-c", 'echo \'{"item": "fault", "passed": true}\' >> ~/.vpnlab/progress.jsonl']
    )
    record = alice.home / ".vpnlab/labs" / PREFIX / "lab.json"
    real = record.read_text()
    forged_state = json.loads(real) | {"daemons": {}, "drawn": {}, "troubleshooting": False}
    alice.run(["sh", "-c", f"cat > {record}"], input=json.dumps(forged_state))
    forged = alice.vpnlab("grader", "check", timeout=240)
    assert forged.returncode == 1, forged.stdout
    alice.run(["sh", "-c", f"cat > {record}"], input=real)

    # the repair passes; a restart instead of a repair does not
    repair_as(alice, fault)
    fixed = wait_until(lambda: alice.vpnlab("grader", "check", timeout=240).returncode == 0, 30, 2)
    assert fixed is not None, alice.vpnlab("grader", "check", timeout=240).stdout
    again = alice.vpnlab("grader", "fault", timeout=240)
    assert again.returncode == 0 and json.loads(again.stdout)["new"], again.stderr
    # the restart itself may report the tunnel down (the fault is still there): it did restart
    alice.vpnlab("lab", "start-vpn", "--prefix", PREFIX, timeout=240)
    restarted = alice.vpnlab("grader", "check", timeout=240)
    assert restarted.returncode == 1
    failing = [c["name"] for c in json.loads(restarted.stdout)["checks"] if not c["ok"]]
    assert "not restarted" in failing

    # a lab built anew (a server the idle culler stopped took its labs with it) carries the
    # open fault over: the same fault again, judged on its own, and its repair passes (it was
    # given no fault and failed "not restarted" at every check, for good)
    second = fault_in_store(store, alice.user.pw_name)
    assert alice.vpnlab("lab", "down", "--prefix", PREFIX, timeout=120).returncode == 0
    rebuilt = alice.vpnlab("lab", "up", "--prefix", PREFIX, "--fault", "grader", timeout=240)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert fault_in_store(store, alice.user.pw_name) == second
    broken = alice.vpnlab("grader", "check", timeout=240)
    failing = [c["name"] for c in json.loads(broken.stdout)["checks"] if not c["ok"]]
    assert broken.returncode == 1 and failing and "not restarted" not in failing, failing
    repair_as(alice, second)
    fixed = wait_until(lambda: alice.vpnlab("grader", "check", timeout=240).returncode == 0, 30, 2)
    assert fixed is not None, alice.vpnlab("grader", "check", timeout=240).stdout

    # the instructor's report reads the store
    csv_path, png = tmp_path / "grades.csv", tmp_path / "grades.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpnlab",
            "grader",
            "report",
            "--store",
            str(store),
            "--csv",
            str(csv_path),
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == COLUMNS
    rows = {tuple(line.split(",")[:3]) for line in lines[1:]}
    assert (alice.user.pw_name, "fault:1", "True") in rows
    assert (alice.user.pw_name, "fault:2", "True") in rows
    assert (bob.user.pw_name, "lab", "True") in rows
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_enterer_refuses_what_is_not_a_students_own_lab(session, monkeypatch):
    """The privileged part alone (this test is root, as the enterer is): no root, no grader, no
    unknown user, no tool outside its list, no student without a lab; and a lab node whose
    namespace the student replaced with the host's (a bind mount in their holder) is no lab."""
    (alice, bob), _, grader, _ = session
    for name in ("root", grader.pw_name, "no-such-user-x"):
        with pytest.raises(LabError):
            enter.run_in_student_lab(name, PREFIX, "r1", ["ip", "link"])
    with pytest.raises(LabError, match="has no lab"):
        enter.run_in_student_lab(bob.user.pw_name, PREFIX, "r1", ["ip", "link"])
    assert alice.vpnlab("lab", "up", "--prefix", PREFIX, "--no-vpn", timeout=240).returncode == 0
    with pytest.raises(LabError, match="does not run"):
        enter.run_in_student_lab(alice.user.pw_name, PREFIX, "r1", ["sh", "-c", "id"])
    monkeypatch.setattr(enter, "PYTHON", alice.python)  # one the students can run, as the service's
    made = Path(f"/tmp/vpnlab-grader-test-{os.getpid()}")
    try:
        argv = ["python", "-c", ID, str(made)]
        inside = enter.run_in_student_lab(alice.user.pw_name, PREFIX, "r1", argv)
        assert inside.returncode == 0, inside.stderr
        assert made.stat().st_uid == alice.user.pw_uid  # as the student on the host, not root
    finally:
        made.unlink(missing_ok=True)
    groups, netns = inside.stdout.rsplit(None, 1)
    assert groups == "[]" and netns != os.readlink("/proc/self/ns/net")
    (holder,) = enter.find_holders(alice.user.pw_uid)
    os.close(holder.userns_fd)
    swap = ["nsenter", "-t", str(holder.pid), "--user", "--mount", "--preserve-credentials"]
    swap += ["--", "mount", "--bind", "/proc/1/ns/net", f"/run/netns/{PREFIX}r1"]
    done = alice.run(swap)  # PID 1 of the holder is in the host's network namespace
    assert done.returncode == 0, done.stderr
    with pytest.raises(LabError, match="has no lab"):
        enter.run_in_student_lab(alice.user.pw_name, PREFIX, "r1", ["ip", "link"])


ID = (
    "import os, sys; open(sys.argv[1], 'w').close()\n"
    "print(os.getgroups(), os.readlink('/proc/self/ns/net'))"
)
"""In a node, through the enterer: makes a file (whose owner the host sees), prints the
supplementary groups (an unmapped root group would show as 65534) and the network namespace."""


def test_a_grader_service_that_ends_is_started_again_by_the_hub(session, tmp_path):
    """A course update reaches the grader without stopping the class (docs/class.md, step 7):
    the service ends (SIGTERM, as ``pkill -f 'vpnlab grader serve'``), the hub starts it again
    from the install as it is now, and it answers with the store it kept."""
    (alice, _), service, grader, store = session
    token = alice.env["JUPYTERHUB_API_TOKEN"]
    # the hub restarts a service it saw up (one that ends while the hub still waits for it at
    # its own start is logged as failed and left alone): its proxy route says so
    added = "Adding service vpnlab-grader to proxy"
    seen = wait_until(lambda: added in (tmp_path / "hub.log").read_text(errors="replace"), 60, 0.5)
    assert seen is not None, (tmp_path / "hub.log").read_text(errors="replace")[-3000:]
    assert grader_api(token, "attempts") == (200, {"student": alice.user.pw_name, "attempts": []})
    parent = int(process_states([service])[service].split()[-1])  # the hub
    os.kill(service, signal.SIGTERM)
    ended = wait_until(lambda: process_states([service]).get(service, "Z")[0] == "Z", 10, 0.05)
    assert ended is not None, process_states([service])  # (a zombie until the hub's next poll)
    meanwhile = alice.vpnlab("grader", "attempts", timeout=60)  # the next one takes > 1 s
    assert meanwhile.returncode == 1 and meanwhile.stderr.count("\n") == 1, meanwhile.stderr
    again = wait_until(lambda: [p for p in services(parent, grader.pw_uid) if p != service], 90, 1)
    assert again is not None, "the hub did not start its grader service again"
    answered = wait_until(lambda: grader_api(token, "attempts")[0] == 200, 30, 0.5)
    assert answered is not None
    assert os.stat(store).st_mode & 0o777 == 0o600
