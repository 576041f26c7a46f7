"""The scripts without root or a lab: an option they do not have, or one argument too many, is
their usage line and nothing else (no folder named like the option, no install first)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["docs.sh", "--bogus"], "[vpnlab] error: usage: scripts/docs.sh [--strict] [OUT]"),
        (
            ["docs.sh", "--strict", "a", "b"],
            "[vpnlab] error: usage: scripts/docs.sh [--strict] [OUT]",
        ),
        (["student-edition.sh", "--bogus"], "usage: scripts/student-edition.sh [OUT]"),
        (["student-edition.sh", "a", "b"], "usage: scripts/student-edition.sh [OUT]"),
    ],
)
def test_a_script_given_what_it_does_not_take_prints_its_usage(tmp_path, argv, usage):
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / argv[0]), *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [usage]
    assert list(tmp_path.iterdir()) == []
