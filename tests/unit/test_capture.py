"""The captures (vpnlab/instruments/capture.py) without root: the committed reference captures,
their stacks and byte math, keys for tshark, ``vpnlab capture``. The decoders: test_decode.py.

Reading a capture file with tshark works as any user; only capturing needs root (tests/lab).
"""

from __future__ import annotations

import os
import re

import pytest

from vpnlab import cli
from vpnlab.instruments import capture, decode
from vpnlab.instruments.capture import CaptureError
from vpnlab.wire.ciphers import make_format

from .helpers import CAPTURES, needs_tshark


def readme_rows() -> list[tuple[str, str | None, dict[str, int]]]:
    """(capture, keys file or None, {stack: packets}) for each row of the README's table."""
    text = (CAPTURES / "README.md").read_text()
    table = re.search(r"<!-- table -->(.*?)<!-- /table -->", text, re.S).group(1)
    rows = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        stacks = {s: int(n) for s, n in re.findall(r"`([^`]+)` \((\d+)\)", cells[-1])}
        rows.append((names[0], names[1] if len(names) > 1 else None, stacks))
    return rows


ROWS = readme_rows()


def test_README_table_lists_every_reference_capture_and_they_are_small():
    listed = {name for name, _, _ in ROWS}
    files = {p.name for p in CAPTURES.glob("*.pcapng")}
    assert files and listed == files
    for name in files:
        assert (CAPTURES / name).stat().st_size < 16_000, f"{name} is not tiny"
    for cipher in ("plain", "esp-null", "esp-aes-gcm"):
        assert {
            f"{cipher}-{what}-{side}.pcapng"
            for what in ("ping", "ftp")
            for side in ("eth0", "tun0")
        } <= files


@needs_tshark
@pytest.mark.parametrize(
    "name,keys,expected", ROWS, ids=[f"{n}+keys" if k else n for n, k, _ in ROWS]
)
def test_reference_capture_decodes_to_the_README_stacks(name, keys, expected):
    assert capture.stack_counts(CAPTURES / name, keys and CAPTURES / keys) == expected


@needs_tshark
@pytest.mark.parametrize("cipher", ["plain", "esp-null", "esp-aes-gcm"])
def test_reference_captures_have_the_notes_stacks(cipher):
    eth = set(capture.stacks(CAPTURES / f"{cipher}-ftp-eth0.pcapng"))
    assert eth == {capture.EXTERNAL_STACK}
    tun = set(capture.stacks(CAPTURES / f"{cipher}-ftp-tun0.pcapng"))
    assert capture.TUN_STACK in tun
    assert any(s.startswith("raw:ip:tcp:ftp-data") for s in tun)
    assert all(s.startswith("raw:ip:tcp") for s in tun)


@needs_tshark
def test_plain_format_bogus_SPI_is_the_first_bytes_of_the_inner_IPv4_header():
    from scapy.all import rdpcap

    inner = [bytes(p) for p in rdpcap(str(CAPTURES / "plain-ping-tun0.pcapng"))]
    outer = capture.fields(CAPTURES / "plain-ping-eth0.pcapng", ["esp.spi", "esp.sequence"])
    assert len(inner) == len(outer) == 6
    for packet, (spi, seq) in zip(inner, outer, strict=True):
        assert int(spi, 16) == int.from_bytes(packet[0:4], "big")
        assert int(seq) == int.from_bytes(packet[4:8], "big")
        assert spi == "0x45000054"  # IPv4, header 20 bytes, total length 84: an echo


@needs_tshark
@pytest.mark.parametrize("cipher,overhead", [("plain", 42), ("esp-null", 70), ("esp-aes-gcm", 78)])
def test_tunnel_overhead_of_a_ping(cipher, overhead):
    """Outer frame minus inner packet: Ethernet 14 + IPv4 20 + UDP 8, plus what ESP adds."""
    eth = decode.decode(CAPTURES / f"{cipher}-ping-eth0.pcapng")
    tun = decode.decode(CAPTURES / f"{cipher}-ping-tun0.pcapng")
    sizes = {decode.tunnel_overhead(o.length, i.length) for o, i in zip(eth, tun, strict=True)}
    assert sizes == {overhead}
    esp_bytes = overhead - 42
    limit = make_format(cipher, b"k" * 32).overhead_bytes
    assert esp_bytes <= limit
    assert [o.layer for o in decode.layer_overhead(eth[0])] == ["eth", "ip", "udp", "esp"]


@needs_tshark
@pytest.mark.parametrize("cipher", ["esp-null", "esp-aes-gcm"])
def test_real_ESP_has_one_SPI_per_direction_and_counting_sequence_numbers(cipher):
    rows = capture.fields(
        CAPTURES / f"{cipher}-ftp-eth0.pcapng", ["ip.src", "esp.spi", "esp.sequence"]
    )
    by_spi: dict[str, list[int]] = {}
    sources: dict[str, set[str]] = {}
    for src, spi, seq in rows:
        by_spi.setdefault(spi, []).append(int(seq))
        sources.setdefault(spi, set()).add(src)
    assert len(by_spi) == 2 and all(len(s) == 1 for s in sources.values())
    for seqs in by_spi.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not any(spi.startswith("0x4500") for spi in by_spi)


