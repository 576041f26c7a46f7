"""JupyterHub for a class on one server: each student logs in, gets JupyterLab with the student
edition of the course, and runs their own rootless labs (vpnlab/lab/rootless.py), kept apart
from the others and limited. The instructor's guide: docs/class.md. Tested by
tests/lab/test_jupyterhub.py.

    sudo scripts/setup.sh --system            # the class install, /opt/vpnlab
    sudo /opt/vpnlab/venv/bin/jupyterhub -f /opt/vpnlab/jupyterhub/jupyterhub_config.py

The hub runs as root (it starts each student's server as that Unix user); each student's
server runs the class install (never a checkout in someone's home) in a rootless holder of its
own (``vpnlab rootless run``), so every lab a notebook builds lives in namespaces that student
owns, and stopping a server kills its holder and with it the student's labs.

Settings, all from the environment so that the test and a real class use the same file:

    VPNLAB_SYSTEM_PREFIX             the class install (default: the one this file is in,
                                     PREFIX/jupyterhub/): venv/, proxy/, course/,
                                     bin/vpnlab-start-singleuser
    VPNLAB_HUB_IP, VPNLAB_HUB_PORT   where the proxy listens (default 127.0.0.1:8000; the hub's
                                     own API and the proxy's API take the two ports after it)
    VPNLAB_HUB_SSL_CERT, _SSL_KEY    the TLS certificate (full chain) and key: required unless
                                     VPNLAB_HUB_IP is 127.0.0.1 (docs/class.md: certbot)
    VPNLAB_HUB_DIR                   the hub's database and cookie secret (default /srv/vpnlab-hub)
    VPNLAB_HUB_GROUP                 the Unix group whose members may log in (PAM; default
                                     vpnlab-students)
    VPNLAB_HUB_ADMINS                hub admins (the instructor), comma-separated login names
    VPNLAB_HUB_AUTH_CONFIG           a file that sets another authenticator (the LMS: LTI 1.3,
                                     auth_lti13.py; or OAuth, auth_oauth.py), loaded after this
    VPNLAB_HUB_MEM, _CPU, _TASKS     limits per student: memory (default 2G), % of a core
                                     (default 100), processes and threads (default 1024)
    VPNLAB_HUB_LABS                  labs a student may have up at once (default 3)
    VPNLAB_HUB_SPAWNER               systemd (SystemdSpawner, the default where systemd is PID 1)
                                     or local (vpnlab_spawner.py: cgroup v1 limits, the default
                                     elsewhere)
    VPNLAB_HUB_CULL_TIMEOUT          seconds idle before a server (and its labs) is stopped
                                     (default 3600; 0: never)
    VPNLAB_TUN_NODE                  passed to the students' servers, see rootless.py (for a
                                     host whose /dev/net/tun is 0600)
    VPNLAB_HUB_AUTH=dummy            test only: any password (DummyAuthenticator)
    VPNLAB_HUB_TOKEN                 test only: an API token of a service with admin rights
"""

# ruff: noqa: F821  (``c`` and ``load_subconfig`` are given when JupyterHub loads the file)

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vpnlab_spawner.py beside this file

from vpnlab_spawner import check_student, parse_bytes  # noqa: E402


def setting(name: str, default: str) -> str:
    return os.environ.get(f"VPNLAB_HUB_{name}") or default


def number_setting(name: str, default: str, parse=int) -> int:
    """A setting that is a number (``parse``: int, or parse_bytes for sizes); anything else
    stops the hub with one line naming it, not a traceback from the config file."""
    text = setting(name, default)
    try:
        return parse(text)
    except ValueError:
        sys.exit(f"vpnlab hub: VPNLAB_HUB_{name}={text!r} is not a number (default {default})")


# --- where things are: the class install (scripts/setup.sh --system) ----------------------------

PREFIX = Path(os.environ.get("VPNLAB_SYSTEM_PREFIX") or Path(__file__).resolve().parents[1])
"""The class install this file was installed into ($PREFIX/jupyterhub/): /opt/vpnlab, or the
VPNLAB_SYSTEM_PREFIX that ``scripts/setup.sh --system`` was given."""
PYTHON = PREFIX / "venv/bin/python"
COURSE = PREFIX / "course"
START = PREFIX / "bin/vpnlab-start-singleuser"
PROXY = PREFIX / "proxy/node_modules/.bin/configurable-http-proxy"
for needed in (PYTHON, COURSE, START, PROXY):
    if not needed.exists():
        sys.exit(f"vpnlab hub: {needed} is missing: run 'sudo scripts/setup.sh --system' first")
HUB_DIR = Path(setting("DIR", "/srv/vpnlab-hub"))
HUB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)

# --- the network: TLS, or the loopback only ---------------------------------------------------

IP = setting("IP", "127.0.0.1")
PORT = number_setting("PORT", "8000")
CERT, KEY = os.environ.get("VPNLAB_HUB_SSL_CERT"), os.environ.get("VPNLAB_HUB_SSL_KEY")
if bool(CERT) != bool(KEY):
    sys.exit("vpnlab hub: set both VPNLAB_HUB_SSL_CERT and VPNLAB_HUB_SSL_KEY, or neither")
if CERT:
    c.JupyterHub.ssl_cert = CERT
    c.JupyterHub.ssl_key = KEY
elif IP != "127.0.0.1":
    sys.exit(
        f"vpnlab hub: refusing plain HTTP on {IP or 'every address'}: passwords would cross the "
        "network in clear; set VPNLAB_HUB_SSL_CERT and VPNLAB_HUB_SSL_KEY (docs/class.md)"
    )
