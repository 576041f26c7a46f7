"""A class on one server: a real JupyterHub (deploy/jupyterhub/jupyterhub_config.py), three real
Unix users at once, each running their own rootless lab from their own JupyterLab.

Through the hub's REST API (a service token with admin rights) the test starts the three
servers, then in each a kernel (the single-user server's API, through the proxy) runs what a
notebook's cells run: ``CourseLab.up()`` with the same prefix for all three (so the same
namespace names and addresses), a ping through the tunnel, the who-am-I answer. The labs do not
see each other; stopping a server removes its holder and with it the lab. Measured on the way
(printed, and kept in the README): memory (PSS) and CPU per student, idle and during the
notebook.

Needs jupyterhub (PyPI, the ``test`` extra) and configurable-http-proxy (npm; scripts/setup.sh
puts it in .venv/hub/): skipped, with the reason, without them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from .helpers import SERVER_IP, root_snapshot, wait_until
from .users import REPO, made_folder, tun_node, unix_user, user_processes, user_python

CONFIG = REPO / "deploy/jupyterhub/jupyterhub_config.py"
PROXY = REPO / ".venv/hub/node_modules/.bin/configurable-http-proxy"
STUDENTS = 3
PORT = 18000 + os.getpid() % 1000 * 3

CELL = """
import json, os
from vpnlab.course.notebook import CourseLab
lab = CourseLab("hub", "hub-")
lab.up()
ping = lab.run("r1", "ping -c 3 -i 0.2 -W 2 10.8.0.1")
nodes = lab.status()["nodes"]
print(json.dumps({"ping": ping.returncode, "whoami": lab.whoami(), "uid": os.getuid(),
                  "namespaces": sorted(n["namespace"] for n in nodes.values() if n["exists"]),
                  "state": str(lab.state_dir())}))
