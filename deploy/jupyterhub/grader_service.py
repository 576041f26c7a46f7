"""The hub's grader service (issue 26; ``vpnlab/grader/``), loaded by jupyterhub_config.py.

A managed service: the hub (root) starts ``vpnlab grader serve``; its enterer keeps root only
to enter students' labs, the rest drops to the service's own Unix user. Students ask it with
their own hub token (``vpnlab grader check``, ``vpnlab lab up --fault grader``); the
instructor reads its store with ``vpnlab grader report``. Only when the class install made the
service's user (``useradd --system vpnlab-grader`` and its 0700 store folder, docs/course.md),
so a hub without it (tests/lab/test_jupyterhub.py) runs as before.

    VPNLAB_GRADER_USER     the service's user (default vpnlab-grader)
    VPNLAB_GRADER_STORE    its SQLite store (default /var/lib/vpnlab-grader/grader.db)
    VPNLAB_GRADER_PORT     where it listens on 127.0.0.1 (default 10101)
    VPNLAB_GRADER_PREFIX   the students' lab prefix it checks (default nb-, as VPNLAB_PREFIX)
    VPNLAB_GRADER_PYTHON   its Python (default: the hub's); root-owned and one the students
                           can run: the checks' one-liners run with it inside their labs

The students' server tokens (``JUPYTERHUB_API_TOKEN``) get the scope to reach the service:
the ``user`` role holds it, and the ``server`` role (what a server token gets) asks for it.
"""

# ruff: noqa: F821  (``c`` is JupyterHub's config object, given when the file is loaded; in a
# subconfig a list or dict is appended to or updated, then merged into the main file's)

import os
import pwd
import sys

GRADER_USER = os.environ.get("VPNLAB_GRADER_USER", "vpnlab-grader")
GRADER_STORE = os.environ.get("VPNLAB_GRADER_STORE", "/var/lib/vpnlab-grader/grader.db")
GRADER_PORT = int(os.environ.get("VPNLAB_GRADER_PORT", "10101"))
GRADER_PREFIX = os.environ.get("VPNLAB_GRADER_PREFIX", "nb-")
GRADER_PYTHON = os.environ.get("VPNLAB_GRADER_PYTHON", sys.executable)
ACCESS = "access:services!service=vpnlab-grader"

try:
    pwd.getpwnam(GRADER_USER)
except KeyError:
    GRADER_USER = ""

if GRADER_USER:
    c.JupyterHub.services.append(
        {
            "name": "vpnlab-grader",
            "url": f"http://127.0.0.1:{GRADER_PORT}",
            "cwd": "/",  # not the hub's folder: python -m imports from where it starts
            "command": [
                *(GRADER_PYTHON, "-m", "vpnlab", "grader", "serve", "--user", GRADER_USER),
                *("--store", GRADER_STORE, "--port", str(GRADER_PORT), "--prefix", GRADER_PREFIX),
            ],
            "display": False,
        }
    )
    c.JupyterHub.load_roles.append({"name": "user", "scopes": ["self", ACCESS]})
    server_scopes = ["users:activity!user", "access:servers!server", ACCESS]  # JupyterHub's + ours
    c.JupyterHub.load_roles.append({"name": "server", "scopes": server_scopes})
    c.Spawner.environment.update(
        {"VPNLAB_GRADER_URL": f"http://127.0.0.1:{GRADER_PORT}/services/vpnlab-grader/"}
    )
