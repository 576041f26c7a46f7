"""Real ESP on the wire, checked by independent implementations: tshark and the Linux kernel."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.core.constants import PORT
from vpnlab.instruments.capture import TSHARK_TRUE
from vpnlab.wire.crypto import algorithm
from vpnlab.wire.esp import load_static_keys

from .helpers import CLIENT_IP, CLIENT_TUNNEL_IP, SERVER_IP, SERVER_TUNNEL_IP, WEB_IP, LabHandle

pytestmark = pytest.mark.lab

ESP_CIPHERS = ["esp-null", "esp-aes-gcm"]


def capture_ping(handle, node: str, pcap: Path, count: int = 3) -> None:
    """dumpcap on ``node``'s eth0 (inside its namespace) while r1 pings web."""
    dumpcap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            handle.ns(node),
            "dumpcap",
            "-i",
            "eth0",
            "-f",
            f"udp port {PORT}",
            "-c",
            "100",
            "-a",
            "duration:15",
            "-w",
            str(pcap),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in dumpcap.stderr:  # wait until it says it is capturing...
        if "Capturing on" in line:
            break
    time.sleep(0.5)  # ... and a moment more: it says so just before the socket is attached
    ping = handle.run("r1", "ping", "-c", str(count), "-i", "0.2", "-W", "2", WEB_IP)
    assert ping.returncode == 0, ping.stdout
    time.sleep(0.3)
    dumpcap.send_signal(signal.SIGINT)  # dumpcap closes the file cleanly on SIGINT
    dumpcap.wait(timeout=20)


