"""The package's installs, by user: the base install is the VPN alone, the extras add the rest.

``environment.yml`` (conda) lists exactly the Python dependencies of pyproject.toml; the
``test`` extra is the union of the others; and ``pip install <checkout>`` without extras, in
a fresh venv, gives working daemons with no Jupyter, matplotlib, scapy or pyshark in it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[2]
COURSE_ONLY = ("jupyterlab", "IPython", "matplotlib", "scapy", "pyshark", "nbclient", "jupytext")
"""What the course needs and the VPN must run without."""
DAEMON_MODULES = (
    "vpnlab.cli.daemons",
    "vpnlab.cli.keys",
    "vpnlab.cli.lab",
    "vpnlab.shell.client",
    "vpnlab.shell.server",
    "vpnlab.shell.tunnel",
    "vpnlab.fast.datapath",
    "vpnlab.lab",
    "vpnlab.instruments.whoami",
)
"""The daemons, their command line, the lab and its proof (who-am-I): the base install's job."""
PIP_TIMEOUT_S = 600


def normalise(requirement: str) -> str:
    requirement = requirement.strip().strip("\"'")
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
    return name.lower().replace("_", "-") + rest.replace(" ", "").replace('"', "'")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    meta = project()
    wanted = {normalise(r) for r in meta["dependencies"]}
    for name, extra in meta["optional-dependencies"].items():
        if name != "test":  # vpnlab[course,hub,dev]: the others, by reference
            wanted |= {normalise(r) for r in extra}
    conda = (ROOT / "environment.yml").read_text()
    pip_section = conda.split("- pip:", 1)[1]
    listed = {normalise(line) for line in re.findall(r"^\s{6}- (.+)$", pip_section, re.M)}
    assert listed - {"-e."} == wanted
    python = re.search(r"^\s+- python(.*)$", conda, re.M).group(1)
    assert python.replace(",", "") == meta["requires-python"].replace(",", "")


def test_base_install_is_the_vpn_alone():
    """The course's packages are in extras, never in the base install."""
    meta = project()
    base = {normalise(r).split(">")[0].split(";")[0] for r in meta["dependencies"]}
    assert base == {"pyroute2", "cryptography", "noiseprotocol", "tomli"}
    extras = meta["optional-dependencies"]
    assert extras["test"] == ["vpnlab[course,hub,dev]"]  # the name setup.sh callers used
    assert {"jupyterlab>=4", "matplotlib>=3.6", "pyshark>=0.6", "scapy>=2.6"} <= set(
        extras["course"]
    )


def clean_checkout(target: Path) -> Path:
    """The repository's tracked files (as a clone has them), without build leftovers."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def run(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def base_python(tmp_path_factory) -> str:
    """The python of a fresh venv holding ``pip install <checkout>``, no extras. pip takes the
    wheels from its cache when it has them (scripts/setup.sh filled it), else from PyPI."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to copy the checkout's files")
    tmp = tmp_path_factory.mktemp("base-install")
    checkout = clean_checkout(tmp / "vpnlab")
    venv.create(tmp / "venv", with_pip=True)
    python = str(tmp / "venv" / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(checkout)]
    run(pip, tmp, PIP_TIMEOUT_S)
    return python


def test_pip_install_without_extras_gives_working_daemons(base_python, tmp_path):
    """The daemons' help, key generation and every daemon module's import work in the base
    install, and none of the course's packages is installed or imported. (Run from a folder
    outside the checkout: the installed package is what runs.)"""
    python, work = base_python, tmp_path
    missing = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    assert run([python, "-c", missing, *COURSE_ONLY], work).stdout.strip() == "[]"
    vpnlab = [python, "-m", "vpnlab"]
    assert "SetRouting(0)" in run([*vpnlab, "server", "--help"], work).stdout
    assert "SetRouting(1)" in run([*vpnlab, "client", "--help"], work).stdout
    keys = work / "keys"
    run([*vpnlab, "keys", "server", str(keys)], work)
    add = ["add-peer", str(keys), "alice", "--address", "10.8.0.2/24"]
    run([*vpnlab, "keys", *add, "--endpoint", "198.51.100.2"], work)
    run([*vpnlab, "keys", "psk", str(work / "psk")], work)
    assert {"server.key", "peers.toml", "alice.conf"} <= {p.name for p in keys.iterdir()}
    assert "alice" in run([*vpnlab, "keys", "peers", str(keys)], work).stdout
    assert (work / "psk").stat().st_mode & 0o777 == 0o600
    imports = "; ".join(f"import {m}" for m in DAEMON_MODULES)
    check = f"{imports}; import sys; print(sorted(set(sys.argv[1:]) & set(sys.modules)))"
    assert run([python, "-c", check, *COURSE_ONLY], work).stdout.strip() == "[]"


@pytest.mark.lab
def test_base_install_builds_the_lab_and_proves_it(base_python, tmp_path):
    """What ``scripts/netns-lab.sh`` does (up, verify, down) with the base install alone: the
    daemons, who-am-I, the pings and the routes, IPv4 and IPv6, no Jupyter anywhere."""
    from tests.lab.helpers import assert_gone, fresh_prefix, root_snapshot

    lab = [base_python, "-m", "vpnlab", "lab"]
    prefix = fresh_prefix()
    before = root_snapshot()
    try:
        run([*lab, "up", "--prefix", prefix], tmp_path, 120)
        verify = run([*lab, "verify", "--prefix", prefix], tmp_path, 120).stdout
        assert "verify: all checks passed" in verify, verify
        assert "who-am-I says 198.51.100.2" in verify, verify
        assert "who-am-I over IPv6 says 2001:db8:2::2" in verify, verify
    finally:
        subprocess.run([*lab, "down", "--prefix", prefix], capture_output=True, timeout=60)
    assert_gone(prefix, {}, [])
    assert root_snapshot() == before, "the root namespace changed"
