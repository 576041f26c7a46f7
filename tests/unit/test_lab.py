"""vpnlab.lab without root: the environment check comes first, as one clear error."""

from __future__ import annotations

import os

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
