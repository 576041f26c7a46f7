"""The code exercises' hidden tests fail every wrong version we can think of, and pass the
instructor's solution.

Each hidden test is read from its notebook (the ``### BEGIN HIDDEN TESTS`` block of the cell
that calls the student's function) and run, as ``nbgrader autograde`` would, with a wrong
version in place of the student's function, against a live lab (real namespaces, the real
daemons; one lab for the module, another for notebook 12's own tunnel). The instructor's
solution is read from the notebook's solution block and must pass the same hidden test.
Notebook 12's check (``mytunnel.try_tunnel``, the cell that records 12.2) injects spoofed and
malformed datagrams: a loop without the source check, or one that dies on garbage, fails.
"""

from __future__ import annotations

import ast
import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from tests.lab.helpers import assert_gone, fresh_prefix
from vpnlab.core.constants import KEEPALIVE_INTERVAL_S, LIVENESS_TIMEOUT_S
from vpnlab.core.packet import internet_checksum
from vpnlab.course import liveness_exercise, mytunnel
from vpnlab.course import notebook as course

from .helpers import HIDDEN, read_notebook

pytestmark = pytest.mark.lab


# --- the notebooks' own hidden tests and solutions -----------------------------------------------


def _code_cells(name: str) -> list[str]:
    return [c.source for c in read_notebook(name).cells if c.cell_type == "code"]


def hidden_test(name: str, function: str) -> str:
    """The hidden block of notebook ``name`` that calls ``function``."""
    for source in _code_cells(name):
        for block in HIDDEN.findall(source):
            if f"{function})" in block or f"{function}," in block:
                return block
    raise LookupError(f"{name}: no hidden test calls {function}")


def solution(name: str, function: str):
    """The instructor's ``function``, as defined in notebook ``name`` (its solution kept)."""
    for source in _code_cells(name):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell with a top-level await
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == function:
                scope = dict(GLOBALS)
                exec(ast.get_source_segment(source, node), scope)  # the notebook's own code
                return scope[function]
    raise LookupError(f"{name}: no def {function}")


GLOBALS = {
    "contextlib": contextlib,
    "os": os,
    "select": select,
    "socket": socket,
    "struct": struct,
    "time": time,
    "AESGCM": AESGCM,
    "IP": IP,
    "ICMP": ICMP,
    "ARP": ARP,
    "Ether": Ether,
    "LIVENESS_TIMEOUT_S": LIVENESS_TIMEOUT_S,
    "KEEPALIVE_INTERVAL_S": KEEPALIVE_INTERVAL_S,
}
"""What the notebooks' earlier cells imported, for their functions."""


def run_hidden(name: str, function: str, **scope) -> None:
    """Notebook ``name``'s hidden test for ``function``, with ``scope`` (lab, the function)."""
    exec(hidden_test(name, function), {**GLOBALS, **scope})


def fails(name: str, function: str, **scope) -> str:
    """The hidden test's complaint (it must raise AssertionError)."""
    with pytest.raises(AssertionError) as failed:
        run_hidden(name, function, **scope)
    return str(failed.value)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab (esp-aes-gcm, NAT on) for notebooks 3-6; the checks' files in a tmp folder."""
    folder = tmp_path_factory.mktemp("code-exercises")
    here = Path.cwd()
    os.chdir(folder)  # the checks write their captures to work/
    the_lab = course.CourseLab("code-exercises", fresh_prefix())
    try:
        the_lab.up(cipher="esp-aes-gcm")
        yield the_lab
    finally:
        the_lab.down()
        os.chdir(here)
        assert_gone(the_lab.prefix, {}, [])


def vpn_running(lab) -> None:
    if lab.daemon_pid("server") is None or lab.daemon_pid("client-r1") is None:
        lab.start_vpn("esp-aes-gcm")


# --- notebook 3: SetRouting(1) and CleanUp -------------------------------------------------------


def set_routing_ok(ip, server, gateway):
    ip("route add 0.0.0.0/1 dev tun0")
    ip("route add 128.0.0.0/1 dev tun0")
    ip(f"route add {server}/32 via {gateway} dev eth0")


def clean_up_ok(ip, server, gateway):
    ip("route del 0.0.0.0/1 dev tun0")
    ip("route del 128.0.0.0/1 dev tun0")
    ip(f"route del {server}/32 via {gateway} dev eth0")


def no_host_route(ip, server, gateway):
    ip("route add 0.0.0.0/1 dev tun0")
    ip("route add 128.0.0.0/1 dev tun0")


