"""A class on one server: a real JupyterHub (deploy/jupyterhub/jupyterhub_config.py) on the
session's class install (``users.class_install``), real Unix users, real labs.

Through the hub's REST API (a service token with admin rights) the tests start servers, and in
each a kernel (the single-user server's API, through the proxy) runs what notebook cells run:

- three students at once, each with two notebooks' labs (``CourseLab``: a prefix per notebook)
  opened in both orders, each still answering after the other came up; a third lab past the
  limit refused in one line; the labs of different students do not clash; stopping a server
  removes its holder and every lab in it;
- a server that cannot start (the install under a folder students cannot enter; a hub user
  with no Unix account) says why in the hub's log and on the spawn page, within seconds;
- the per-student cgroup: its limits are set, the pids limit stops a bounded fork bomb, the
  idle culler stops the server after its timeout and the cgroup and the processes go with it;
- login through PAM over HTTPS (a self-signed pair made with openssl): a capitalised name logs
  in as the lowercase Unix user; plain HTTP off the loopback is refused in one line.

Needs jupyterhub (the ``test`` extra) and the class install (built by the session, with
configurable-http-proxy from npm).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpnlab.course import classhub
from vpnlab.course.classhub import user_processes

from .helpers import SERVER_IP, root_snapshot, wait_until
from .users import REPO, class_install, made_folder, tun_node, unix_user

CONFIG = REPO / "deploy/jupyterhub/jupyterhub_config.py"
PORT = 18000 + os.getpid() % 1000 * 3
TASKS = 400
"""The hub's pids limit per student: a server, a kernel and two labs need about 150."""

LAB_CELL = """
import json, os
from vpnlab.course.notebook import CourseLab
lab = CourseLab({name!r})
lab.up()
ping = lab.run("r1", "ping -c 2 -i 0.2 -W 2 10.8.0.1")
nodes = lab.status()["nodes"]
print(json.dumps({{"prefix": lab.prefix, "ping": ping.returncode, "whoami": lab.whoami(),
                  "uid": os.getuid(), "state": str(lab.state_dir()),
                  "namespaces": sorted(n["namespace"] for n in nodes.values() if n["exists"])}}))
"""
WHOAMI_CELL = "from vpnlab.course.notebook import CourseLab; print(CourseLab({name!r}).whoami())"
REFUSED_CELL = """
from vpnlab.course.notebook import CourseError, CourseLab
try:
    CourseLab("02_third").up()
except CourseError as exc:
    print(exc)
"""
FORK_CELL = """
import subprocess
children, refused = [], 0
for _ in range({tries}):
    try:
        children.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        refused += 1
for child in children:
    child.kill()
    child.wait()
print(len(children), refused)
"""


STUDENT_DISABLED = (
    "@jupyter/nbgrader",  # Create Assignment (cells' grading metadata), the Nbgrader menu
    "jupyterlab-jupytext",  # its server part is off too
    "@jupyterlab/apputils-extension:announcements",  # the news prompt (a fetch to jupyter.org)
)


