"""Our tshark dissector (vpnlab/instruments/vpnlab.lua) on real handshakes from the real cores.

Without it tshark's udpencap takes the non-ESP marker for IKE and shows a Hello as ``isakmp``;
with it the Hello, the Welcome and the plain control lines are ``vpnlab``, and everything else
(ESP, the NAT-keepalive, the plain format's raw IP) decodes exactly as before, keys included.
"""

from __future__ import annotations

import importlib.resources
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from vpnlab import cli
from vpnlab.core.client_core import ClientCore
from vpnlab.core.constants import NAT_KEEPALIVE, PORT
from vpnlab.core.formats import Peer
from vpnlab.core.server_core import ServerCore
from vpnlab.core.session import State
from vpnlab.instruments import capture, decode
from vpnlab.instruments.capture import CaptureError
from vpnlab.wire import plain
from vpnlab.wire.ciphers import make_format
from vpnlab.wire.esp import esp_sa_rows
from vpnlab.wire.identity import ClientIdentity, IdentityFormat, ServerIdentity
from vpnlab.wire.noise import public_key

from .helpers import (
    CLIENT,
    PSK,
    SERVER,
    SERVER_TUNNEL_ADDRESS,
    CorePair,
    needs_tshark,
    receive_one,
    seeded_random,
)

pytestmark = needs_tshark

NOW = 1_800_000_000.0
"""Wall-clock time of the handshakes (the PSK Hello's timestamp: 2027-01-15 08:00 UTC)."""
CIPHER_IDS = {"esp-null": "1", "esp-aes-gcm": "2"}
FIELDS = [
    "frame.protocols",
    "_ws.col.Info",
    "vpnlab.type",
    "vpnlab.message",
    "vpnlab.mode",
    "vpnlab.cipher",
    "vpnlab.timestamp",
    "vpnlab.public_key",
    "vpnlab.mac",
    "vpnlab.client_address",
    "vpnlab.prefix",
    "vpnlab.tag",
    "vpnlab.ephemeral",
    "vpnlab.encrypted_static",
    "vpnlab.encrypted_payload",
    "vpnlab.mac1",
    "vpnlab.mac2",
    "vpnlab.has_cookie",
    "vpnlab.nonce",
    "vpnlab.encrypted_cookie",
    "vpnlab.control",
    "vpnlab.argument",
]


def _inner_ping() -> bytes:
    from scapy.layers.inet import ICMP, IP

    return bytes(IP(src="10.8.0.2", dst="203.0.113.10") / ICMP() / (b"x" * 56))


def psk_exchange(cipher: str) -> dict:
    """A PSK Hello and Welcome from a CorePair, then one ESP datagram and its session."""
    pair = CorePair(make_format(cipher, PSK), now=NOW)
    pair.client.connect(pair.now)
    [(hello, _)] = pair.client.datagrams_to_send()
    receive_one(pair.server, hello, CLIENT, pair.now)
    [(welcome, _)] = pair.server.datagrams_to_send()
    receive_one(pair.client, welcome, SERVER, pair.now)
    assert pair.client.state is State.CONNECTED
    pair.client.send_packets([_inner_ping()], pair.now)
    [(data, _)] = pair.client.datagrams_to_send()
    return {"hello": hello, "welcome": welcome, "data": data, "session": pair.client.session}


def identity_exchange(cipher: str) -> dict:
    """An identity (Noise IKpsk2) Hello and Welcome between two real cores."""
    rng = random.Random(5)
    server_key, client_key = rng.randbytes(32), rng.randbytes(32)
    peer = Peer("alice", public_key(client_key), IPv4Interface("10.8.0.7/24"))
    server_format = IdentityFormat(cipher, server=ServerIdentity(server_key, (peer,)))
    client_format = IdentityFormat(
        cipher, client=ClientIdentity(client_key, public_key(server_key))
    )
    server = ServerCore(server_format, SERVER_TUNNEL_ADDRESS, seeded_random(1), clock_offset_s=NOW)
    client = ClientCore(
        SERVER, client_format.client_handshake(seeded_random(2)), clock_offset_s=NOW
    )
    client.connect(0.0)
    [(hello, _)] = client.datagrams_to_send()
    receive_one(server, hello, CLIENT, 0.0)
    [(welcome, _)] = server.datagrams_to_send()
    receive_one(client, welcome, SERVER, 0.0)
    assert client.state is State.CONNECTED
    cookie = server.handshake.screen(hello, CLIENT, NOW, True)  # what a loaded server sends
    return {"hello": hello, "welcome": welcome, "cookie": cookie}


