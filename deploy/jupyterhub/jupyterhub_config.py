"""JupyterHub for a class on one server: each student logs in, gets JupyterLab with the course,
and runs their own rootless lab (vpnlab/lab/rootless.py). Tested by tests/lab/test_jupyterhub.py.

    sudo .venv/bin/jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

The hub runs as root (LocalProcessSpawner starts each student's server as that Unix user); each
student's server runs in a rootless holder of its own (``vpnlab rootless run``), so every lab a
notebook builds lives in namespaces that student owns, the labs of two students never meet
(same namespace names, same addresses, no clash), and stopping a server kills its holder and
with it the student's labs. Students need Unix accounts (PAM, the default authenticator) and
nothing else: no sudo.

Settings, all from the environment so that the test and a real class use the same file:

    VPNLAB_HUB_IP, VPNLAB_HUB_PORT   where the proxy listens (default 127.0.0.1:8000; the hub's
                                     own API and the proxy's API take the two ports after it)
    VPNLAB_HUB_DIR                   the hub's database and cookie secret (default /srv/vpnlab-hub)
    VPNLAB_HUB_PYTHON                the Python of the students' servers (default: this one);
                                     it must be one the students can run, with vpnlab installed
    VPNLAB_HUB_COURSE                the notebooks copied to ~/course on a student's first start
                                     (default: this repository's notebooks/)
    VPNLAB_HUB_PROXY                 configurable-http-proxy (npm); default: .venv/hub/ (what
                                     scripts/setup.sh installs), else the one on PATH
    VPNLAB_HUB_AUTH=dummy            test only: any password (DummyAuthenticator); default PAM
    VPNLAB_HUB_TOKEN                 test only: an API token of a service with admin rights
    VPNLAB_TUN_NODE                  passed to the students' servers, see rootless.py (for a
                                     host whose /dev/net/tun is 0600)
"""

# ruff: noqa: F821  (``c`` is JupyterHub's config object, given when the file is loaded)

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HUB_DIR = Path(os.environ.get("VPNLAB_HUB_DIR", "/srv/vpnlab-hub"))
HUB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
PORT = int(os.environ.get("VPNLAB_HUB_PORT", "8000"))
PYTHON = os.environ.get("VPNLAB_HUB_PYTHON", sys.executable)
COURSE = Path(os.environ.get("VPNLAB_HUB_COURSE", REPO / "notebooks"))
PROXY = os.environ.get("VPNLAB_HUB_PROXY") or str(
    REPO / ".venv/hub/node_modules/.bin/configurable-http-proxy"
)
if not Path(PROXY).exists():
    PROXY = shutil.which("configurable-http-proxy") or PROXY

c.JupyterHub.ip = os.environ.get("VPNLAB_HUB_IP", "127.0.0.1")
c.JupyterHub.port = PORT
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = PORT + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 2}"
c.ConfigurableHTTPProxy.command = [PROXY]
c.JupyterHub.db_url = f"sqlite:///{HUB_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_DIR / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(HUB_DIR / "proxy.pid")
c.JupyterHub.pid_file = str(HUB_DIR / "hub.pid")

# Each student's server: deploy/start-singleuser.sh as that Unix user (the course in ~/course,
# then JupyterLab in a rootless holder of its own), the same entry point as the image's
# (deploy/Dockerfile). On the host the server and every lab it builds run with the student's uid.
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [str(REPO / "deploy/start-singleuser.sh")]
c.Spawner.default_url = "/lab/tree/00_setup_topology.ipynb"
c.Spawner.notebook_dir = "~/course"
c.Spawner.environment = {
    key: os.environ[key] for key in ("VPNLAB_TUN_NODE", "PATH") if key in os.environ
}
c.Spawner.environment |= {"VPNLAB_PYTHON": PYTHON, "VPNLAB_COURSE": str(COURSE)}
c.Spawner.environment["VPNLAB_PREFIX"] = "nb-"
# A student's server without the instructor's server extensions (nbgrader's formgrader alone
# costs a second of CPU per start) and without the language-server probe: docs/performance.md.
c.Spawner.environment["JUPYTER_CONFIG_PATH"] = str(REPO / "deploy/jupyterhub/student-server")
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60

if os.environ.get("VPNLAB_HUB_AUTH") == "dummy":  # the test's three users; never for a class
    c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True  # every Unix user who can log in (PAM) is a student

if os.environ.get("VPNLAB_HUB_TOKEN"):  # the test drives the hub through its REST API
    c.JupyterHub.services = [{"name": "vpnlab-test", "api_token": os.environ["VPNLAB_HUB_TOKEN"]}]
    c.JupyterHub.load_roles = [
        {
            "name": "vpnlab-test",
            "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
            "services": ["vpnlab-test"],
        }
    ]
