"""The captures, fresh from the lab: the notes' two stacks in every cipher mode, FTP both ways.

One lab for the module (``shared_lab``); for each cipher the VPN is restarted in it, and one
traffic run (passive FTP, active FTP, a ping in the tunnel) is captured at once on r1 eth0,
r1 tun0 and r2 eth0. The tests then only read those files.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vpnlab import lab
from vpnlab.core.errors import VpnlabError
from vpnlab.instruments import capture, ftp
from vpnlab.wire.ciphers import CIPHERS, make_format

from .helpers import CLIENT_GATEWAY, CLIENT_IP, SERVER_IP, SERVER_TUNNEL_IP

pytestmark = pytest.mark.lab

ENDPOINTS = {CLIENT_IP, SERVER_IP}
TUN_STACKS = {
    "raw:ip:tcp",
    "raw:ip:tcp:ftp",
    "raw:ip:tcp:ftp-data",
    "raw:ip:icmp:data",
    "raw:ip:tcp:ftp-data:data-text-lines",
}  # the last: the anonymous get of a text


def not_implemented(cipher: str) -> str | None:
    """Why ``cipher`` cannot run yet, or None if ``make_format`` accepts it."""
    try:
        make_format(cipher, b"k" * 32)
    except (VpnlabError, ImportError, NotImplementedError) as exc:
        return f"{cipher} not implemented yet: {exc}"
    return None


@dataclass
class Run:
    cipher: str
    files: dict[str, Path]
    transfers: dict[str, dict]
    keys: list[str] | None


@pytest.fixture(scope="module", params=CIPHERS)
def run(request, shared_lab, tmp_path_factory) -> Run:
    cipher = request.param
    reason = not_implemented(cipher)
    if reason:
        pytest.skip(reason)
    prefix = shared_lab.prefix
    lab.start_vpn(prefix, cipher)
    out = tmp_path_factory.mktemp(cipher)
    places = {"r1-eth0": ("r1", "eth0"), "r1-tun0": ("r1", "tun0"), "r2-eth0": ("r2", "eth0")}
    files = {name: out / f"{name}.pcapng" for name in places}
    transfers = {}
    with ftp.lab_server(prefix) as server:
        (server.root / "motd.txt").write_text("anonymous can read this\n")
        caps = [
            capture.start_capture(prefix, node, itf, files[name], count=500, duration_s=30)
            for name, (node, itf) in places.items()
        ]
        try:
            for mode in ftp.MODES:
                transfers[mode] = ftp.lab_transfer(prefix, mode=mode, size_bytes=3000)
            argv = [sys.executable, "-m", "vpnlab", "ftp", "get", "--name", "motd.txt"]
            done = lab.exec_in(prefix, "r1", argv, capture_output=True, text=True, timeout=20)
            transfers["anonymous"] = json.loads(done.stdout or "{}")
            ping = ["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER_TUNNEL_IP]
            lab.exec_in(prefix, "r1", ping, check=True, capture_output=True, timeout=10)
        finally:
            for cap in caps:
                cap.stop()
    keys = capture.lab_keys(prefix) or None  # while the session is up: it goes with it
    yield Run(cipher, files, transfers, keys)
    lab.stop_vpn(prefix)


def external_stacks(path: Path, keys: list[str] | None = None) -> list[str]:
    """Stacks on an external interface, without ARP and ICMPv6 ND/MLD (the kernel's neighbour
    checks, IPv4's and IPv6's: the lab is dual stack)."""
    return [s for s in capture.stacks(path, keys) if s not in capture.LINK_CHATTER]


def test_external_interface_shows_the_notes_stack(run):
    stacks = external_stacks(run.files["r1-eth0"])
    assert len(stacks) > 40
    assert set(stacks) == {capture.EXTERNAL_STACK}


def test_tun0_shows_ftp_and_ftp_data(run):
    stacks = set(capture.stacks(run.files["r1-tun0"]))
    assert {"raw:ip:tcp:ftp", "raw:ip:tcp:ftp-data", "raw:ip:icmp:data"} <= stacks
    assert stacks <= TUN_STACKS


@pytest.mark.parametrize("side", ["r1-eth0", "r2-eth0"])
def test_only_udp_4500_between_the_endpoints_on_the_external_side(run, side):
    names = ["eth.type", "ip.proto", "ip.src", "ip.dst", "udp.srcport", "udp.dstport"]
    rows = capture.fields(run.files[side], [*names, "icmpv6.type"])
    ip_rows = [row[:-1] for row in rows if row[0] == "0x0800"]
    assert len(ip_rows) > 40
    assert all(row[0] in ("0x0800", "0x0806") or row[-1] for row in rows)  # IPv4, ARP, ICMPv6
    for _, proto, src, dst, sport, dport in ip_rows:
        assert (proto, sport, dport) == ("17", "4500", "4500")
        assert {src, dst} == ENDPOINTS


def test_ftp_checksums_match_in_passive_and_active_mode(run):
    for mode in ftp.MODES:
        result = run.transfers[mode]
        assert result["ok"] and result["bytes"] == 3000
        assert result["sha256_sent"] == result["sha256_received"]
    anonymous = run.transfers["anonymous"]
    assert anonymous["bytes"] == 24
    assert anonymous["sha256"] == ftp.sha256(b"anonymous can read this\n")


def test_each_ping_crosses_eth0_wrapped_in_the_expected_bytes(run):
    tun = [int(row[0]) for row in capture.fields(run.files["r1-tun0"], ["frame.len"], None, "icmp")]
    assert tun == [84] * 6
    eth = [int(row[0]) for row in capture.fields(run.files["r1-eth0"], ["frame.len"])]
    assert eth.count(84 + _wrap(run.cipher, 84)) >= 6


def _wrap(cipher: str, inner: int) -> int:
    """Bytes around one inner packet: Ethernet + IPv4 + UDP, then ESP's own (RFC 4303)."""
    if cipher == "plain":
        return 42
    iv = 8 if cipher == "esp-aes-gcm" else 0
    pad = -(inner + 2) % 4
    return 42 + 8 + iv + pad + 2 + 16


