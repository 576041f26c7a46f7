"""The kernel data plane's userspace half (``vpnlab/shell/xfrm.py``) and its one-line refusals.

The xfrm states themselves need a kernel with ESP: ``tests/lab/test_kernel_vm.py`` runs them
in Debian's kernel in a VM.
"""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address

import pytest

from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import NAT_KEEPALIVE
from vpnlab.core.errors import LocalProtocolError
from vpnlab.core.server_core import ServerCore
from vpnlab.shell.xfrm import KernelDataplane, KernelHeld, reqid_of
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.crypto import SaKeys, algorithm
from vpnlab.wire.esp import EspSession, KernelPeerSession

from .helpers import CLIENT, SERVER, SERVER_TUNNEL_ADDRESS, receive_one, seeded_random


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


def esp_session(spi: int, cipher: str = "esp-aes-gcm") -> EspSession:
    size = algorithm(cipher).key_bytes
    return EspSession(cipher, SaKeys(spi, b"\x01" * size), SaKeys(spi + 1, b"\x02" * size))


def test_plan_of_a_servers_first_hand_off_its_states_policies_and_reqid():
    """One ``ip -batch``: both states (the outbound continuing userspace's sequence numbers),
    then out, in and fwd policies for the client's tunnel address, with the session's reqid."""
    dataplane = KernelDataplane(
        IPv4Address("10.8.0.2"), "server", ("203.0.113.130", 4500), ("203.0.113.129", 4501)
    )
    esp = esp_session(0x1000)
    esp.seal(b"\x45" + bytes(19))  # userspace sealed one: the kernel goes on from 2
    lines = dataplane.plan(esp)
    assert dataplane.reqid == reqid_of(IPv4Address("10.8.0.2")) == 0x0A080002
    out, inbound, *policies = lines
    assert out.startswith(
        "xfrm state add src 203.0.113.130 dst 203.0.113.129 proto esp spi 0x00001000 "
        "reqid 168296450 mode tunnel "
    )
    assert out.endswith("replay-oseq 1 encap espinudp 4500 4501 0.0.0.0")
    assert '"rfc4106(gcm(aes))"' in out
    assert "spi 0x00001001" in inbound and "replay-window 64 encap espinudp 4501 4500" in inbound
    tmpl_out = "tmpl src 203.0.113.130 dst 203.0.113.129 proto esp reqid 168296450 mode tunnel"
    tmpl_in = "tmpl src 203.0.113.129 dst 203.0.113.130 proto esp reqid 168296450 mode tunnel"
    assert policies == [
        f"xfrm policy update src 0.0.0.0/0 dst 10.8.0.2/32 dir out {tmpl_out}",
        f"xfrm policy update src 10.8.0.2/32 dst 0.0.0.0/0 dir in {tmpl_in}",
        f"xfrm policy update src 10.8.0.2/32 dst 0.0.0.0/0 dir fwd {tmpl_in}",
    ]


def test_plan_of_a_rekey_and_a_move():
    """A rekey: the new states only, and those of two handshakes ago deleted; a move (after an
    authentic Hello from a new address): the policies again, for the new address."""
    peer = ("192.0.2.2", 4500)
    dataplane = KernelDataplane(IPv4Address("10.8.0.7"), "client", ("198.51.100.2", 4500), peer)
    dataplane.policy_peer = (dataplane.local, peer)  # as after the first hand-off
    dataplane.states = [
        ("198.51.100.2", "192.0.2.2", 0x1010),
        ("192.0.2.2", "198.51.100.2", 0x1011),
    ]
    assert [line.split()[:3] for line in dataplane.plan(esp_session(0x1020))] == [
        ["xfrm", "state", "add"],
        ["xfrm", "state", "add"],
    ]
    dataplane.states += [
        ("198.51.100.2", "192.0.2.2", 0x1020),
        ("192.0.2.2", "198.51.100.2", 0x1021),
    ]
    lines = dataplane.plan(esp_session(0x1030))
    assert lines[2:] == [
        "xfrm state delete src 198.51.100.2 dst 192.0.2.2 proto esp spi 0x00001010",
        "xfrm state delete src 192.0.2.2 dst 198.51.100.2 proto esp spi 0x00001011",
    ]
    dataplane.peer = ("192.0.2.3", 4600)
    moved = dataplane.plan(esp_session(0x1040))
    assert "dst 192.0.2.3 proto esp spi 0x00001040" in moved[0]
    assert "encap espinudp 4500 4600" in moved[0]
    assert [line for line in moved if "policy" in line] == [
        "xfrm policy update src 10.8.0.7/32 dst 0.0.0.0/0 dir out tmpl src 198.51.100.2 "
        "dst 192.0.2.3 proto esp reqid 168296455 mode tunnel",
        "xfrm policy update src 0.0.0.0/0 dst 10.8.0.7/32 dir in tmpl src 192.0.2.3 "
        "dst 198.51.100.2 proto esp reqid 168296455 mode tunnel",
    ]