c.JupyterHub.ip = IP
c.JupyterHub.port = PORT
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = PORT + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 2}"
c.ConfigurableHTTPProxy.command = [str(PROXY)]
c.ConfigurableHTTPProxy.pid_file = str(HUB_DIR / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{HUB_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_DIR / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(HUB_DIR / "hub.pid")

# --- who logs in: Unix accounts (PAM), names in lowercase ------------------------------------
#
# JupyterHub lowercases the name after the login, but PAM checks the name as typed: "Alice"
# fails for the Unix user alice (Debian's useradd makes only lowercase names). So the name is
# lowercased before PAM sees it, and the hub's user is the same name.

if setting("AUTH", "pam") == "dummy":  # the tests' users; never for a class
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
else:
    from jupyterhub.auth import PAMAuthenticator

    class LowercasePAMAuthenticator(PAMAuthenticator):
        """PAM with the login name lowercased (and stripped) before PAM checks it."""

        def authenticate(self, handler, data):
            data = {**data, "username": data["username"].strip().lower()}
            return super().authenticate(handler, data)

    c.JupyterHub.authenticator_class = LowercasePAMAuthenticator
    c.LowercasePAMAuthenticator.allowed_groups = {setting("GROUP", "vpnlab-students")}
c.Authenticator.admin_users = {n.strip().lower() for n in setting("ADMINS", "").split(",")} - {""}

# --- each student's server: the class install, the student edition, kept apart and limited ---
#
# deploy/start-singleuser.sh (installed as bin/vpnlab-start-singleuser) as that Unix user: the
# course merged into ~/course (new notebooks copied, the student's edited ones never
# overwritten), then JupyterLab in a rootless holder of its own. The same entry point as the
# image's (deploy/Dockerfile).

c.Spawner.cmd = [str(START)]
c.Spawner.default_url = "/lab/tree/00_setup_topology.ipynb"
c.Spawner.notebook_dir = "~/course"
c.Spawner.environment = {
    key: os.environ[key] for key in ("VPNLAB_TUN_NODE", "PATH") if key in os.environ
}
c.Spawner.environment |= {
    "VPNLAB_PYTHON": str(PYTHON),
    "VPNLAB_COURSE": str(COURSE),
    "VPNLAB_MAX_LABS": setting("LABS", "3"),
}
# A student's server without the instructor's server extensions (nbgrader's formgrader alone
# costs a second of CPU per start) and without the language-server probe: docs/performance.md.
c.Spawner.environment["JUPYTER_CONFIG_PATH"] = str(Path(__file__).with_name("student-server"))
# A spawn that cannot work fails within seconds (check_student, before it starts); one that
# works may wait behind a class logging in at once: 40 on 2 cores were ready in 57 s at worst
# under load (docs/performance.md), so the limits leave room and never cut a start that runs.
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
c.Spawner.pre_spawn_hook = lambda spawner: check_student(spawner, [str(COURSE)])

MEMORY = number_setting("MEM", "2G", parse_bytes)
CPU_PERCENT = number_setting("CPU", "100")
TASKS = number_setting("TASKS", "1024")
SYSTEMD = Path("/run/systemd/system").is_dir()
if setting("SPAWNER", "systemd" if SYSTEMD else "local") == "systemd":
    # a transient unit per student; ProtectProc=invisible: hidepid for that unit's /proc
    c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
    c.SystemdSpawner.mem_limit = str(MEMORY)
    c.SystemdSpawner.cpu_limit = CPU_PERCENT / 100
    c.SystemdSpawner.unit_extra_properties = {"TasksMax": str(TASKS), "ProtectProc": "invisible"}
    c.SystemdSpawner.isolate_tmp = True
    c.SystemdSpawner.disable_user_sudo = True
else:  # no systemd (a container, a CI machine): a cgroup v1 per student, vpnlab_spawner.py
    c.JupyterHub.spawner_class = "vpnlab_spawner.VpnlabSpawner"
    c.VpnlabSpawner.mem_limit_bytes = MEMORY
    c.VpnlabSpawner.cpu_limit_percent = CPU_PERCENT
    c.VpnlabSpawner.tasks_limit = TASKS

# --- services (each one a block; a grader service goes here too) -----------------------------

c.JupyterHub.services = []
c.JupyterHub.load_roles = []

# jupyterhub-idle-culler: a server idle for CULL_TIMEOUT s is stopped, and its labs with it
# (they live in the server's holder).
CULL_TIMEOUT = number_setting("CULL_TIMEOUT", "3600")
if CULL_TIMEOUT:
    c.JupyterHub.services.append(
        {
            "name": "idle-culler",
            "command": [
                str(PYTHON),
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={CULL_TIMEOUT}",
                f"--cull-every={max(CULL_TIMEOUT // 6, 5)}",
            ],
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )

if os.environ.get("VPNLAB_HUB_TOKEN"):  # the test drives the hub through its REST API
    c.JupyterHub.services.append(
        {"name": "vpnlab-test", "api_token": os.environ["VPNLAB_HUB_TOKEN"]}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "vpnlab-test",
            "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
            "services": ["vpnlab-test"],
        }
    )

# --- The grader service (issue 26, vpnlab/grader/): its own block, in its own file ------------
load_subconfig(str(Path(__file__).with_name("grader_service.py")))

# --- another login (the course's LMS): a file of its own, loaded last -------------------------

if os.environ.get("VPNLAB_HUB_AUTH_CONFIG"):
    load_subconfig(os.environ["VPNLAB_HUB_AUTH_CONFIG"])