"""


def proxy_path() -> str:
    if PROXY.exists():
        return str(PROXY)
    found = shutil.which("configurable-http-proxy")
    if found is None:
        pytest.skip("configurable-http-proxy (npm) is missing: scripts/setup.sh installs it")
    return found


class Hub:
    """The hub's REST API, with the service token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.base = f"http://127.0.0.1:{PORT}"

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {"error": exc.read().decode()[:300]}
        except (urllib.error.URLError, ConnectionError):
            return 0, {"error": "no answer"}

    def ready(self, name: str) -> bool:
        code, user = self.api("GET", f"/hub/api/users/{name}")
        return code == 200 and bool(user.get("servers", {}).get("", {}).get("ready"))

    def stopped(self, name: str) -> bool:
        code, user = self.api("GET", f"/hub/api/users/{name}")
        return code == 200 and not user.get("servers")

    def execute(self, name: str, code: str, timeout_s: float = 120) -> str:
        """Run ``code`` in a new kernel of ``name``'s server; its stdout (raises on an error)."""
        status, kernel = self.api("POST", f"/user/{name}/api/kernels", {"name": "python3"})
        assert status == 201, kernel
        return asyncio.run(self._run(name, kernel["id"], code, timeout_s))

    async def _run(self, name: str, kernel: str, code: str, timeout_s: float) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = f"ws://127.0.0.1:{PORT}/user/{name}/api/kernels/{kernel}/channels"
        headers = {"Authorization": f"token {self.token}"}
        ws = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=30))
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex}
        header |= {"username": name, "version": "5.3", "date": ""}
        content = {"code": code, "silent": False, "store_history": False}
        content |= {"user_expressions": {}, "allow_stdin": False}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        await ws.write_message(json.dumps({**message, "channel": "shell"}))
        out, deadline = [], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["header"]["msg_type"]
            if kind == "stream":
                out.append(reply["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(reply["content"]["traceback"])[-3000:])
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                ws.close()
                return "".join(out)
        raise AssertionError(f"{name}: the cell did not finish in {timeout_s} s")


# --- what a student costs -----------------------------------------------------------------------


def pss_mib(uid: int) -> float:
    """Proportional set size of all of ``uid``'s processes (shared pages split fairly), MiB."""
    total = 0
    for pid in user_processes(uid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_s(uid: int) -> float:
    """CPU seconds of ``uid``'s live processes and of the children they reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in user_processes(uid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


@pytest.fixture
def hub(tmp_path):
    """A running hub (root), three students removed after; the root namespace kept."""
    pytest.importorskip("jupyterhub")
    proxy = proxy_path()
    before = root_snapshot()
    token = secrets.token_hex(32)
    with ExitStack() as stack:
        folder = stack.enter_context(made_folder())
        python_bin = user_python(folder)
        users = [stack.enter_context(unix_user(f"h{i}")) for i in range(STUDENTS)]
        env = {
            **os.environ,
            "VPNLAB_HUB_PORT": str(PORT),
            "VPNLAB_HUB_DIR": str(tmp_path / "hub"),
            "VPNLAB_HUB_PYTHON": str(python_bin / "python"),
            "VPNLAB_HUB_PROXY": proxy,
            "VPNLAB_HUB_AUTH": "dummy",
            "VPNLAB_HUB_TOKEN": token,
            "VPNLAB_TUN_NODE": str(tun_node(folder)),
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        }
        log = open(tmp_path / "hub.log", "wb")  # noqa: SIM115 (closed by the stack)
        stack.callback(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, proc)
        api = Hub(token)
        started = wait_until(lambda: api.api("GET", "/hub/api/")[0] == 200, 60, 0.5)
        assert started is not None, (tmp_path / "hub.log").read_text()[-3000:]
        yield api, users, tmp_path / "hub.log"
    assert root_snapshot() == before


def _stop(proc: subprocess.Popen) -> None:
    """The hub stops its servers and its proxy on SIGTERM; SIGKILL if it takes too long."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_three_students_labs_at_once_through_the_hub(hub):
    api, users, log = hub
    names = [u.pw_name for u in users]
    for name in names:
        assert api.api("POST", f"/hub/api/users/{name}")[0] in (201, 409)
        assert api.api("POST", f"/hub/api/users/{name}/server")[0] in (201, 202)
    for name in names:
        assert wait_until(lambda n=name: api.ready(n), 90, 0.5) is not None, log.read_text()[-3000:]
    for user in users:  # the course: the student's own copy
        notebook = Path(user.pw_dir) / "course/00_setup_topology.ipynb"
        assert notebook.exists() and notebook.stat().st_uid == user.pw_uid
    time.sleep(5)  # let the servers settle before the idle measurement
    idle = {u.pw_name: (pss_mib(u.pw_uid), cpu_s(u.pw_uid)) for u in users}
    time.sleep(10)
    idle_cpu = {u.pw_name: (cpu_s(u.pw_uid) - idle[u.pw_name][1]) / 10 for u in users}
    answers, during = {}, {}
    for user in users:  # one cell after the other: the CPU of each student's own cell
        cpu_before, start = cpu_s(user.pw_uid), time.monotonic()
        out = api.execute(user.pw_name, CELL)
        during[user.pw_name] = (cpu_s(user.pw_uid) - cpu_before, time.monotonic() - start)
        answers[user.pw_name] = json.loads(out.strip().splitlines()[-1])
    with_lab = {u.pw_name: pss_mib(u.pw_uid) for u in users}
    lab_cpu = {u.pw_name: cpu_s(u.pw_uid) for u in users}
    time.sleep(10)
    lab_idle = {u.pw_name: (cpu_s(u.pw_uid) - lab_cpu[u.pw_name]) / 10 for u in users}
    for user in users:
        answer = answers[user.pw_name]
        assert answer["ping"] == 0 and answer["whoami"] == f"you are {SERVER_IP}"
        assert answer["uid"] == 0  # root of the student's own user namespace
        assert answer["namespaces"] == ["hub-isp", "hub-r1", "hub-r2", "hub-web"]
        assert answer["state"].startswith(user.pw_dir)  # the student's state, not /run
    again = "from vpnlab.course.notebook import CourseLab; print(CourseLab('hub', 'hub-').whoami())"
    assert (
        api.execute(names[0], again).strip() == f"you are {SERVER_IP}"
    )  # the first lab: as it was
    report(idle, idle_cpu, during, with_lab, lab_idle)
    for user in users:
        assert api.api("DELETE", f"/hub/api/users/{user.pw_name}/server")[0] in (202, 204)
    for user in users:
        assert wait_until(lambda n=user.pw_name: api.stopped(n), 40, 0.5) is not None
        assert wait_until(lambda u=user: user_processes(u.pw_uid) == [], 10) is not None


def report(idle: dict, idle_cpu: dict, during: dict, with_lab: dict, lab_idle: dict) -> None:
    """The numbers the README quotes: per student, and what an 8-core/16 GB server holds."""
    idle_mib = max(m for m, _ in idle.values())
    lab_mib = max(with_lab.values())
    cell_cpu = max(c for c, _ in during.values())
    cell_s = max(s for _, s in during.values())
    idle_pct = max(idle_cpu.values()) * 100
    by_memory = int(16 * 1024 * 0.9 / lab_mib)
    print(
        f"\nper student: server idle {idle_mib:.0f} MiB PSS, {idle_pct:.2f} % of a core; "
        f"with the lab up {lab_mib:.0f} MiB, {max(lab_idle.values()) * 100:.2f} % idle; "
        f"the cell {cell_cpu:.1f} CPU s in {cell_s:.1f} s; an 8-core/16 GB server: "
        f"{by_memory} students with a lab up "
        f"(memory, 90 % of 16 GiB), {int(8 / max(cell_cpu / cell_s, 0.01))} running a cell "
        "at the same moment (CPU)"
    )