@pytest.fixture(scope="module")
def exchanges() -> dict:
    out = {("psk", c): psk_exchange(c) for c in CIPHER_IDS}
    out |= {("identity", c): identity_exchange(c) for c in CIPHER_IDS}
    pair = CorePair(plain.PLAIN, now=NOW)
    pair.client.connect(pair.now)
    [(hello, _)] = pair.client.datagrams_to_send()
    receive_one(pair.server, hello, CLIENT, pair.now)
    [(welcome, _)] = pair.server.datagrams_to_send()
    receive_one(pair.client, welcome, SERVER, pair.now)
    pair.client.send_packets([_inner_ping()], pair.now)
    [(data, _)] = pair.client.datagrams_to_send()
    out["plain"] = {"hello": hello, "welcome": welcome, "data": data}
    return out


def write_pcap(path, payloads: list[bytes], ports: tuple[int, int] = (PORT, PORT)) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    outer = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="192.0.2.2", dst="198.51.100.2"
    )
    sport, dport = ports
    wrpcap(str(path), [outer / UDP(sport=sport, dport=dport) / p for p in payloads])


# The one capture most tests read: (name, payload) in order.
def _catalogue(exchanges) -> list[tuple[str, bytes]]:
    rows = []
    for mode in ("psk", "identity"):
        for cipher in CIPHER_IDS:
            rows.append((f"{mode} Hello {cipher}", exchanges[mode, cipher]["hello"]))
            rows.append((f"{mode} Welcome {cipher}", exchanges[mode, cipher]["welcome"]))
    for cipher in CIPHER_IDS:
        rows.append((f"identity Cookie reply {cipher}", exchanges["identity", cipher]["cookie"]))
    rows += [
        ("plain HELLO", exchanges["plain"]["hello"]),
        ("plain WELCOME", exchanges["plain"]["welcome"]),
        ("plain KEEPALIVE", plain.KEEPALIVE),
        ("plain BYE", plain.BYE),
        ("esp data", exchanges["psk", "esp-aes-gcm"]["data"]),
        ("esp-null data", exchanges["psk", "esp-null"]["data"]),
        ("nat keepalive", NAT_KEEPALIVE),
        ("plain data", exchanges["plain"]["data"]),
        ("truncated hello", exchanges["psk", "esp-null"]["hello"][:-1]),
    ]
    return rows


@pytest.fixture(scope="module")
def catalogue(exchanges, tmp_path_factory):
    rows = _catalogue(exchanges)
    path = tmp_path_factory.mktemp("dissector") / "vpnlab.pcap"
    write_pcap(path, [payload for _, payload in rows])
    decoded = capture.fields(path, FIELDS, dissector=True)
    assert len(decoded) == len(rows)
    return path, {
        name: dict(zip(FIELDS, row, strict=True))
        for (name, _), row in zip(rows, decoded, strict=True)
    }


