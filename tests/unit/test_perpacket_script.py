"""``scripts/perpacket.py``: the in-process benchmark of the server's per-packet cost (issue 29
item 2) runs the real select loop and prints every row for each code tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", [[], ["--pause", "0.001"]], ids=["cpu", "after-a-pause"])
def test_perpacket_prints_every_row_for_each_tree(mode: list[str]) -> None:
    command = [sys.executable, str(ROOT / "scripts" / "perpacket.py"), str(ROOT), str(ROOT)]
    command += ["--rounds", "1", "--seconds", "0.02", "--cipher", "esp-null", *mode]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert names == ["seal", "open", "core out", "core in", "loop out", "loop in", "loop floor"]
    for row in rows:
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == 2
        assert all(float(cell.split()[0]) > 0 for cell in cells), row
