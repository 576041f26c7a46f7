"""vpnlab.lab without root: the environment check comes first, as one clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vpnlab import lab
from vpnlab.core.errors import LabError
from vpnlab.lab import nodes


def test_not_root_or_missing_tools_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        lab.status("vpnlab-")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(nodes.shutil, "which", lambda tool: None if tool == "ip" else "/x")
    with pytest.raises(
        LabError, match="missing tools: ip: install them with .sudo apt-get install iproute2."
    ):
        lab.up("vpnlab-")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is Python 3.11's")
def test_python_argv_never_imports_from_the_folder_it_is_started_in(tmp_path):
    """Root starting a lab in a folder others can write: a ``vpnlab/`` planted there is not
    what runs (``python -m`` and ``-c`` put the current folder first on the import path)."""
    marker = tmp_path / "planted-ran"
    (tmp_path / "vpnlab").mkdir()
    for name in ("__init__.py", "__main__.py"):
        (tmp_path / "vpnlab" / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    started = subprocess.run(
        nodes.python_argv("-m", "vpnlab", "--help"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0 and "namespace lab" in started.stdout
    assert not marker.exists()
    on_path = "import os, sys; print(any(p in ('', os.getcwd()) for p in sys.path))"
    for argv, expected in ((nodes.python_argv("-c", on_path), "False"),
                           ([sys.executable, "-c", on_path], "True")):  # fmt: skip
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == expected, argv
