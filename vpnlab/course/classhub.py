"""A class at once on a real hub: ``vpnlab bench --class-hub N --python PY`` (issue 25, item 5).

Where ``classload.py`` loads one VPN server with N lightweight clients, this is the whole class
as an instructor meets it: N real Unix users (default 40) on a real JupyterHub on this machine
(``deploy/jupyterhub/jupyterhub_config.py``, PAM logins, LocalProcessSpawner, each student's
server in a rootless holder of its own). Everything the benchmark makes is removed at the end,
also when it fails or is interrupted: the users (``userdel -r``, their processes killed by
PID first), the hub and its proxy, the folder with the hub's database and the TUN node.

Each student, started ``stagger_s / N`` after the one before (all within a minute):

    login      POST /hub/login with the user's password (PAM), then GET /hub/spawn: the
               hub starts the server (the browser's path, cookies and XSRF token included)
    spawn      polled through the REST API while the server is pending (the wait follows the
               hub's own progress; a spawn that ends without a server is a failure at once)
    cell       in a new kernel (REST + websocket, as JupyterLab does): notebook 00's first lab
               cell: the imports, ``lab.up()``, a ping through the tunnel, who-am-I's answer
    measured   PSS of all the user's processes before the cell (idle) and after it (with a
               lab); at the end, the CPU seconds of all the user's processes (and of the
               children they reaped), plus the hub's and the proxy's CPU shared out

The Python the students run must be one they can execute (a system install outside any 0700
home, e.g. ``python3 -m venv /opt/vpnlab-bench && /opt/vpnlab-bench/bin/pip install
'.[course,hub]'``): ``--python`` names it; it runs the hub too. The spawner's command, the
course notebooks and the TUN node (this host's /dev/net/tun is 0600) are copied into a folder
the benchmark makes (0711), so nothing is read from the checkout by a student.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import pwd
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from vpnlab.core.errors import VpnlabError
from vpnlab.course.bench import say

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = REPO / "deploy/jupyterhub/jupyterhub_config.py"
START_SCRIPT = REPO / "deploy/start-singleuser.sh"
STUDENT_SERVER_CONFIG = REPO / "deploy/jupyterhub/student-server"
STUDENTS = 40
STAGGER_S = 60.0
DEADLINE_S = 900.0
"""One student's whole run at most (login to the cell's answer): a stuck hub ends the run."""
SERVER_TIMEOUT_S = 300
"""The hub's ``start_timeout`` and ``http_timeout`` here: under load a server takes long to
answer; the hub still reports a server that exits at once (the spawner polls its process)."""
USER_PREFIX = "vcb"
SERVER_IP = "198.51.100.2"
SERVER_CORES, SERVER_GIB = 8, 32
CELL = """
import json, os, shutil
from vpnlab.course import figures
from vpnlab.course import notebook as course
lab = course.CourseLab("00_setup_topology")
assert os.geteuid() == 0, "the lab needs root"
tools = {t: bool(shutil.which(t)) for t in ("ip", "nft", "curl")}
assert all(tools.values()), tools
status = lab.up()
ping = lab.run("r1", "ping -c 3 -i 0.2 -W 2 10.8.0.1")
print(json.dumps({"ping": ping.returncode, "whoami": lab.whoami()}))
"""
"""Notebook 00's first cells as a student runs them (imports, checks, ``lab.up()``), then the
proof: three pings to the server's tunnel address and who-am-I through the tunnel."""


class ClassHubError(VpnlabError):
    """The class benchmark cannot run here (one line: why, and what to do)."""


@dataclass
class Student:
    """One made user and what happened to them."""

    name: str
    uid: int
    password: str
    start_at: float = 0.0
    spawned_s: float | None = None
    verified_s: float | None = None
    pss_idle_mib: float | None = None
    pss_lab_mib: float | None = None
    cpu_s: float | None = None
    failure: str | None = None
    phases: list[str] = field(default_factory=list)


# --- what a student costs -----------------------------------------------------------------------