def wrong_mask(ip, server, gateway):
    ip("route add 0.0.0.0/2 dev tun0")
    ip("route add 128.0.0.0/2 dev tun0")
    ip(f"route add {server}/32 via {gateway} dev eth0")


def one_half(ip, server, gateway):
    ip("route add 0.0.0.0/1 dev tun0")
    ip(f"route add {server}/32 via {gateway} dev eth0")


def host_route_without_gateway(ip, server, gateway):
    ip("route add 0.0.0.0/1 dev tun0")
    ip("route add 128.0.0.0/1 dev tun0")
    ip(f"route add {server}/32 dev eth0")


def server_network_not_host(ip, server, gateway):
    ip("route add 0.0.0.0/1 dev tun0")
    ip("route add 128.0.0.0/1 dev tun0")
    ip(f"route add {server.rsplit('.', 1)[0]}.0/24 via {gateway} dev eth0")


def default_replaced(ip, server, gateway):
    ip(f"route add {server}/32 via {gateway} dev eth0")
    ip("route replace default dev tun0")


def clean_up_forgets_host_route(ip, server, gateway):
    ip("route del 0.0.0.0/1 dev tun0")
    ip("route del 128.0.0.0/1 dev tun0")


def clean_up_flushes(ip, server, gateway):
    ip("route flush table main")


def stub(*args):
    raise NotImplementedError  # nbgrader's student edition


ROUTING_WRONG = {
    "no host route to the server": (no_host_route, clean_up_ok, "the server 198"),
    "/2 instead of /1": (wrong_mask, clean_up_ok, "100.64.0.1"),
    "only 0.0.0.0/1": (one_half, clean_up_ok, "150.0.0.1"),
    "host route without the gateway": (host_route_without_gateway, clean_up_ok, "the server 198"),
    "a /24 to the server's network instead of a /32": (
        server_network_not_host,
        clean_up_ok,
        "198.51.100.3",
    ),
    "default route replaced by tun0": (default_replaced, clean_up_ok, "default route"),
    "CleanUp forgets the host route": (set_routing_ok, clean_up_forgets_host_route, "clean_up"),
    "CleanUp flushes the whole table": (set_routing_ok, clean_up_flushes, "clean_up"),
    "the student edition's stubs": (stub, stub, "raised nothing"),
}


def test_03_routing_solution_passes(lab):
    lab.stop_vpn()
    set_routing, clean_up = (
        solution("03_routing", "set_routing"),
        solution("03_routing", "clean_up"),
    )
    run_hidden("03_routing", "set_routing", lab=lab, set_routing=set_routing, clean_up=clean_up)


@pytest.mark.parametrize("wrong", ROUTING_WRONG)
def test_03_routing_wrong_versions_fail(lab, wrong):
    lab.stop_vpn()
    set_routing, clean_up, missing = ROUTING_WRONG[wrong]
    complaint = fails(
        "03_routing", "set_routing", lab=lab, set_routing=set_routing, clean_up=clean_up
    )
    assert missing in complaint, complaint  # failed for its own reason
    assert lab.whoami("r1") == "you are 192.0.2.2"  # r1's routes were put back


# --- notebook 4: the NAT rule --------------------------------------------------------------------


def _nat(rule: str, chain: str = "type nat hook postrouting priority srcnat; policy accept;"):
    def nat_ruleset(network, external):
        filled = rule.format(network=network, external=external)
        return f"table ip mynat {{\n chain postrouting {{\n {chain}\n {filled}\n }}\n}}\n"

    return nat_ruleset


WHOAMI, OTHER = "who-am-I from r1", "a packet from 10.8.1.5"
NAT_WRONG = {  # the wrong rule, and the fact it must miss
    "masquerade without the source match": (_nat('oifname "{external}" masquerade'), OTHER),
    "source 10.0.0.0/8 instead of the tunnel": (
        _nat('ip saddr 10.0.0.0/8 oifname "{external}" masquerade'),
        OTHER,
    ),
    "source 10.8.0.0/16 instead of the tunnel": (
        _nat('ip saddr 10.8.0.0/16 oifname "{external}" masquerade'),
        OTHER,
    ),
    "out of tun0 instead of the external interface": (
        _nat('ip saddr {network} oifname "tun0" masquerade'),
        WHOAMI,
    ),
    "the client's public address as the source": (
        _nat('ip saddr 192.0.2.2 oifname "{external}" masquerade'),
        WHOAMI,
    ),
    "a prerouting chain": (
        _nat("ip saddr {network} masquerade", "type nat hook prerouting priority dstnat;"),
        WHOAMI,
    ),
    "a filter chain": (
        _nat(
            'ip saddr {network} oifname "{external}" masquerade',
            "type filter hook postrouting priority 0;",
        ),
        WHOAMI,
    ),
    "no rule at all": (_nat(""), WHOAMI),
    "snat to the server without the source match": (
        _nat('oifname "{external}" snat to 198.51.100.2'),
        OTHER,
    ),
    "the student edition's stub": (stub, "nft took"),
}