def test_esp_capture_decrypts_to_the_inner_icmp_and_tcp(run):
    if run.cipher == "plain":
        # nothing to decrypt: tshark's "SPI" is the start of the inner IPv4 header (0x45...),
        # except for the text control messages ("VPNL")
        spis = {row[0] for row in capture.fields(run.files["r1-eth0"], ["esp.spi"]) if row[0]}
        assert spis and all(spi.startswith(("0x45", "0x56504e4c")) for spi in spis), spis
        return
    if not run.keys:
        pytest.fail("the lab exported no esp_sa rows for the ESP session")
    assert set(external_stacks(run.files["r1-eth0"])) == {capture.EXTERNAL_STACK}
    stacks = set(external_stacks(run.files["r1-eth0"], run.keys))
    assert capture.EXTERNAL_STACK + ":ip:icmp:data" in stacks
    assert capture.EXTERNAL_STACK + ":ip:tcp:ftp" in stacks
    good = capture.fields(run.files["r1-eth0"], ["esp.icv_good"], run.keys, "esp")
    assert good and {row[0] for row in good} <= capture.TSHARK_TRUE


def test_a_capture_into_a_home_that_root_enters_by_override_only(shared_lab, tmp_path):
    """``sudo`` from a checkout in a student's 0700 home: dumpcap, as root, keeps only the
    capabilities to capture and may not enter it (it said "Permission denied"); vpnlab opens
    the file and dumpcap writes to it. tshark reads it back (as nobody, from its stdin)."""
    home = tmp_path / "student"
    home.mkdir(mode=0o700)
    os.chown(home, capture.TSHARK_USER, capture.TSHARK_USER)
    path = home / "work" / "r1-eth0.pcapng"
    ping = ["ping", "-c", "2", "-i", "0.2", "-W", "1", CLIENT_GATEWAY]
    with capture.start_capture(shared_lab.prefix, "r1", "eth0", path, 4, 5, "icmp") as cap:
        lab.exec_in(shared_lab.prefix, "r1", ping, check=True, capture_output=True, timeout=10)
    assert cap.path == path and path.stat().st_mode & 0o777 == 0o644
    assert capture.stacks(path) == ["eth:ethertype:ip:icmp:data"] * 4  # 2 requests, 2 replies


def test_a_capture_nobody_stops_leaves_no_file_but_its_own(shared_lab, tmp_path):
    """A notebook cell that fails between start and stop: dumpcap ends by itself (its count)
    and nothing of it is left but the capture. Its stderr is a file without a name (it was a
    named temporary log, left in /tmp whenever nobody called stop or wait)."""
    path = tmp_path / "r1-eth0.pcapng"
    cap = capture.start_capture(shared_lab.prefix, "r1", "eth0", path, 2, 5, "icmp")
    stderr = os.readlink(f"/proc/{cap.process.pid}/fd/2")
    assert stderr.endswith("(deleted)"), stderr  # O_TMPFILE: never had a name
    ping = ["ping", "-c", "1", "-W", "1", CLIENT_GATEWAY]
    lab.exec_in(shared_lab.prefix, "r1", ping, check=True, capture_output=True, timeout=10)
    assert cap.process.wait(10) == 0 and not cap.running
    assert capture.stacks(path) == ["eth:ethertype:ip:icmp:data"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1-eth0.pcapng"]
    cap.stop()  # late, after dumpcap ended: still the file, and its log closed
    assert cap.log.closed


def test_capture_errors_are_one_line(shared_lab, tmp_path):
    with pytest.raises(capture.CaptureError, match="nope0"):
        capture.start_capture(shared_lab.prefix, "r1", "nope0", tmp_path / "x.pcapng")
    assert not (tmp_path / "x.pcapng").exists()  # the file it opened for dumpcap is gone
    with pytest.raises(capture.CaptureError, match="cannot capture into .*: Is a directory"):
        capture.start_capture(shared_lab.prefix, "r1", "eth0", tmp_path)  # -w FOLDER
    assert tmp_path.is_dir()
    with pytest.raises(capture.CaptureError, match="does not exist"):
        capture.start_capture(shared_lab.prefix, "r9", "eth0", tmp_path / "x.pcapng")
    wrong = ftp.lab_server(shared_lab.prefix, "r2", "10.8.0.99")  # not r2's: bind fails
    with pytest.raises(VpnlabError, match="did not start"), wrong:
        pass