def user_processes(uid: int) -> list[int]:
    """The PIDs of ``uid``'s live processes (zombies hold nothing and are left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry))
    return pids


def pss_mib(uid: int) -> float:
    """Proportional set size of all of ``uid``'s processes (shared pages split fairly), MiB."""
    total = 0
    for pid in user_processes(uid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def process_cpu_s(pid: int, children: bool = True) -> float:
    """utime + stime of ``pid`` (and, with ``children``, of the children it reaped), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def user_cpu_s(uid: int) -> float:
    """CPU seconds of ``uid``'s live processes and of the children they reaped."""
    return sum(process_cpu_s(pid) for pid in user_processes(uid))


class Percentiles(TypedDict):
    """The median, the 95th percentile and the largest of some values."""

    p50: float
    p95: float
    max: float


def percentiles(values: list[float]) -> Percentiles | None:
    """p50, p95 and max (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


# --- users, folder, hub -------------------------------------------------------------------------


def check_ready(python: Path) -> None:
    """Root, useradd, a Python others can run with jupyterhub, a proxy: or one line why not."""
    if os.geteuid() != 0:
        raise ClassHubError("the class benchmark makes Unix users and a hub: run it as root")
    if shutil.which("useradd") is None or shutil.which("chpasswd") is None:
        raise ClassHubError("useradd/chpasswd not found (Debian: passwd package)")
    real = Path(os.path.realpath(python))
    if not real.exists() or not all(os.stat(p).st_mode & 1 for p in [*real.parents, real]):
        raise ClassHubError(
            f"{python}: students must be able to run it (a system install outside any 0700 "
            "home, e.g. python3 -m venv /opt/vpnlab-bench && /opt/vpnlab-bench/bin/pip install "
            "'.[course,hub]')"
        )
    probe = subprocess.run(
        [str(python), "-c", "import jupyterhub, jupyterlab, vpnlab"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        raise ClassHubError(f"{python} lacks jupyterhub, jupyterlab or vpnlab: {probe.stderr}")


def find_proxy(python: Path, given: str | None) -> str:
    """configurable-http-proxy: given, beside the install (``PREFIX/hub``), .venv/hub, PATH."""
    candidates = [
        given,
        str(python.parent.parent / "hub/node_modules/.bin/configurable-http-proxy"),
        str(REPO / ".venv/hub/node_modules/.bin/configurable-http-proxy"),
        shutil.which("configurable-http-proxy"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise ClassHubError(
        "configurable-http-proxy (npm) not found: npm install configurable-http-proxy, "
        "then --proxy PATH"
    )


@contextlib.contextmanager
def made_users(count: int, tag: str) -> Iterator[list[Student]]:
    """``count`` fresh users (home 0700, a random password), removed after with their
    processes and homes, whatever happens."""
    made: list[str] = []
    try:
        students = []
        for i in range(count):
            name = f"{USER_PREFIX}{tag}{i}"
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, timeout=30)
            made.append(name)
            user = pwd.getpwnam(name)
            os.chmod(user.pw_dir, 0o700)
            password = secrets.token_urlsafe(12)
            subprocess.run(
                ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, timeout=30
            )
            students.append(Student(name, user.pw_uid, password))
        yield students
    finally:
        for name in made:
            remove_user(name)


def kill_all(pids_of: Callable[[], list[int]], tries: int = 50) -> None:
    """SIGKILL every PID ``pids_of()`` names, again until it names none (a process may fork
    while we kill), ``tries`` rounds 0.1 s apart at the most. A user's processes
    (:func:`remove_user`), a student's cgroup (``deploy/jupyterhub/vpnlab_spawner.py``)."""
    for _ in range(tries):
        pids = pids_of()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_user(name: str) -> None:
    """Kill the user's processes (by PID, from /proc), then ``userdel -r`` (its home too)."""
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(name).pw_uid
        kill_all(lambda: user_processes(uid))
    subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60, check=False)


@contextlib.contextmanager
def made_folder(prefix: str = "vpnlab-classhub-") -> Iterator[Path]:
    """A folder in /tmp named ``prefix...`` (0711: students pass, not list), removed after."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        folder.chmod(0o711)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare_folder(folder: Path) -> dict[str, str]:
    """What students read, copied out of the checkout: the server's start script, the course
    notebooks and a 0666 TUN node (c 10 200) of the benchmark's own. Returns the paths."""
    public = folder / "public"
    (public / "course").mkdir(parents=True)
    script = public / "start-singleuser.sh"
    shutil.copy2(START_SCRIPT, script)
    shutil.copytree(STUDENT_SERVER_CONFIG, public / "student-server")
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        shutil.copy2(notebook, public / "course" / notebook.name)
    tun = folder / "tun"
    os.mknod(tun, 0o020666, os.makedev(10, 200))
    tun.chmod(0o666)  # the node the benchmark made, never the host's
    subprocess.run(["chmod", "-R", "a+rX", str(public)], check=True, timeout=30)
    hub = folder / "hub"
    hub.mkdir(mode=0o700)
    return {
        "script": str(script),
        "course": str(public / "course"),
        "tun": str(tun),
        "server_config": str(public / "student-server"),
    }


