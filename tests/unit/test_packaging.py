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
    "vpnlab.client",
    "vpnlab.server",
    "vpnlab.tunnel",
    "vpnlab.fast.loop",
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
    assert extras["test"] == ["vpnlab[course,hub,dev]"]  # scripts/test.sh's install
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


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git (the checkout's files)")
def test_pip_install_without_extras_gives_working_daemons(tmp_path):
    """``pip install <checkout>`` (no extras) in a fresh venv: the daemons' help, key generation
    and every daemon module import, and none of the course's packages is installed. pip takes
    the wheels from its cache when it has them (scripts/setup.sh filled it), else from PyPI."""
    checkout = clean_checkout(tmp_path / "vpnlab")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(checkout)],
        tmp_path,
        PIP_TIMEOUT_S,
    )
    work = tmp_path / "elsewhere"  # not the checkout: the installed package is what runs
    work.mkdir()
    missing = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    assert run([python, "-c", missing, *COURSE_ONLY], work).stdout.strip() == "[]"
    vpnlab = [python, "-m", "vpnlab"]
    assert "SetRouting(0)" in run([*vpnlab, "server", "--help"], work).stdout
    assert "SetRouting(1)" in run([*vpnlab, "client", "--help"], work).stdout
    keys = work / "keys"
    run([*vpnlab, "keys", "server", str(keys)], work)
    add = ["add-peer", str(keys), "alice", "--address", "10.8.0.2/24", "--endpoint", "198.51.100.2"]
    run([*vpnlab, "keys", *add], work)
    run([*vpnlab, "keys", "psk", str(work / "psk")], work)
    assert {"server.key", "peers.toml", "alice.conf"} <= {p.name for p in keys.iterdir()}
    assert "alice" in run([*vpnlab, "keys", "peers", str(keys)], work).stdout
    assert (work / "psk").stat().st_mode & 0o777 == 0o600
    imports = "; ".join(f"import {m}" for m in DAEMON_MODULES)
    check = f"{imports}; import sys; print(sorted(set(sys.argv[1:]) & set(sys.modules)))"
    assert run([python, "-c", check, *COURSE_ONLY], work).stdout.strip() == "[]"
