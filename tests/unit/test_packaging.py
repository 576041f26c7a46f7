"""environment.yml (conda) lists exactly the Python dependencies of pyproject.toml."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[2]


def normalise(requirement: str) -> str:
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement.strip()).groups()
    return name.lower().replace("_", "-") + rest.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {normalise(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {normalise(r) for r in extra}
    conda = (ROOT / "environment.yml").read_text()
    pip_section = conda.split("- pip:", 1)[1]
    listed = {normalise(line) for line in re.findall(r"^\s{6}- (.+)$", pip_section, re.M)}
    assert listed - {"-e."} == wanted
    python = re.search(r"^\s+- python(.*)$", conda, re.M).group(1)
    assert python.replace(",", "") == project["requires-python"].replace(",", "")