def write_config(folder: Path, paths: dict[str, str]) -> Path:
    """The deploy config as it is, then the benchmark's changes: the copied start script, the
    service that drives the REST API, and timeouts for a loaded machine."""
    config = folder / "hub" / "classhub_config.py"
    config.write_text(
        f"load_subconfig({str(DEPLOY_CONFIG)!r})\n"
        f"c.Spawner.cmd = [{paths['script']!r}]\n"
        f"c.Spawner.environment['JUPYTER_CONFIG_PATH'] = {paths['server_config']!r}\n"
        f"c.Spawner.start_timeout = {SERVER_TIMEOUT_S}\n"
        f"c.Spawner.http_timeout = {SERVER_TIMEOUT_S}\n"
        "c.JupyterHub.concurrent_spawn_limit = 0\n"
        "c.JupyterHub.active_server_limit = 0\n"
    )
    return config


class Hub:
    """The hub process and its REST API (a service token with admin rights)."""

    def __init__(self, base: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.token, self.proc, self.log = base, token, proc, log

    def api(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A REST call: its HTTP status and the JSON object answered (0 and the reason under
        ``"error"`` if none came; an HTTP error's text under ``"error"``)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {"error": exc.read().decode(errors="replace")[:2000]}
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return 0, {"error": f"no answer: {exc}"}

    def server(self, name: str) -> dict[str, Any] | None:
        code, user = self.api("GET", f"/hub/api/users/{name}")
        return user.get("servers", {}).get("") if code == 200 else None

    def log_lines(self, name: str, count: int = 12) -> str:
        """The hub log's last lines that name ``name``."""
        lines = [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if name in line and "api/users" not in line
        ]
        return "\n".join(lines[-count:]) or "(no hub log line names this user)"


@contextlib.contextmanager
def running_hub(
    python: Path, proxy: str, folder: Path, paths: dict[str, str], port: int
) -> Iterator[Hub]:
    """The hub (root, ``python -m jupyterhub``), stopped after: SIGTERM, then SIGKILL."""
    token = secrets.token_hex(32)
    config = write_config(folder, paths)
    env = {
        **os.environ,
        "VPNLAB_HUB_PORT": str(port),
        "VPNLAB_HUB_DIR": str(folder / "hub"),
        "VPNLAB_HUB_PYTHON": str(python),
        "VPNLAB_HUB_PROXY": proxy,
        "VPNLAB_HUB_COURSE": paths["course"],
        "VPNLAB_HUB_TOKEN": token,
        "VPNLAB_TUN_NODE": paths["tun"],
        "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    }
    env.pop("VPNLAB_HUB_AUTH", None)  # PAM: the students log in with their passwords
    log_path = folder / "hub" / "hub.log"
    proc = start_hub([str(python), "-m", "jupyterhub", "-f", str(config)], env, log_path)
    hub = Hub(f"http://127.0.0.1:{port}", token, proc, log_path)
    try:
        deadline = time.monotonic() + 120
        while hub.api("GET", "/hub/api/")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise ClassHubError(f"the hub did not start:\n{tail}")
            time.sleep(0.5)
        yield hub
    finally:
        stop_hub(proc)


def start_hub(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The hub (root) in a session of its own, in ``log_path``'s folder, its output there."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            cwd=log_path.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_hub(proc: subprocess.Popen[bytes]) -> None:
    """The hub stops its servers and its proxy on SIGTERM (with the idle culler, about 30 s);
    SIGKILL to its whole session if it takes more than a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --- one student --------------------------------------------------------------------------------


def login_and_spawn(hub: Hub, student: Student) -> None:
    """The browser's path: the login form (PAM), then /hub/spawn, which starts the server."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{hub.base}/hub/login", timeout=120) as page:
        page.read()
    xsrf = next((c.value for c in jar if c.name == "_xsrf"), "")
    form = urllib.parse.urlencode(
        {"username": student.name, "password": student.password, "_xsrf": xsrf}
    ).encode()
    try:  # redirected to /hub/spawn (the server starts) and on to its pending page
        with opener.open(f"{hub.base}/hub/login?next=", data=form, timeout=120) as page:
            landed = page.geturl()
    except urllib.error.HTTPError as exc:
        raise ClassHubError(f"login: HTTP {exc.code}: {exc.read().decode()[-500:]}") from None
    if "/hub/login" in landed:
        raise ClassHubError(f"login refused (PAM): landed on {landed}")


def wait_spawned(hub: Hub, student: Student, deadline: float) -> None:
    """Poll while the hub says the server is pending; ready, or the failure with the hub log."""
    while time.monotonic() < deadline:
        server = hub.server(student.name)
        if server and server.get("ready"):
            return
        if server is None and time.monotonic() - student.start_at > 10:
            code, user = hub.api("GET", f"/hub/api/users/{student.name}")
            if code == 200 and not user.get("pending"):
                raise ClassHubError(f"spawn failed; hub log:\n{hub.log_lines(student.name)}")
        time.sleep(1.0)
    raise ClassHubError(f"no server within the deadline; hub log:\n{hub.log_lines(student.name)}")


def execute(hub: Hub, name: str, code: str, timeout_s: float) -> str:
    """Run ``code`` in a new kernel of ``name``'s server; its stdout, or ClassHubError with the
    whole traceback (what the student sees under the cell)."""
    status, kernel = hub.api("POST", f"/user/{name}/api/kernels", {"name": "python3"})
    if status != 201:
        raise ClassHubError(f"no kernel: HTTP {status}: {kernel}")
    try:
        return asyncio.run(_execute(hub, name, kernel["id"], code, timeout_s))
    finally:
        hub.api("DELETE", f"/user/{name}/api/kernels/{kernel['id']}")


async def _execute(hub: Hub, name: str, kernel: str, code: str, timeout_s: float) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = f"{hub.base.replace('http', 'ws', 1)}/user/{name}/api/kernels/{kernel}/channels"
    headers = {"Authorization": f"token {hub.token}"}
    ws = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=120))
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex}
    header |= {"username": name, "version": "5.3", "date": ""}
    content = {"code": code, "silent": False, "store_history": False}
    content |= {"user_expressions": {}, "allow_stdin": False}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    await ws.write_message(json.dumps({**message, "channel": "shell"}))
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
            if raw is None:
                raise ClassHubError("the kernel's websocket closed")
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["header"]["msg_type"]
            if kind == "stream":
                out.append(reply["content"]["text"])
            elif kind == "error":
                raise ClassHubError("".join(out) + "\n".join(reply["content"]["traceback"]))
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()
    raise ClassHubError(
        f"the cell did not finish in {timeout_s:.0f} s; its output:\n{''.join(out)}"
    )


def run_student(hub: Hub, student: Student, t0: float) -> None:
    """Login, spawn, the cell; times from the login, PSS idle and with the lab; any failure
    whole (ANSI colours of tracebacks removed)."""
    time.sleep(max(0.0, student.start_at - (time.monotonic() - t0)))
    begin = time.monotonic()
    student.start_at = begin
    deadline = begin + DEADLINE_S
    phase = "login"
    try:
        login_and_spawn(hub, student)
        phase = "spawn"
        wait_spawned(hub, student, deadline)
        student.spawned_s = time.monotonic() - begin
        student.pss_idle_mib = pss_mib(student.uid)
        phase = "cell"
        out = execute(hub, student.name, CELL, deadline - time.monotonic())
        answer = json.loads(out.strip().splitlines()[-1])
        if answer["ping"] != 0 or answer["whoami"] != f"you are {SERVER_IP}":
            raise ClassHubError(f"the lab does not work: {out.strip()}")
        student.verified_s = time.monotonic() - begin
        student.pss_lab_mib = pss_mib(student.uid)
    except Exception as exc:  # every failure is counted and reported whole
        student.failure = f"{phase}: {type(exc).__name__}: {_plain(str(exc))}"


def _plain(text: str) -> str:
    """Text without terminal colour codes (tracebacks from ipykernel carry them)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# --- the run ------------------------------------------------------------------------------------


def class_hub(
    count: int = STUDENTS,
    python: Path = Path("/opt/vpnlab-bench/bin/python"),
    stagger_s: float = STAGGER_S,
    proxy: str | None = None,
    port: int = 18600,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Make the users, the folder and the hub; run every student; measure; remove it all."""
    check_ready(python)
    proxy = find_proxy(python, proxy)
    tag = f"{os.getpid() % 10000}x"
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "students": count,
        "stagger_s": stagger_s,
        "cores": os.cpu_count(),
        "python": str(python),
        "load_before": os.getloadavg(),
    }
    with ExitStack() as stack:
        folder = stack.enter_context(made_folder())
        paths = prepare_folder(folder)
        progress(f"class: {count} Unix users ...")
        students = stack.enter_context(made_users(count, tag))
        progress(f"class: the hub on 127.0.0.1:{port} ...")
        hub = stack.enter_context(running_hub(python, proxy, folder, paths, port))
        hub_cpu_before = _hub_cpu(hub)
        for i, student in enumerate(students):
            student.start_at = i * stagger_s / count
        threads = []
        t0 = time.monotonic()
        for student in students:
            thread = threading.Thread(target=run_student, args=(hub, student, t0), daemon=True)
            thread.start()
            threads.append(thread)
        loads = _watch(threads, progress, students)
        for student in students:
            student.cpu_s = user_cpu_s(student.uid)
        document["hub_cpu_s"] = _hub_cpu(hub) - hub_cpu_before
        document["load_during"] = loads
        document["wall_s"] = time.monotonic() - t0
        progress("class: stopping the servers, the hub, removing the users ...")
        for student in students:
            hub.api("DELETE", f"/hub/api/users/{student.name}/server")
    document["load_after"] = os.getloadavg()
    document["results"] = [student.__dict__ for student in students]
    return document


def _hub_cpu(hub: Hub) -> float:
    """CPU seconds of the hub and the proxy (its child; the servers are the users')."""
    total = process_cpu_s(hub.proc.pid, children=False)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{hub.proc.pid}/task/{hub.proc.pid}/children").read_text().split():
            if os.stat(f"/proc/{child}").st_uid == 0:
                total += process_cpu_s(int(child))
    return total


def _watch(
    threads: list[threading.Thread], progress: Callable[[str], None], students: list[Student]
) -> list[float]:
    """Wait for every student; a progress line and the 1-minute load average every 15 s."""
    loads = []
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=15.0 / len(threads))
        loads.append(os.getloadavg()[0])
        done = sum(s.verified_s is not None for s in students)
        failed = sum(s.failure is not None for s in students)
        progress(f"class: {done} labs verified, {failed} failed, load {loads[-1]:.1f}")
    return loads