def test_esp_null_state_passes_the_empty_key_quoted():
    dataplane = KernelDataplane(
        IPv4Address("10.8.0.2"), "client", ("192.0.2.1", 4500), ("192.0.2.2", 4500)
    )
    out = dataplane.plan(esp_session(0x100, "esp-null"))[0]
    assert ' "enc" "cipher_null" "" "auth-trunc" "hmac(sha256)" "0x' in out


def server_argv(tmp_path, *extra: str) -> list[str]:
    psk = tmp_path / "psk"
    psk.write_text("11" * 32 + "\n")
    psk.chmod(0o600)
    return [sys.executable, "-m", "vpnlab", "server", "--psk-file", str(psk), *extra]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (("--cipher", "plain"), "--kernel-dataplane needs ESP: --cipher esp-null or esp-aes-gcm"),
        (("--mode", "tap"), "--kernel-dataplane carries IP packets in UDP over IPv4 only"),
        (("--transport", "tcp"), "--kernel-dataplane carries IP packets in UDP over IPv4 only"),
        (("--listen", "::"), "--kernel-dataplane carries IP packets in UDP over IPv4 only"),
    ],
)
def test_server_kernel_dataplane_refuses_in_one_line(tmp_path, extra, error):
    """Refused before anything is opened (the kernel's ESP probe comes after these)."""
    argv = server_argv(tmp_path, "--kernel-dataplane", *extra)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"vpnlab server: error: {error}"]


def test_server_kernel_dataplane_refuses_static_keys_in_one_line(tmp_path):
    keys = tmp_path / "keys.json"
    make = [sys.executable, "-m", "vpnlab", "keys", "static", str(keys), "--cipher", "esp-null"]
    subprocess.run(make, check=True, capture_output=True)
    argv = [sys.executable, "-m", "vpnlab", "server", "--static-keys", str(keys)]
    done = subprocess.run([*argv, "--kernel-dataplane"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vpnlab server: error: --kernel-dataplane needs the handshake")


def test_kernel_peer_with_a_handshake_keeps_alive_without_esp():
    """``--kernel-peer`` with the PSK handshake (against a ``--kernel-dataplane`` server): the
    sessions are KernelPeerSession, whose keepalive and Bye the kernel eats silently."""
    psk = b"\x11" * 32
    server_format, client_format = make_format("esp-aes-gcm", psk), make_format("esp-aes-gcm", psk)
    client_format.kernel_peer = True  # type: ignore[attr-defined]
    client = ClientCore(SERVER, client_format.client_handshake(seeded_random(2)))
    server = ServerCore(server_format, SERVER_TUNNEL_ADDRESS, seeded_random(1))
    client.connect(0.0)
    ((hello, _),) = client.datagrams_to_send()
    receive_one(server, hello, CLIENT, 0.0)
    ((welcome, _),) = server.datagrams_to_send()
    receive_one(client, welcome, SERVER, 0.0)
    assert isinstance(client.session.protection, KernelPeerSession)
    assert client.session.protection.seal_keepalive() == NAT_KEEPALIVE
    assert not isinstance(server.sessions[CLIENT].protection, KernelPeerSession)


def test_kernel_peer_refuses_plain_in_one_line(tmp_path):
    argv = server_argv(tmp_path, "--cipher", "plain", "--kernel-peer")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "vpnlab server: error: --kernel-peer needs ESP: --cipher esp-null or esp-aes-gcm"
    ]