def test_04_nat_solution_passes(lab):
    vpn_running(lab)
    run_hidden("04_nat", "nat_ruleset", lab=lab, nat_ruleset=solution("04_nat", "nat_ruleset"))
    assert lab.whoami("r1") == "you are 198.51.100.2"  # the server's own rule is back


@pytest.mark.parametrize("wrong", NAT_WRONG)
def test_04_nat_wrong_versions_fail(lab, wrong):
    vpn_running(lab)
    nat_ruleset, missing = NAT_WRONG[wrong]
    complaint = fails("04_nat", "nat_ruleset", lab=lab, nat_ruleset=nat_ruleset)
    assert missing in complaint, complaint
    assert lab.whoami("r1") == "you are 198.51.100.2"


# --- notebook 5: ESP seal and open ---------------------------------------------------------------


def _seal(order="salt-iv", aad="header", trailer=True, pad_byte=None, nh=4, aes_key=16):
    def esp_seal(key, spi, seq, packet):
        pad = -(len(packet) + 2) % 4
        padding = bytes([pad_byte] * pad) if pad_byte is not None else bytes(range(1, pad + 1))
        plaintext = packet + padding + bytes([pad, nh]) if trailer else packet
        header, iv = struct.pack("!II", spi, seq), struct.pack("!Q", seq)
        nonce = key[16:] + iv if order == "salt-iv" else iv + key[16:]
        data = {"header": header, "none": None, "header+iv": header + iv}[aad]
        return header + iv + AESGCM(key[:aes_key]).encrypt(nonce, plaintext, data)

    return esp_seal


def _open(strip="trailer", verify=True, nonce_from="iv"):
    def esp_open(key, datagram):
        spi, seq = struct.unpack("!II", datagram[:8])
        nonce = key[16:] + datagram[8:16] if nonce_from == "iv" else datagram[8:16] + key[16:]
        if verify:
            plaintext = AESGCM(key[:16]).decrypt(nonce, datagram[16:], datagram[:8])
        else:  # AES-GCM's keystream is AES-CTR from counter 2: decrypted, never checked
            ctr = Cipher(algorithms.AES(key[:16]), modes.CTR(nonce + b"\0\0\0\2")).decryptor()
            plaintext = ctr.update(datagram[16:-16]) + ctr.finalize()
        cut = {"trailer": 2 + plaintext[-2], "two": 2, "none": 0}[strip]
        return spi, seq, plaintext[: len(plaintext) - cut]

    return esp_open


SEALED, INNER, REFUSED = "the running server opened", "its inner packet", "refuses"
ESP_WRONG = {  # the wrong seal and open, and the fact they must miss
    "nonce IV || salt": (_seal(order="iv-salt"), _open(nonce_from="iv-salt"), SEALED),
    "no AAD": (_seal(aad="none"), _open(), SEALED),
    "AAD with the IV": (_seal(aad="header+iv"), _open(), SEALED),
    "no trailer": (_seal(trailer=False), _open(), SEALED),
    "zero padding bytes": (_seal(pad_byte=0), _open(), SEALED),
    "next header 41 (IPv6) for IPv4": (_seal(nh=41), _open(), SEALED),
    "the 20-byte key as the AES key": (_seal(aes_key=20), _open(), SEALED),
    "open keeps the trailer": (_seal(), _open(strip="none"), INNER),
    "open ignores the padding": (_seal(), _open(strip="two"), INNER),
    "open never checks the ICV": (_seal(), _open(verify=False), REFUSED),
    "the student edition's stubs": (stub, stub, SEALED),
}


def test_05_esp_solution_passes(lab):
    vpn_running(lab)
    seal, open_ = solution("05_captures", "esp_seal"), solution("05_captures", "esp_open")
    run_hidden("05_captures", "esp_seal", lab=lab, esp_seal=seal, esp_open=open_)
    assert lab.whoami("r1") == "you are 198.51.100.2"  # the client's session goes on