def format_class_hub(document: dict[str, Any]) -> str:
    """The table of docs/performance.md ("A class at once") and each failure whole."""
    results = document["results"]
    n = document["students"]
    spawned = [r["spawned_s"] for r in results if r["spawned_s"] is not None]
    verified = [r["verified_s"] for r in results if r["verified_s"] is not None]
    idle = [r["pss_idle_mib"] for r in results if r["pss_idle_mib"] is not None]
    with_lab = [r["pss_lab_mib"] for r in results if r["pss_lab_mib"] is not None]
    ok = [r for r in results if r["failure"] is None]
    own_cpu = statistics.mean(r["cpu_s"] for r in ok) if ok else float("nan")
    hub_share = document["hub_cpu_s"] / n
    cpu = own_cpu + hub_share
    lines = [
        "| what | p50 | p95 | max |",
        "|---|---:|---:|---:|",
        _row("login to server ready (s)", percentiles(spawned), "{:.1f}"),
        _row("login to lab verified (s)", percentiles(verified), "{:.1f}"),
        _row("PSS per student, server idle (MiB)", percentiles(idle), "{:.0f}"),
        _row("PSS per student, with the lab (MiB)", percentiles(with_lab), "{:.0f}"),
        "",
        f"{len(ok)}/{n} labs verified, {n - len(ok)} failures; CPU per student "
        f"{cpu:.2f} s ({own_cpu:.2f} s the student's processes + {hub_share:.2f} s hub and "
        f"proxy); all {n} logged in over {document['stagger_s']:.0f} s, done in "
        f"{document['wall_s']:.0f} s",
    ]
    if with_lab and cpu == cpu:
        by_memory = int(SERVER_GIB * 1024 * 0.9 / max(with_lab))
        per_minute = int(SERVER_CORES * 60 / cpu)
        lines.append(
            f"an {SERVER_CORES}-core/{SERVER_GIB} GB server: memory holds {by_memory} students "
            f"with a lab up (90 % of {SERVER_GIB} GiB / the largest PSS with a lab); CPU lets "
            f"{per_minute} log in and run this cell within one minute ({SERVER_CORES} cores x "
            f"60 s / {cpu:.2f} CPU s, every core busy)"
        )
    during = document["load_during"]
    lines.append(
        f"{document['date']}, {document['cores']} cores, load average (1 min) before "
        f"{document['load_before'][0]:.2f}, during {min(during, default=0):.1f}-"
        f"{max(during, default=0):.1f}, after {document['load_after'][0]:.2f} (shared machine)"
    )
    for r in results:
        if r["failure"]:
            lines += ["", f"failure of {r['name']}:", r["failure"]]
    return "\n".join(lines)


def _row(what: str, values: Percentiles | None, fmt: str) -> str:
    if values is None:
        return f"| {what} | - | - | - |"
    return f"| {what} | " + " | ".join(fmt.format(values[k]) for k in ("p50", "p95", "max")) + " |"