class Hub(classhub.Hub):
    """classhub's hub and REST API (the service token), with what these tests ask of it."""

    def spawn(self, name: str) -> int:
        assert self.api("POST", f"/hub/api/users/{name}")[0] in (201, 409)
        return self.api("POST", f"/hub/api/users/{name}/server")[0]

    def ready(self, name: str) -> bool:
        code, user = self.api("GET", f"/hub/api/users/{name}")
        return code == 200 and bool(user.get("servers", {}).get("", {}).get("ready"))

    def stopped(self, name: str) -> bool:
        code, user = self.api("GET", f"/hub/api/users/{name}")
        return code == 200 and not user.get("servers")

    def progress(self, name: str) -> list[dict]:
        """The spawn page's events (``/server/progress``, an event stream)."""
        request = urllib.request.Request(f"{self.base}/hub/api/users/{name}/server/progress")
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]

    def lab_page_config(self, name: str) -> dict:
        """The page config ``name``'s JupyterLab gives the browser (``jupyter-config-data``)."""
        request = urllib.request.Request(f"{self.base}/user/{name}/lab")
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            page = response.read().decode()
        found = re.search(r'<script id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S)
        assert found is not None, page[:2000]
        return json.loads(found.group(1))

    def execute(self, name: str, code: str, timeout_s: float = 120) -> str:
        """Run ``code`` in a new kernel of ``name``'s server; its stdout (raises on an error)."""
        return classhub.execute(self, name, code, timeout_s)

    def answer(self, name: str, code: str) -> dict:
        """The JSON of the last line the cell printed."""
        return json.loads(self.execute(name, code).strip().splitlines()[-1])


def hub_env(folder: Path, hub_dir: Path, prefix: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "VPNLAB_SYSTEM_PREFIX": str(prefix),
        "VPNLAB_HUB_PORT": str(PORT),
        "VPNLAB_HUB_DIR": str(hub_dir),
        "VPNLAB_HUB_TASKS": str(TASKS),
        "VPNLAB_HUB_LABS": "2",
        "VPNLAB_HUB_CULL_TIMEOUT": "0",
        "VPNLAB_TUN_NODE": str(tun_node(folder)),
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        **settings,
    }


def jupyterhub(prefix: Path) -> list[str]:
    """The hub's command, as docs/class.md gives it: the class install's jupyterhub and config."""
    config = prefix / "jupyterhub/jupyterhub_config.py"
    return [str(prefix / "venv/bin/python"), "-m", "jupyterhub", "-f", str(config)]


@contextlib.contextmanager
def running_hub(tmp_path: Path, prefix: Path | None = None, **settings: str) -> Iterator[Hub]:
    """A hub (root) on the class install ``prefix``, stopped after; the root namespace kept."""
    prefix = prefix or class_install()
    before = root_snapshot()
    token = secrets.token_hex(32)
    with made_folder() as folder:
        env = hub_env(folder, tmp_path / "hub", prefix, **settings)
        env |= {"VPNLAB_HUB_AUTH": "dummy", "VPNLAB_HUB_TOKEN": token}
        log_path = tmp_path / "hub.log"
        proc = classhub.start_hub(jupyterhub(prefix), env, log_path)
        try:
            hub = Hub(f"http://127.0.0.1:{PORT}", token, proc, log_path)
            started = wait_until(lambda: hub.api("GET", "/hub/api/")[0] == 200, 60, 0.5)
            assert started is not None, log_path.read_text()[-3000:]
            yield hub
        finally:
            classhub.stop_hub(proc)
    assert root_snapshot() == before


def tail(hub: Hub) -> str:
    return hub.log.read_text(errors="replace")[-3000:]


def test_students_each_notebook_owns_its_lab(tmp_path):
    """Three students; notebook A then B for one, B then A for another: both labs answer."""
    with (
        unix_user("h0") as s0,
        unix_user("h1") as s1,
        unix_user("h2") as s2,
        running_hub(tmp_path) as hub,
    ):
        users = [s0, s1, s2]
        for user in users:
            assert hub.spawn(user.pw_name) in (201, 202)
        for user in users:
            ready = wait_until(lambda n=user.pw_name: hub.ready(n), 90, 0.5)
            assert ready is not None, tail(hub)
        for user in users:  # the student edition, the student's own copy; home closed
            course = Path(user.pw_dir) / "course"
            assert (course / "00_setup_topology.ipynb").stat().st_uid == user.pw_uid
            assert sorted(p.name for p in course.glob("*.ipynb")) == sorted(
                p.name for p in (class_install() / "course").glob("*.ipynb")
            )
            assert Path(user.pw_dir).stat().st_mode & 0o777 == 0o700
        # the instructor's tools are off in a student's JupyterLab, server and browser parts
        disabled = hub.lab_page_config(s0.pw_name)["disabledExtensions"]
        assert set(STUDENT_DISABLED) <= set(disabled), disabled
        assert hub.api("GET", f"/user/{s0.pw_name}/formgrader")[0] == 404
        # a student's `vpnlab ...` in a terminal or a cell is the install's
        which = hub.execute(s0.pw_name, "import shutil; print(shutil.which('vpnlab'))").strip()
        assert which == str(class_install() / "venv/bin/vpnlab")
        homes = {user.pw_name: user.pw_dir for user in users}
        orders = {s0.pw_name: ("00_a", "01_b"), s1.pw_name: ("01_b", "00_a"), s2.pw_name: ()}
        for name, notebooks in orders.items():
            for notebook in notebooks or ("00_a",):
                answer = hub.answer(name, LAB_CELL.format(name=notebook))
                assert answer["ping"] == 0 and answer["whoami"] == f"you are {SERVER_IP}"
                assert answer["uid"] == 0  # root of the student's own user namespace
                own = answer["prefix"]
                assert answer["namespaces"] == [f"{own}{n}" for n in ("isp", "r1", "r2", "web")]
                assert answer["state"].startswith(homes[name])  # the student's, not /run
            for notebook in notebooks:  # the first notebook's lab, still up after the second
                whoami = hub.execute(name, WHOAMI_CELL.format(name=notebook)).strip()
                assert whoami == f"you are {SERVER_IP}", (name, notebook)
        refused = hub.execute(s0.pw_name, REFUSED_CELL).strip().splitlines()
        # the command that failed, then its error whole: one line, naming the limit and the way out
        assert len(refused) == 2 and refused[0].startswith("vpnlab lab up"), refused
        assert "2 labs up already (nb00-, nb01-)" in refused[1]
        assert "the most you may have at once is 2" in refused[1]
        for user in users:
            assert hub.api("DELETE", f"/hub/api/users/{user.pw_name}/server")[0] in (202, 204)
        for user in users:
            assert wait_until(lambda n=user.pw_name: hub.stopped(n), 40, 0.5) is not None
            assert wait_until(lambda u=user: user_processes(u.pw_uid) == [], 10) is not None


def test_a_spawn_that_cannot_start_says_why(tmp_path):
    """The install in a folder students cannot enter, and a hub user with no Unix account:
    'Spawn failed: ...' with the reason, on the page and in the log, within seconds."""
    with made_folder() as closed, unix_user("x") as user:
        prefix = closed / "install"
        prefix.mkdir()
        for part in ("venv", "course", "bin", "proxy", "jupyterhub"):
            (prefix / part).symlink_to(class_install() / part)
        closed.chmod(0o700)  # as a checkout in a Debian 12 home
        with running_hub(tmp_path, prefix) as hub:
            for name, reason in (
                (user.pw_name, f"{user.pw_name} cannot run {prefix}/bin/vpnlab-start-singleuser"),
                ("nobodyhere", "there is no Unix user 'nobodyhere' on this server"),
            ):
                start = time.monotonic()
                hub.spawn(name)
                assert wait_until(lambda n=name: hub.stopped(n), 10, 0.2) is not None
                events = hub.progress(name)
                assert time.monotonic() - start < 15
                assert events[-1]["failed"] and reason in events[-1]["message"], events
                assert events[-1]["message"].startswith("Spawn failed: ")
                assert f"Error starting {name}'s server" in tail(hub) and reason in tail(hub)


def cgroup_folders(name: str) -> list[Path]:
    """The student's cgroup in each v1 hierarchy (the hub is this test's child)."""
    sys.path.insert(0, str(CONFIG.parent))
    try:
        from vpnlab_spawner import StudentCgroup
    finally:
        sys.path.remove(str(CONFIG.parent))
    return StudentCgroup(name).folders


def test_limits_bite_and_the_culler_stops_idle_servers(tmp_path):
    """The pids limit stops a bounded fork bomb; the culler stops the idle server (its lab and
    cgroup go with it)."""
    if not os.access("/sys/fs/cgroup/pids/cgroup.procs", os.W_OK):
        pytest.skip("no writable cgroup v1 pids hierarchy: the spawner sets no limits here")
    with unix_user("l") as user, running_hub(tmp_path, VPNLAB_HUB_CULL_TIMEOUT="60") as hub:
        name = user.pw_name
        assert hub.spawn(name) in (201, 202)
        assert wait_until(lambda: hub.ready(name), 90, 0.5) is not None, tail(hub)
        memory, cpu, pids = cgroup_folders(name)
        assert int((memory / "memory.limit_in_bytes").read_text()) == 2 << 30
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == int(
            (cpu / "cpu.cfs_period_us").read_text()
        )
        assert int((pids / "pids.max").read_text()) == TASKS
        server_pids = set(user_processes(user.pw_uid))
        assert server_pids and server_pids <= set(
            map(int, (pids / "cgroup.procs").read_text().split())
        )
        made, refused = map(int, hub.execute(name, FORK_CELL.format(tries=2 * TASKS)).split())
        assert made < TASKS and refused == 2 * TASKS - made and refused > 0
        answer = hub.answer(name, LAB_CELL.format(name="00_a"))  # a lab, for the culler
        assert answer["whoami"] == f"you are {SERVER_IP}"
        culled = wait_until(lambda: hub.stopped(name), 120, 1)
        assert culled is not None, tail(hub)
        assert wait_until(lambda: user_processes(user.pw_uid) == [], 10) is not None
        assert not any(folder.exists() for folder in (memory, cpu, pids))
        log = hub.log.read_text(errors="replace")  # the whole log: polls fill its tail
        assert "Culling server" in log or "culling" in log.lower(), tail(hub)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl, for one day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return cert, key


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def login(base: str, context: ssl.SSLContext, name: str, password: str) -> tuple[int, str, list]:
    """The hub's login form as a browser posts it: (status, Location, cookies)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context),
        urllib.request.HTTPCookieProcessor(jar),
        NoRedirect,
    )
    with opener.open(f"{base}/hub/login", timeout=30) as page:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": name, "password": password, "_xsrf": xsrf})
    try:
        with opener.open(f"{base}/hub/login", data=form.encode(), timeout=30) as response:
            return response.status, "", list(jar)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", ""), list(jar)


def test_pam_login_over_https_with_a_capitalised_name(tmp_path):
    """PAM over TLS (a self-signed pair): 'Name' logs in as the Unix user 'name'; a wrong
    password does not; plain HTTP off the loopback is refused in one line."""
    group = f"vlg{os.getpid() % 100000}"
    subprocess.run(["groupadd", group], check=True, timeout=30)
    try:
        with unix_user("p") as user, made_folder() as folder:
            subprocess.run(["usermod", "-aG", group, user.pw_name], check=True, timeout=30)
            password = secrets.token_urlsafe(12)
            subprocess.run(["chpasswd"], input=f"{user.pw_name}:{password}", text=True, check=True)
            cert, key = self_signed(folder)
            env = hub_env(folder, tmp_path / "hub", class_install(), VPNLAB_HUB_GROUP=group)

            def refusal(setting: dict[str, str]) -> list[str]:
                """The hub started with ``setting``: it must stop at once; its stderr lines."""
                done = subprocess.run(
                    jupyterhub(class_install()),
                    env={**env, **setting},
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 1, done.stderr
                return done.stderr.strip().splitlines()

            assert refusal({"VPNLAB_HUB_IP": "0.0.0.0"}) == [
                "vpnlab hub: refusing plain HTTP on 0.0.0.0: passwords would cross the network "
                "in clear; set VPNLAB_HUB_SSL_CERT and VPNLAB_HUB_SSL_KEY (docs/class.md)"
            ]
            assert refusal({"VPNLAB_HUB_MEM": "2 GB"}) == [
                "vpnlab hub: VPNLAB_HUB_MEM='2 GB' is not a number (default 2G)"
            ]
            env |= {"VPNLAB_HUB_SSL_CERT": str(cert), "VPNLAB_HUB_SSL_KEY": str(key)}
            log_path = tmp_path / "hub.log"
            proc = classhub.start_hub(jupyterhub(class_install()), env, log_path)
            try:
                base = f"https://127.0.0.1:{PORT}"
                context = ssl.create_default_context(cafile=str(cert))

                def answers() -> bool:
                    try:
                        with urllib.request.urlopen(f"{base}/hub/api/", context=context) as r:
                            return r.status == 200
                    except OSError:
                        return False

                assert wait_until(answers, 60, 0.5) is not None, log_path.read_text()[-3000:]
                capitalised = user.pw_name.capitalize()
                wrong = login(base, context, capitalised, password + "x")
                assert wrong[0] == 403, wrong
                code, location, cookies = login(base, context, capitalised, password)
                assert code == 302 and location.startswith("/hub/"), (code, location)
                assert any(c.name == "jupyterhub-session-id" for c in cookies)
                hub_log = log_path.read_text()
                assert f"User logged in: {user.pw_name}" in hub_log, hub_log[-3000:]
            finally:
                classhub.stop_hub(proc)
    finally:
        subprocess.run(["groupdel", group], capture_output=True, timeout=30, check=False)


LMS_LOGINS = {
    "auth_lti13.py": {
        "VPNLAB_LTI_ISSUER": "https://lms.example",
        "VPNLAB_LTI_CLIENT_ID": "vpnlab-tool",
        "VPNLAB_LTI_AUTH_URL": "https://lms.example/mod/lti/auth.php",
        "VPNLAB_LTI_JWKS_URL": "https://lms.example/mod/lti/certs.php",
    },
    "auth_oauth.py": {
        "VPNLAB_OAUTH_URL": "https://sso.example/realms/uni/protocol/openid-connect",
        "VPNLAB_OAUTH_CLIENT_ID": "vpnlab-hub",
        "VPNLAB_OAUTH_CLIENT_SECRET": "not-a-secret",
        "VPNLAB_OAUTH_CALLBACK": "http://127.0.0.1/hub/oauth_callback",
    },
}


@pytest.mark.parametrize("example", sorted(LMS_LOGINS))
def test_lms_login_examples_load_and_answer(tmp_path, example):
    """The LMS login examples, included by the main config, with the packages the class
    install has: the hub starts with them; LTI 1.3 serves its tool configuration to the LMS,
    OAuth sends the browser to the provider with the hub's client ID. (No LMS or provider
    runs here: the logins themselves are not exercised.)"""
    config = str(class_install() / "jupyterhub" / example)
    settings = {**LMS_LOGINS[example], "VPNLAB_HUB_AUTH_CONFIG": config}
    with running_hub(tmp_path, **settings) as hub:
        if example == "auth_lti13.py":
            with urllib.request.urlopen(f"{hub.base}/hub/lti13/config", timeout=30) as page:
                tool = json.loads(page.read())
            assert tool["title"] == "vpnlab" and "/hub/lti13/oauth_login" in json.dumps(tool)
        else:
            opener = urllib.request.build_opener(NoRedirect)
            try:
                opener.open(f"{hub.base}/hub/oauth_login", timeout=30)
                raise AssertionError("no redirect to the provider")
            except urllib.error.HTTPError as exc:
                location = exc.headers.get("Location", "")
            assert location.startswith(LMS_LOGINS[example]["VPNLAB_OAUTH_URL"] + "/auth?")
            assert "client_id=vpnlab-hub" in location
        used = "LmsAuthenticator" if example == "auth_lti13.py" else "GenericOAuthenticator"
        assert re.search(rf"Using Authenticator: \S*{used}", hub.log.read_text()), tail(hub)