@pytest.mark.parametrize("wrong", ESP_WRONG)
def test_05_esp_wrong_versions_fail(lab, wrong):
    vpn_running(lab)
    seal, open_, missing = ESP_WRONG[wrong]
    complaint = fails("05_captures", "esp_seal", lab=lab, esp_seal=seal, esp_open=open_)
    assert missing in complaint, complaint


# --- notebook 6: the liveness timer --------------------------------------------------------------


def _liveness(close_s=LIVENESS_TIMEOUT_S, keep_s=KEEPALIVE_INTERVAL_S, strict=False, since="rx"):
    def liveness(now, last_received, last_sent):
        silent = now - (last_received if since == "rx" else last_sent)
        idle = now - last_sent
        if (silent > close_s) if strict else (silent >= close_s):
            return "close"
        if idle >= keep_s:
            return "keepalive"
        return None

    return liveness


def keepalive_first(now, last_received, last_sent):
    if now - last_sent >= KEEPALIVE_INTERVAL_S:
        return "keepalive"
    return "close" if now - last_received >= LIVENESS_TIMEOUT_S else None


def keepalive_from_received(now, last_received, last_sent):
    if now - last_received >= LIVENESS_TIMEOUT_S:
        return "close"
    return "keepalive" if now - last_received >= KEEPALIVE_INTERVAL_S else None


LIVENESS_WRONG = {
    "close after 7 s": _liveness(close_s=7.0),
    "close after 5 s": _liveness(close_s=5.0),
    "> instead of >= (off by one tick at 6.0 s)": _liveness(strict=True),
    "silence counted from the last sent": _liveness(since="tx"),
    "keepalive every 3 s": _liveness(keep_s=3.0),
    "keepalive before close": keepalive_first,
    "keepalive counted from the last received": keepalive_from_received,
    "the student edition's stub": stub,
}


@pytest.fixture(scope="module")
def timeline(lab):
    """The real daemon's timeline around kill -9 of the server, measured once."""
    return liveness_exercise.measure(lab)


def test_06_liveness_solution_passes(lab):
    run_hidden(
        "06_liveness_cleanup",
        "liveness",
        lab=lab,
        liveness=solution("06_liveness_cleanup", "liveness"),
    )


@pytest.mark.parametrize("wrong", LIVENESS_WRONG)
def test_06_liveness_wrong_versions_fail(lab, wrong):
    """The hidden test fails them on the fake clock, before it measures anything."""
    fails("06_liveness_cleanup", "liveness", lab=lab, liveness=LIVENESS_WRONG[wrong])


@pytest.mark.parametrize("wrong", ["close after 7 s", "close after 5 s", "keepalive every 3 s"])
def test_06_liveness_timing_errors_fail_against_the_daemon_too(timeline, wrong):
    facts = liveness_exercise.against_daemon(LIVENESS_WRONG[wrong], timeline)
    assert not all(facts.values()), facts
    right = liveness_exercise.against_daemon(solution("06_liveness_cleanup", "liveness"), timeline)
    assert all(right.values()), (right, timeline)


# --- notebook 11: writing to TUN (SEED 2.d) and answering ARP on TAP (SEED 9) --------------------


def _echo(swap=True, reply_type=0, checksum=True, guard=True):
    def echo_reply(packet):
        if guard and (not packet or packet[0] >> 4 != 4 or packet[9] != 1 or packet[20] != 8):
            return None
        icmp = bytearray(packet[20:])
        icmp[0], icmp[2:4] = reply_type, b"\0\0"
        if checksum:
            icmp[2:4] = struct.pack("!H", internet_checksum(icmp))
        else:
            icmp[2:4] = packet[22:24]  # the request's: wrong once the type changed
        src, dst = (packet[16:20], packet[12:16]) if swap else (packet[12:16], packet[16:20])
        return packet[:12] + src + dst + bytes(icmp)

    return echo_reply


def _arp(op=2, claim=True, guard=True):
    def arp_reply(frame, mac):
        from scapy.layers.l2 import ARP, Ether

        asked = Ether(frame)
        if guard and (ARP not in asked or asked[ARP].op != 1):
            return None
        arp = asked[ARP]
        sender = mac if claim else arp.hwsrc
        return bytes(
            Ether(dst=arp.hwsrc, src=mac)
            / ARP(op=op, hwsrc=sender, psrc=arp.pdst, hwdst=arp.hwsrc, pdst=arp.psrc)
        )

    return arp_reply