@needs_tshark
@pytest.mark.parametrize("cipher", ["esp-null", "esp-aes-gcm"])
def test_reference_ESP_decrypts_with_its_published_keys_and_every_ICV_checks(cipher):
    keys = CAPTURES / f"{cipher}.esp_sa"
    path = CAPTURES / f"{cipher}-ftp-eth0.pcapng"
    rows = capture.fields(path, ["esp.icv_good", "ip.src", "ftp.request.command"], keys)
    assert {row[0] for row in rows} <= capture.TSHARK_TRUE
    assert all(row[1].split(",")[1].startswith("10.8.0.") for row in rows)  # inner addresses
    assert {"USER", "PASS", "STOR", "RETR", "QUIT"} <= {row[2] for row in rows}


# --- keys and decryption on synthetic input ------------------------------------------------------


def test_load_keys_reads_rows_files_and_static_key_files(tmp_path):
    from vpnlab.wire.esp import generate_static_keys

    rows = tmp_path / "esp_sa"
    rows.write_text('# comment\n\n"IPv4","*","*","0x00000101","NULL","","NULL",""\n')
    assert capture.load_keys(rows) == ['"IPv4","*","*","0x00000101","NULL","","NULL",""']
    assert capture.load_keys(None) == [] and capture.tshark_options(None) == []
    static = tmp_path / "keys.json"
    static.write_text(generate_static_keys("esp-aes-gcm", os.urandom).to_json())
    assert len(capture.load_keys(static)) == 2
    opts = capture.tshark_options(static)
    assert "esp.enable_encryption_decode:TRUE" in opts and opts.count("-o") == 4
    with pytest.raises(CaptureError):
        capture.load_keys(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(CaptureError, match=r"^cannot read keys .*/binary: not text$"):
        capture.load_keys(binary)


@needs_tshark
@pytest.mark.parametrize("cipher,header", [("esp-null", 8), ("esp-aes-gcm", 16)])
def test_tshark_decrypts_vpnlab_ESP_with_exported_rows(tmp_path, cipher, header):
    """Decryption plumbing: vpnlab seals, tshark opens with esp_sa rows, the ICV is good."""
    from scapy.all import ICMP, IP, UDP, Ether, Raw, wrpcap

    from vpnlab.wire.esp import esp_sa_rows, generate_static_keys

    keys = generate_static_keys(cipher, os.urandom)
    inner = bytes(IP(src="10.8.0.2", dst="203.0.113.10") / ICMP() / Raw(b"x" * 56))
    outer = Ether() / IP(src="192.0.2.2", dst="198.51.100.2") / UDP(sport=4500, dport=4500)
    path = tmp_path / "esp.pcap"
    wrpcap(str(path), [outer / Raw(keys.client().protection.seal(inner))])
    rows = esp_sa_rows(keys.server())
    assert capture.stacks(path) == [capture.EXTERNAL_STACK]
    assert capture.stacks(path, rows) == [capture.EXTERNAL_STACK + ":ip:icmp:data"]
    [pkt] = decode.decode(path, rows)
    assert {f.name: f.value for f in pkt.layer("esp").fields}["esp.icv_good"] in capture.TSHARK_TRUE
    esp = next(o for o in decode.layer_overhead(pkt) if o.layer == "esp")
    assert (esp.header_bytes, esp.trailer_bytes) == (header, 20)  # pad 2 + 2 + ICV 16


# --- the command line ----------------------------------------------------------------------------


@needs_tshark
def test_cli_decode_prints_stacks_and_overhead(capsys):
    assert (
        cli.main(["capture", "decode", str(CAPTURES / "plain-ping-eth0.pcapng"), "--overhead"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count(capture.EXTERNAL_STACK) == 6 and "esp 84+0" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["capture", "decode", "/nonexistent.pcapng"],
        ["capture", "decode"],
        ["capture", "r1", "eth0"],
        ["capture", "--prefix", "vnotalab-", "r1", "eth0", "-w", "/tmp/x.pcapng"],
        ["capture", "--count", "0", "r1", "eth0", "-w", "/tmp/x.pcapng"],
    ],
)
def test_cli_errors_are_one_line(capsys, argv):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vpnlab capture: error: ") and err.count("\n") == 1


def test_a_missing_tshark_or_capture_is_named_in_one_line(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    reference = CAPTURES / "plain-ping-eth0.pcapng"
    with pytest.raises(CaptureError, match=r"^no capture file /nonexistent\.pcapng$"):
        capture.stacks("/nonexistent.pcapng")
    monkeypatch.setenv("PATH", str(empty))  # a machine without Wireshark's tools
    with pytest.raises(CaptureError, match=r"^tshark not found: apt-get install tshark$"):
        capture.stacks(reference)