def tshark(*args: str, cwd: Path | None = None) -> str:
    """tshark as a person types it; as root, as nobody (:data:`capture.TSHARK_USER`), as
    Wireshark asks and as 4.2 and later need for a Lua script."""
    user, who = capture.TSHARK_USER, {}
    if os.geteuid() == 0:  # nobody's settings: none (root's are closed to it)
        env = {**os.environ, "HOME": str(cwd)}
        who = {"user": user, "group": user, "extra_groups": [], "env": env}
    argv = ["tshark", "-n", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, **who)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def by_hand(catalogue) -> Iterator[Path]:
    """A folder everyone may read with the catalogue as ``capture.pcap`` and the dissector as
    ``vpnlab.lua``, as a student has them (pytest's own folders are root's alone)."""
    with tempfile.TemporaryDirectory(prefix="vpnlab-by-hand-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        for source, target in ((catalogue[0], "capture.pcap"), (capture.DISSECTOR, "vpnlab.lua")):
            shutil.copyfile(source, folder / target)
            (folder / target).chmod(0o644)
        yield folder


# --- the handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["psk", "identity"])
@pytest.mark.parametrize("cipher", list(CIPHER_IDS))
@pytest.mark.parametrize("message", ["Hello", "Welcome"])
def test_handshake_messages_are_vpnlab_not_isakmp(catalogue, mode, cipher, message):
    _, rows = catalogue
    row = rows[f"{mode} {message} {cipher}"]
    assert row["frame.protocols"] == "eth:ethertype:ip:udp:vpnlab"
    assert row["_ws.col.Info"] == f"vpnlab {message} ({mode}, {cipher})"
    assert (row["vpnlab.message"], row["vpnlab.mode"]) == (message, mode)
    assert row["vpnlab.cipher"] == CIPHER_IDS[cipher]
    types = {("psk", "Hello"): 1, ("psk", "Welcome"): 2}
    types |= {("identity", "Hello"): 3, ("identity", "Welcome"): 4}
    assert row["vpnlab.type"] == str(types[mode, message])


@pytest.mark.parametrize("cipher", list(CIPHER_IDS))
def test_psk_fields_are_the_datagrams_bytes(exchanges, catalogue, cipher):
    _, rows = catalogue
    hello, welcome = exchanges["psk", cipher]["hello"], exchanges["psk", cipher]["welcome"]
    row = rows[f"psk Hello {cipher}"]
    assert row["vpnlab.timestamp"] == str(int(NOW * 1e6)) == str(int.from_bytes(hello[6:14], "big"))
    assert row["vpnlab.public_key"] == hello[14:46].hex()
    assert row["vpnlab.mac"] == hello[46:62].hex()
    row = rows[f"psk Welcome {cipher}"]
    assert row["vpnlab.public_key"] == welcome[6:38].hex()
    assert (row["vpnlab.client_address"], row["vpnlab.prefix"]) == ("10.8.0.2", "24")
    assert row["vpnlab.tag"] == welcome[43:59].hex()


@pytest.mark.parametrize("cipher", list(CIPHER_IDS))
def test_identity_fields_are_the_datagrams_bytes(exchanges, catalogue, cipher):
    _, rows = catalogue
    hello, welcome = (
        exchanges["identity", cipher]["hello"],
        exchanges["identity", cipher]["welcome"],
    )
    row = rows[f"identity Hello {cipher}"]
    assert row["vpnlab.ephemeral"] == hello[6:38].hex()
    assert row["vpnlab.encrypted_static"] == hello[38:86].hex()
    assert row["vpnlab.encrypted_payload"] == hello[86:114].hex()
    assert row["vpnlab.mac1"] == hello[114:130].hex()
    assert row["vpnlab.mac2"] == hello[130:146].hex() == "00" * 16
    assert row["vpnlab.has_cookie"] in ("False", "0")
    row = rows[f"identity Welcome {cipher}"]
    assert row["vpnlab.ephemeral"] == welcome[6:38].hex()
    assert row["vpnlab.encrypted_payload"] == welcome[38:63].hex()
    assert row["vpnlab.client_address"] == ""  # encrypted in the identity Welcome


@pytest.mark.parametrize("cipher", list(CIPHER_IDS))
def test_cookie_reply_fields_are_the_datagrams_bytes(exchanges, catalogue, cipher):
    _, rows = catalogue
    cookie = exchanges["identity", cipher]["cookie"]
    row = rows[f"identity Cookie reply {cipher}"]
    assert row["frame.protocols"] == "eth:ethertype:ip:udp:vpnlab"
    assert row["_ws.col.Info"] == f"vpnlab Cookie reply (identity, {cipher})"
    assert row["vpnlab.type"] == "5" and len(cookie) == 50
    assert row["vpnlab.nonce"] == cookie[6:18].hex()
    assert row["vpnlab.encrypted_cookie"] == cookie[18:50].hex()


def test_plain_control_lines_are_vpnlab(catalogue):
    _, rows = catalogue
    expected = {
        "plain HELLO": ("HELLO", "", "vpnlab HELLO (plain)"),
        "plain WELCOME": ("WELCOME", "10.8.0.2/24", "vpnlab WELCOME 10.8.0.2/24 (plain)"),
        "plain KEEPALIVE": ("KEEPALIVE", "", "vpnlab KEEPALIVE (plain)"),
        "plain BYE": ("BYE", "", "vpnlab BYE (plain)"),
    }
    for name, (word, argument, info) in expected.items():
        row = rows[name]
        assert row["frame.protocols"] == "eth:ethertype:ip:udp:vpnlab", name
        assert (row["vpnlab.control"], row["vpnlab.argument"]) == (word, argument)
        assert (row["vpnlab.mode"], row["_ws.col.Info"]) == ("plain", info)


# --- everything else: as before ------------------------------------------------------------------


def test_everything_else_decodes_exactly_as_without_the_dissector(catalogue):
    path, rows = catalogue
    before = capture.stacks(path)  # tshark's own decode, no script
    names = list(rows)
    for name, stack in zip(names, before, strict=True):
        if name.split()[0] in ("psk", "identity"):
            assert stack == "eth:ethertype:ip:udp:udpencap:isakmp", name  # the bogus IKE
            assert rows[name]["frame.protocols"] != stack
        elif name.startswith("plain ") and name != "plain data":
            assert rows[name]["frame.protocols"] != stack
        else:
            assert rows[name]["frame.protocols"] == stack, name
    assert rows["esp data"]["frame.protocols"] == capture.EXTERNAL_STACK
    assert rows["plain data"]["frame.protocols"] == capture.EXTERNAL_STACK
    assert rows["nat keepalive"]["frame.protocols"] == "eth:ethertype:ip:udp:udpencap"
    assert rows["nat keepalive"]["_ws.col.Info"] == "NAT-keepalive"
    assert rows["truncated hello"]["frame.protocols"].endswith("udpencap:isakmp")


def test_the_command_line_of_the_brief(catalogue, by_hand):
    """``tshark -X lua_script:...`` by hand: vpnlab for handshakes, no isakmp anywhere."""
    _, rows = catalogue
    script, path = "lua_script:vpnlab.lua", "capture.pcap"
    out = tshark("-X", script, "-r", path, "-T", "fields", "-e", "frame.protocols", cwd=by_hand)
    handshakes = [i for i, name in enumerate(rows) if name.split()[0] in ("psk", "identity")]
    lines = out.splitlines()
    assert all(lines[i] == "eth:ethertype:ip:udp:vpnlab" for i in handshakes)
    assert "isakmp" not in "".join(lines[i] for i in handshakes)
    fields = ("-T", "fields", "-e", "frame.protocols")
    plain_out = tshark("-r", path, *fields, cwd=by_hand).splitlines()
    assert all(plain_out[i].endswith("udpencap:isakmp") for i in handshakes)
    verbose = tshark("-X", script, "-r", path, "-V", cwd=by_hand)
    assert "Lua Error" not in verbose and "vpnlab Hello (identity, esp-aes-gcm)" in verbose
    assert "Encrypted static key: " in verbose and "Noise ephemeral key: " in verbose


def test_esp_still_decrypts_with_esp_sa_rows(exchanges, tmp_path):
    path = tmp_path / "esp.pcap"
    psk = exchanges["psk", "esp-aes-gcm"]
    write_pcap(path, [psk["hello"], psk["welcome"], psk["data"], NAT_KEEPALIVE])
    rows = esp_sa_rows(psk["session"].protection)
    with_keys = capture.stacks(path, rows, dissector=True)
    decrypted = capture.EXTERNAL_STACK + ":ip:icmp:data"
    assert with_keys == ["eth:ethertype:ip:udp:vpnlab"] * 2 + [
        decrypted,
        "eth:ethertype:ip:udp:udpencap",
    ]
    assert with_keys[2:] == capture.stacks(path, rows)[2:]
    [pkt] = decode.decode(path, rows, display_filter="esp", dissector=True)
    assert {f.name: f.value for f in pkt.layer("esp").fields}["esp.icv_good"] in capture.TSHARK_TRUE


@pytest.mark.parametrize("ports", [(4500, 40000), (40000, 4500), (1234, 4500), (4500, 1234)])
def test_a_peer_on_another_port_decodes_the_same(exchanges, tmp_path, ports):
    """A NAT rewrote one port: vpnlab below or above 4500 is still vpnlab, ESP still udpencap."""
    path = tmp_path / "nat.pcap"
    psk = exchanges["psk", "esp-null"]
    write_pcap(path, [psk["hello"], psk["data"], NAT_KEEPALIVE, plain.BYE], ports)
    assert capture.stacks(path, dissector=True) == [
        "eth:ethertype:ip:udp:vpnlab",
        capture.EXTERNAL_STACK,
        "eth:ethertype:ip:udp:udpencap",
        "eth:ethertype:ip:udp:vpnlab",
    ]
    assert capture.stacks(path, dissector=True)[1:3] == capture.stacks(path)[1:3]


def test_other_udp_traffic_is_untouched(tmp_path):
    """Ports the script also sits at (free ones below 4500) pass on what is not ours."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    path = tmp_path / "other.pcap"
    base = Ether() / IP(src="192.0.2.2", dst="198.51.100.2")
    wrpcap(
        str(path),
        [
            base / UDP(sport=1234, dport=53) / DNS(qd=DNSQR(qname="example.org")),
            base / UDP(sport=1234, dport=2345) / (b"\x00\x00\x00\x00\x01" + bytes(57)),
            base / UDP(sport=1234, dport=5678) / b"VPNLAB/1 HELLO\n",
        ],
    )
    assert capture.stacks(path, dissector=True) == capture.stacks(path)


def test_decode_and_the_cli_load_it(catalogue, capsys):
    path, rows = catalogue
    packets = decode.decode(path, dissector=True)
    hello = packets[list(rows).index("identity Hello esp-aes-gcm")]
    layer = hello.layer("vpnlab")
    names = {f.name for f in layer.fields}
    assert {"vpnlab.ephemeral", "vpnlab.encrypted_static", "vpnlab.encrypted_payload"} <= names
    assert (layer.pos, layer.size) == (42, 146)
    assert all(p.stack.endswith("isakmp") is False for p in packets[:8])
    assert cli.main(["capture", "decode", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("eth:ethertype:ip:udp:vpnlab") == 14 and "isakmp" not in out.split("\n")[0]
    assert cli.main(["capture", "decode", str(path), "--no-dissector"]) == 0
    assert capsys.readouterr().out.count("udpencap:isakmp") == 11  # 10 handshakes + the runt


def test_a_script_tshark_cannot_load_is_an_error(catalogue, tmp_path, monkeypatch):
    path, _ = catalogue
    broken = tmp_path / "vpnlab.lua"
    broken.write_text("error(\n")
    monkeypatch.setattr(capture, "DISSECTOR", broken)
    with pytest.raises(CaptureError, match="could not load"):
        capture.stacks(path, dissector=True)
    monkeypatch.setattr(capture, "DISSECTOR", tmp_path / "missing.lua")
    with pytest.raises(CaptureError, match="missing"):
        capture.stacks(path, dissector=True)


def test_the_script_ships_as_package_data():
    """Found from a checkout and from an installed package: it sits next to capture.py."""
    tomllib = pytest.importorskip("tomllib")
    root = capture.DISSECTOR.parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.lua" in data["package-data"]["vpnlab.instruments"]
    shipped = importlib.resources.files("vpnlab.instruments").joinpath("vpnlab.lua")
    assert shipped.is_file() and capture.DISSECTOR.is_file()