def tshark_rows(pcap: Path, rows: list[str], *fields: str) -> list[list[str]]:
    options = ["-o", "esp.enable_encryption_decode:TRUE"]
    options += ["-o", "esp.enable_authentication_check:TRUE"]
    for row in rows:
        options += ["-o", f"uat:esp_sa:{row}"]
    argv = ["tshark", "-n", "-r", str(pcap), *options, "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("vpn_lab", ESP_CIPHERS, indirect=True)
def test_tshark_decrypts_live_tunnel_with_exported_keys(vpn_lab, tmp_path):
    """The esp_sa export lets stock tshark decrypt and authenticate every datagram."""
    pcap = tmp_path / "r2-eth0.pcapng"
    capture_ping(vpn_lab, "r2", pcap)
    text = subprocess.run(
        [sys.executable, "-m", "vpnlab", "keys", "export", "--prefix", vpn_lab.prefix],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rows) == 2
    decoded = tshark_rows(pcap, rows, "frame.protocols", "esp.spi", "esp.icv_good", "esp.pad_len")
    pings = [stack for stack, *_ in decoded if stack.endswith("esp:ip:icmp:data")]
    assert len(pings) == 6, decoded  # 3 requests and 3 replies, decrypted to the inner ICMP
    for stack, spi, icv_good, _ in decoded:  # keepalives (next header 59) may be there too
        assert stack.startswith("eth:ethertype:ip:udp:udpencap:esp")
        assert int(spi, 16) != 0
        assert icv_good in TSHARK_TRUE
    without_keys = tshark_rows(pcap, [], "frame.protocols")
    expected = "eth:ethertype:ip:udp:udpencap:esp"
    if vpn_lab.info["cipher"] == "esp-aes-gcm":
        assert {stack for (stack,) in without_keys} == {expected}  # opaque without the keys


@pytest.mark.parametrize("cipher", ESP_CIPHERS)
def test_static_keys_between_two_vpnlab_daemons(prefix, cipher):
    """Static-key mode: no handshake, SPIs and keys from one file on both sides."""
    lab.up(prefix=prefix, vpn=False)
    lab.start_vpn(prefix, cipher, static_keys=True)
    result = lab.verify(prefix)
    assert result["ok"] and result["vpn"]
    assert any(c["detail"] == f"you are {SERVER_IP}" for c in result["checks"])
    server_log = Path(lab.status(prefix)["daemons"]["server"]["log"]).read_text()
    assert f"static keys, {cipher}" in server_log


# --- the Linux kernel's own ESP as the peer -----------------------------------------------------

UDP_ENCAP = 100  # socket option UDP_ENCAP (linux/udp.h)
UDP_ENCAP_ESPINUDP = 2

ENCAP_SOCKET = r"""
import signal, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_UDP, 100, 2)  # UDP_ENCAP = UDP_ENCAP_ESPINUDP
sock.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
signal.pause()
"""


def kernel_has_esp(handle) -> str | None:
    """None if the kernel takes an rfc4106(gcm(aes)) SA with espinudp encap, else why not."""
    probe = handle.run(
        "r2",
        "ip",
        "xfrm",
        "state",
        "add",
        "src",
        "192.0.2.99",  # a probe: no node has it
        "dst",
        SERVER_IP,
        "proto",
        "esp",
        "spi",
        "0x100",
        "mode",
        "tunnel",
        "aead",
        "rfc4106(gcm(aes))",
        "0x" + "11" * 20,
        "128",
        "encap",
        "espinudp",
        str(PORT),
        str(PORT),
        "0.0.0.0",
    )
    if probe.returncode != 0:
        return probe.stderr.strip() or "ip xfrm state add failed"
    handle.run("r2", "ip", "xfrm", "state", "flush")
    return None


def test_static_key_client_against_the_kernels_esp(prefix):
    """vpnlab's static-key client and a kernel xfrm tunnel (encap espinudp) in r2 interoperate."""
    lab.up(prefix=prefix, vpn=False)
    handle = LabHandle(prefix, {})
    why = kernel_has_esp(handle)
    if why is not None:
        pytest.skip(f"this kernel has no ESP (test_kernel_vm.py runs Debian's in a VM): {why}")
    folder = Path(lab.status(prefix)["state_dir"])
    keyfile = folder / "static-keys.json"
    subprocess.run(
        [sys.executable, "-m", "vpnlab", "keys", "static", str(keyfile), "--cipher", "esp-aes-gcm"],
        check=True,
    )
    keys = load_static_keys(keyfile.read_text())
    gcm = algorithm("esp-aes-gcm")
    c2s, s2c = keys.client_to_server, keys.server_to_client
    run = handle.run
    # r2: the tunnel's far end is a dummy interface with the server's tunnel address; the
    # kernel does ESP.
    server_end, client_end = f"{SERVER_TUNNEL_IP}/32", f"{CLIENT_TUNNEL_IP}/32"
    for argv in (
        ["ip", "link", "add", "vti-end", "type", "dummy"],
        ["ip", "addr", "add", server_end, "dev", "vti-end"],
        ["ip", "link", "set", "vti-end", "up"],
        ["ip", "route", "add", client_end, "dev", "eth0", "src", SERVER_TUNNEL_IP],
        [
            "ip",
            "xfrm",
            "state",
            "add",
            "src",
            CLIENT_IP,
            "dst",
            SERVER_IP,
            "proto",
            "esp",
            "spi",
            str(c2s.spi),
            "mode",
            "tunnel",
            *gcm.xfrm_args(c2s.key),
            "encap",
            "espinudp",
            str(PORT),
            str(PORT),
            "0.0.0.0",
        ],
        [
            "ip",
            "xfrm",
            "state",
            "add",
            "src",
            SERVER_IP,
            "dst",
            CLIENT_IP,
            "proto",
            "esp",
            "spi",
            str(s2c.spi),
            "mode",
            "tunnel",
            *gcm.xfrm_args(s2c.key),
            "encap",
            "espinudp",
            str(PORT),
            str(PORT),
            "0.0.0.0",
        ],
        [
            "ip",
            "xfrm",
            "policy",
            "add",
            "src",
            server_end,
            "dst",
            client_end,
            "dir",
            "out",
            "tmpl",
            "src",
            SERVER_IP,
            "dst",
            CLIENT_IP,
            "proto",
            "esp",
            "mode",
            "tunnel",
        ],
        [
            "ip",
            "xfrm",
            "policy",
            "add",
            "src",
            client_end,
            "dst",
            server_end,
            "dir",
            "in",
            "tmpl",
            "src",
            CLIENT_IP,
            "dst",
            SERVER_IP,
            "proto",
            "esp",
            "mode",
            "tunnel",
        ],
    ):
        done = run("r2", *argv)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    encap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            f"{prefix}r2",
            sys.executable,
            "-c",
            ENCAP_SOCKET,
            SERVER_IP,
            str(PORT),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    client = None
    try:
        assert encap.stdout.readline().strip() == "ready"
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                f"{prefix}r1",
                sys.executable,
                "-m",
                "vpnlab",
                "client",
                "--server",
                SERVER_IP,
                "--static-keys",
                str(keyfile),
                "--kernel-peer",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 10
        while run("r1", "ip", "link", "show", "tun0").returncode != 0:
            assert time.monotonic() < deadline and client.poll() is None, "client did not start"
            time.sleep(0.1)
        ping = run("r1", "ping", "-c", "3", "-i", "0.3", "-W", "2", SERVER_TUNNEL_IP)
        assert ping.returncode == 0, ping.stdout
        stats = run("r2", "ip", "-s", "xfrm", "state").stdout
        assert "replay-window" in stats
        time.sleep(7)  # idle past the keepalive (2 s) and the notes' liveness timeout (6 s)
        assert client.poll() is None, "the client gave up on a peer that never sends keepalives"
        errors = dict(
            line.split() for line in run("r2", "cat", "/proc/net/xfrm_stat").stdout.splitlines()
        )
        assert errors["XfrmInStateProtoError"] == "0" and errors["XfrmInStateModeError"] == "0"
    finally:
        for proc in (client, encap):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
