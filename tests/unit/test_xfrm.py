"""The kernel data plane's userspace half (``vpnlab/shell/xfrm.py``) and its one-line refusals.

The xfrm states themselves need a kernel with ESP: ``tests/lab/test_kernel_vm.py`` runs them
in Debian's kernel in a VM.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from vpnlab.core.constants import NAT_KEEPALIVE
from vpnlab.core.errors import LocalProtocolError
from vpnlab.shell.xfrm import KernelHeld
from vpnlab.wire.crypto import SaKeys


@pytest.mark.parametrize(("cipher", "key_bytes"), [("esp-aes-gcm", 20), ("esp-null", 32)])
def test_KernelHeld_seals_nothing_and_keeps_alive_without_esp(cipher, key_bytes):
    """After the hand-off nothing sealed in userspace may use the kernel's SA (GCM nonces)."""
    held = KernelHeld(
        cipher, SaKeys(0x1001, b"\x01" * key_bytes), SaKeys(0x1002, b"\x02" * key_bytes)
    )
    with pytest.raises(LocalProtocolError, match="the kernel seals"):
        held.seal(b"\x45" + bytes(19))
    with pytest.raises(LocalProtocolError):
        held.seal_frame(bytes(60))
    assert held.seal_keepalive() == NAT_KEEPALIVE  # RFC 3948: the kernel eats it silently
    assert held.seal_bye() == NAT_KEEPALIVE


def test_kernel_dataplane_refuses_plain_in_one_line(tmp_path):
    psk = tmp_path / "psk"
    psk.write_text("11" * 32 + "\n")
    psk.chmod(0o600)
    argv = [sys.executable, "-m", "vpnlab", "client", "--server", "192.0.2.9"]
    argv += ["--psk-file", str(psk), "--cipher", "plain", "--kernel-dataplane"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "vpnlab client: error: --kernel-dataplane needs ESP: --cipher esp-null or esp-aes-gcm"
    ]
