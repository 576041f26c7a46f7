"""Key files (vpnlab/keys.py): the pre-shared key is created private."""

from __future__ import annotations

import stat

from vpnlab import keys


def test_psk_is_created_0600(tmp_path):
    path = tmp_path / "psk"
    keys.new_psk(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
