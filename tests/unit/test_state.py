"""The lab's state (vpnlab/lab/state.py) without root: which prefixes are allowed."""

from __future__ import annotations

import pytest

from vpnlab.core.errors import LabError
from vpnlab.lab import state


@pytest.mark.parametrize("bad", ["", "vpnlab", "Vpn-", "a-b-", "x" * 30 + "-", "../x-"])
def test_check_prefix_rejects(bad):
    with pytest.raises(LabError, match="bad prefix"):
        state.check_prefix(bad)