PING, CHECKSUMS, NONE = "3 received", "both checksums", "None for a UDP datagram"
RAISED, ARPING = "raised nothing", "arping 10.10.0.7 answered"
TUNTAP_WRONG = {  # (echo_reply, arp_reply, the fact it must miss)
    "echo reply with the addresses not swapped": (_echo(swap=False), _arp(), PING),
    "echo reply still of type 8": (_echo(reply_type=8), _arp(), PING),
    "echo reply with the request's ICMP checksum": (_echo(checksum=False), _arp(), CHECKSUMS),
    "echo reply to anything (UDP, IPv6 too)": (_echo(guard=False), _arp(), NONE),
    "ARP answered with a request (op 1)": (_echo(), _arp(op=1), ARPING),
    "ARP reply that claims the asker's MAC": (_echo(), _arp(claim=False), ARPING),
    "ARP reply to every frame": (_echo(), _arp(guard=False), RAISED),
    "the student edition's stubs": (stub, stub, PING),
}


def test_11_solutions_pass(lab):
    echo, arp = solution("11_tun_in_depth", "echo_reply"), solution("11_tun_in_depth", "arp_reply")
    run_hidden("11_tun_in_depth", "echo_reply", lab=lab, echo_reply=echo, arp_reply=arp)


@pytest.mark.parametrize("wrong", TUNTAP_WRONG)
def test_11_wrong_versions_fail(lab, wrong):
    echo, arp, missing = TUNTAP_WRONG[wrong]
    complaint = fails("11_tun_in_depth", "echo_reply", lab=lab, echo_reply=echo, arp_reply=arp)
    assert missing in complaint, complaint


# --- notebook 12: the student's tunnel under attack ----------------------------------------------


def _loop(check_source=True, check_port=True, survive=True):
    def tunnel(tun, sock, peer, until):
        while time.monotonic() < until:
            ready, _, _ = select.select([tun, sock], [], [], 0.2)
            if tun in ready:
                sock.sendto(os.read(tun, 65535), peer)
            if sock in ready:
                datagram, source = sock.recvfrom(65535)
                if check_source and (source != peer if check_port else source[0] != peer[0]):
                    continue
                try:
                    os.write(tun, datagram)
                except OSError:
                    if not survive:
                        raise

    return tunnel


TUNNEL_WRONG = {
    "no source check": _loop(check_source=False),
    "checks the address, not the port": _loop(check_port=False),
    "dies on a garbage datagram": _loop(survive=False),
    "the student edition's stub": stub,
}


@pytest.fixture(scope="module")
def tunnel_lab(tmp_path_factory):
    """Notebook 12's lab: no VPN daemons, the two ends of the student's tunnel."""
    folder = tmp_path_factory.mktemp("tunnel-exercise")
    here, saved = Path.cwd(), os.environ.get("VPNLAB_PROGRESS")
    os.chdir(folder)
    os.environ["VPNLAB_PROGRESS"] = str(folder / "progress.jsonl")
    the_lab = course.CourseLab("code-exercises-12", fresh_prefix())
    try:
        the_lab.up(vpn=False)
        ends = mytunnel.prepare(the_lab)
        yield the_lab, ends
        mytunnel.close(ends)
    finally:
        the_lab.down()
        os.chdir(here)
        if saved is None:
            os.environ.pop("VPNLAB_PROGRESS", None)
        else:
            os.environ["VPNLAB_PROGRESS"] = saved
        assert_gone(the_lab.prefix, {}, [])


def _check_12(tunnel_lab, tunnel) -> None:
    """Notebook 12's cell that checks ``tunnel`` (12.2), as the notebook has it."""
    lab, ends = tunnel_lab
    cell = next(s for s in _code_cells("12_write_your_tunnel") if "try_tunnel(" in s)
    exec(cell, {"course": course, "mytunnel": mytunnel, "lab": lab, "ends": ends, "tunnel": tunnel})


def test_12_solution_passes_under_attack(tunnel_lab):
    _check_12(tunnel_lab, solution("12_write_your_tunnel", "tunnel"))
    assert tunnel_lab[0].results["my_tunnel_spoofed_through"] == []


@pytest.mark.parametrize("wrong", TUNNEL_WRONG)
def test_12_wrong_loops_fail(tunnel_lab, wrong):
    with pytest.raises(AssertionError) as failed:
        _check_12(tunnel_lab, TUNNEL_WRONG[wrong])
    if wrong.startswith("no source") or wrong.startswith("checks the address"):
        assert "dropped" in str(failed.value)  # a spoofed datagram reached web
