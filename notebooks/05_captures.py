# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Captures: what the tunnel looks like on the wire
#
# From the design notes:
#
# > Example of frame protocols encapsulation (using wireshark) visible on external interface
# > and tun0: Captured on external interface **[eth:ip:udp:udpencap:esp]**: Frame, IP packet
# > with internal addresses of client/server, udp datagram, udpencap - udp encapsulated packet,
# > esp - encapsulating security payload - IP packet encapsulated (not encrypted).
# > Captured on tun0 **[raw:ip:tcp:ftp]**: Frame, IP packet with tunnel addresses, tcp
# > segment, ftp - application. Client can for example, ftp to server on the tunnel.
#
# One correction to the notes' "IP packet with internal addresses of client/server": on the
# external interface the outer IPv4 header carries the **public** addresses, 192.0.2.2 (r1's
# `eth0`) <-> 198.51.100.2 (r2's `eth0`): the isp routes by those. The internal (tunnel)
# addresses, 10.8.0.2 and the inner packet's destination, are in the packet the UDP datagram
# carries (tshark's "esp" part), readable in `plain` and `esp-null`, encrypted in `esp-aes-gcm`.
#
# We reproduce both, with dumpcap running inside r1 on `eth0` and `tun0` at the same time
# (`vpnlab/instruments/capture.py`), an FTP server on r2's tunnel address
# (`instruments/ftp.py`), and decode with tshark and pyshark. Then the three wire formats side
# by side, and ESP decryption with the keys the server exports.

# %%
import json

import matplotlib.pyplot as plt

from vpnlab.course import figures
from vpnlab.course import notebook as course
from vpnlab.instruments import capture, decode, ftp
from vpnlab.wire.ciphers import CIPHERS

lab = course.CourseLab("05_captures")
lab.up(cipher="plain")
print("wire formats:", CIPHERS)

# %% [markdown]
# ## eth0 and tun0 at once: a ping and an FTP session (format `plain`)

# %%
eth = capture.start_capture(lab.prefix, "r1", "eth0", "work/c05-plain-eth0.pcapng", count=300,
                            duration_s=30, capture_filter=capture.CHATTER_FILTER)
tun = capture.start_capture(lab.prefix, "r1", "tun0", "work/c05-plain-tun0.pcapng", count=300,
                            duration_s=30)
lab.sh("r1", "ping -c 3 -i 0.2 203.0.113.10")
with ftp.lab_server(lab.prefix, "r2", listen="10.8.0.1"):
    result = ftp.lab_transfer(lab.prefix, "r1", server="10.8.0.1", size_bytes=2000)
print("FTP:", result)
tun_file, eth_file = tun.stop(), eth.stop()
eth_stacks, tun_stacks = capture.stack_counts(eth_file), capture.stack_counts(tun_file)
print("eth0:", eth_stacks)
print("tun0:", tun_stacks)
outer = sorted({tuple(row) for row in capture.fields(eth_file, ["ip.src", "ip.dst"])})
print("outer IPv4 addresses on eth0:", outer)
lab.record("ftp_ok", result["ok"])
lab.record("eth_outer_addresses", outer)
lab.record("eth_stacks", sorted(eth_stacks))
lab.record("tun_stacks", sorted(tun_stacks))

# %% [markdown]
# On `eth0` every packet is `eth:ethertype:ip:udp:udpencap:esp`, the notes' external stack
# (tshark names the EtherType layer too), and its outer IPv4 header is always between the two
# public addresses, 192.0.2.2 and 198.51.100.2, whatever the ping or FTP inside is addressed to.
# On `tun0` there is no Ethernet: `raw:ip:...`, and the FTP control connection is the notes'
# `raw:ip:tcp:ftp`.
#
# Why "esp" for the plain format, which is not ESP at all? UDP port 4500 is IPsec's NAT
# traversal port (RFC 3948): Wireshark decodes everything on it as ESP unless it starts with
# four zero bytes. The "SPI" it shows is really the first four bytes of the inner IPv4 header:

# %%
spis = capture.fields(eth_file, ["esp.spi", "frame.len"], display_filter="frame.len == 126")
print("SPI of the plain ping datagrams:", {row[0] for row in spis})
lab.record("plain_ping_spi", spis[0][0] if spis else None)

# %% [markdown]
# ## pyshark
# pyshark wraps tshark and gives Python objects. Its synchronous API fails inside Jupyter
# (an event loop is already running), so we `await` the async reader.

# %%
packets = await decode.read_packets_async(tun_file, display_filter="ftp", limit=300)  # noqa: F704
print(len(packets), "FTP control packets; the first 8:")
for pkt in packets[:8]:
    line = getattr(pkt.ftp, "request_command", None) or getattr(pkt.ftp, "response_code", "")
    print(f"{pkt.frame_info.protocols:<18} {pkt.ip.src:>9} -> {pkt.ip.dst:<9} "
          f"{[layer.layer_name for layer in pkt.layers]}  {line}")
lab.record("pyshark_stacks", sorted({p.frame_info.protocols for p in packets}))

# %% [markdown]
# ## One encapsulated packet, layer by layer
# The first ping on `eth0`: which bytes belong to which layer (`tshark -T pdml` gives each
# layer's position and size), and what each layer costs.

# %%
ping_pkt = decode.decode(eth_file, display_filter="frame.len == 126", count=1)[0]
figures.draw_layers(ping_pkt, title="plain: one ping on r1's eth0")
plt.show()
for o in decode.layer_overhead(ping_pkt):
    print(f"{o.layer:<6} header {o.header_bytes:3} B  trailer {o.trailer_bytes:3} B")
print(decode.format_table(decode.layer_table([ping_pkt]), limit=25))

# %% [markdown]
# (For `plain`, tshark's "esp" layer is the whole inner 84-byte IPv4 packet.)
#
# ## plain vs esp-null vs esp-aes-gcm
# For each format: restart the VPN with it, capture one ping on `eth0`, and take the
# session's keys from the server's export (`vpnlab keys export`, the lab's `esp_sa` file) so
# that tshark can decrypt.

# %%
def outer_ip_length(packet):
    """The outer IPv4 header's total length (ip.len): the frame without its Ethernet header."""
    return int(next(f.value for f in packet.layer("ip").fields if f.name == "ip.len"))


by_cipher = {}
for cipher in CIPHERS:
    lab.start_vpn(cipher)
    with capture.start_capture(lab.prefix, "r1", "eth0", f"work/c05-{cipher}-eth0.pcapng", count=20,
                               duration_s=10, capture_filter="udp port 4500") as cap:
        lab.run("r1", "ping -c 1 203.0.113.10")
    keys = capture.lab_keys(lab.prefix)  # the esp_sa rows of the live session ([] for plain)
    big = max(decode.decode(cap.path), key=lambda p: p.length)  # the echo request/reply
    decrypted = max(decode.decode(cap.path, keys=keys), key=lambda p: p.length)
    mtu = json.loads(lab.run("r1", "ip -j link show tun0").stdout)[0]["mtu"]
    by_cipher[cipher] = {"file": cap.path, "keys": keys, "frame_len": big.length,
                         "added": outer_ip_length(big) - 84, "tun_mtu": mtu,
                         "stack": big.stack, "decrypted_stack": decrypted.stack,
                         "packet": decrypted}
    print(f"{cipher:<12} a {big.length} B frame for 84 B inside: the tunnel adds "
          f"{by_cipher[cipher]['added']} B;  without keys: {big.stack}"
          f"\n{'':<12} with keys: {decrypted.stack}")
lab.record("frame_len", {c: v["frame_len"] for c, v in by_cipher.items()})
lab.record("tunnel_added", {c: v["added"] for c, v in by_cipher.items()})
lab.record("tun_mtu", {c: v["tun_mtu"] for c, v in by_cipher.items()})
lab.record("stacks_without_keys", {c: v["stack"] for c, v in by_cipher.items()})
lab.record("stacks_with_keys", {c: v["decrypted_stack"] for c, v in by_cipher.items()})

# %% [markdown]
# The exported keys (throwaway lab keys: one `esp_sa` row per direction, in Wireshark's
# format, ready for `tshark -o uat:esp_sa:...` or Wireshark's ESP preferences):

# %%
print(lab.vpnlab("keys", "export", show=False))

# %% [markdown]
# The decrypted `esp-aes-gcm` ping, layer by layer: after the 8-byte ESP header (SPI,
# sequence) comes the 8-byte IV, then the inner IPv4 packet, then padding, pad length, next
# header (4 = IPv4) and the 16-byte ICV.

# %%
gcm = by_cipher["esp-aes-gcm"]["packet"]
figures.draw_layers(gcm, title="esp-aes-gcm, decrypted with the exported keys")
plt.show()
overhead = {c: [(o.layer, o.header_bytes, o.trailer_bytes)
                for o in decode.layer_overhead(v["packet"])] for c, v in by_cipher.items()}
for c, rows in overhead.items():
    print(f"{c:<12}", "  ".join(f"{name} {h}+{t}" for name, h, t in rows))
lab.record("esp_aes_gcm_overhead", overhead["esp-aes-gcm"])

# %% [markdown]
# What does the tunnel **add**? Not the Ethernet header: r1's `eth0` puts 14 bytes in front
# of every frame, with or without a tunnel. The tunnel adds the outer IPv4 header (20) and UDP
# header (8), and for the ESP formats the ESP header (SPI 4 + sequence 4), the IV (8,
# esp-aes-gcm only), the trailer (padding, pad length 1, next header 1) and the ICV (16).
# The cell above measured it from each capture: the outer IPv4 total length minus the 84-byte
# ping inside.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
names = list(by_cipher)
added = [by_cipher[c]["added"] for c in names]
ax.barh(names, [28] * 3, label="outer IPv4 20 + UDP 8", color="C1")
ax.barh(names, [a - 28 for a in added], left=[28] * 3, label="ESP header, IV, trailer, ICV",
        color="C3")
for y, a in enumerate(added):
    ax.text(a + 1, y, f"{a} B", va="center")
ax.set_xlabel("bytes the tunnel adds to one 84-byte ping (Ethernet's 14 not counted: "
              "they are there without the tunnel too)", fontsize=8)
ax.set_xlim(0, max(added) + 15)
ax.legend(loc="lower right", fontsize=8)
plt.show()

# %% [markdown]
# ## The same sizes give tun0's MTU
# A datagram must fit `eth0`'s MTU of 1500 bytes (the MTU counts from the IPv4 header: the
# 14 Ethernet bytes are not part of it). So Ifconfig gives `tun0` the MTU
# **1500 - 20 (outer IPv4) - 8 (UDP) - the format's ESP overhead**, that overhead taken at its
# largest (`vpnlab/cli/daemons.py: mtu_of`):
#
# | format | ESP overhead | tun0 MTU |
# |---|---|---|
# | `plain` | none: the inner packet is the whole UDP payload | 1500 - 28 = **1472** |
# | `esp-null` | SPI 4 + seq 4 + pad 0-3 + pad length 1 + next header 1 + ICV 16 = 29 | **1443** |
# | `esp-aes-gcm` | the same + IV 8 = 37 | 1472 - 37 = **1435** |
#
# (The 84-byte ping needs only 2 bytes of padding: 28 + 8 + 2 + 2 + 16 = 56 with esp-null,
# 8 more with the IV.) The daemons set exactly these, as r1's `tun0` showed for each format:

# %%
esp_overhead = {"plain": 0, "esp-null": 4 + 4 + 3 + 1 + 1 + 16,
                "esp-aes-gcm": 4 + 4 + 8 + 3 + 1 + 1 + 16}
for c in names:
    print(f"{c:<12} 1500 - 20 - 8 - {esp_overhead[c]:2} = {1500 - 28 - esp_overhead[c]};  "
          f"r1's tun0 had mtu {by_cipher[c]['tun_mtu']}")

# %% [markdown]
# ## Seal and open ESP yourself
# tshark decrypted with the keys; now you do, and you encrypt too, with `cryptography`'s
# `AESGCM`. The format (RFC 4303, with RFC 4106's AES-GCM), as the decrypted ping showed it:
#
# | bytes | field |
# |---|---|
# | 4 | SPI (big-endian) |
# | 4 | sequence number (big-endian) |
# | 8 | IV (any 8 bytes never used twice with this key: take the sequence number as 64 bits) |
# | ... | AES-GCM ciphertext of: inner packet, padding 1, 2, 3, ..., pad length, next header (4) |
# | 16 | ICV (AESGCM appends it to the ciphertext) |
#
# The padding makes the inner packet plus the two trailer bytes (pad length, next header: 4
# for IPv4) a multiple of 4.
#
# The 20-byte `key` of an SA is the 16-byte AES key followed by a 4-byte **salt**. The nonce
# is `salt || IV` (12 bytes) and the additional authenticated data (AAD) is `SPI || sequence
# number`, the 8 bytes of the header (RFC 4106 sections 4 and 5).
#
# Write `esp_seal(key, spi, seq, packet)` returning the ESP datagram, and `esp_open(key,
# datagram)` returning `(spi, seq, inner packet)` (trailer removed); `AESGCM.decrypt` raises
# `InvalidTag` for a datagram that was changed: let it.
#
# The check takes the live `esp-aes-gcm` session's keys from the server's export, seals an
# echo request from 10.8.0.2 to web with your `esp_seal` and sends it to the **running
# server** as if from the client: web must receive it. Then your `esp_open` opens a datagram
# the server sent, captured on r1's `eth0`, and must refuse it once one byte is changed.

# %%
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vpnlab.course import behaviour, esp_exercise


def esp_seal(key: bytes, spi: int, seq: int, packet: bytes) -> bytes:
    """TunSelected's ESP: one inner IPv4 packet into one datagram (RFC 4303, RFC 4106)."""
    # your code here (about 6 lines)
    ### BEGIN SOLUTION
    pad = -(len(packet) + 2) % 4
    plaintext = packet + bytes(range(1, pad + 1)) + bytes([pad, 4])
    header, iv = struct.pack("!II", spi, seq), struct.pack("!Q", seq)
    return header + iv + AESGCM(key[:16]).encrypt(key[16:] + iv, plaintext, header)
    ### END SOLUTION


def esp_open(key: bytes, datagram: bytes) -> tuple[int, int, bytes]:
    """SockSelected's ESP: (SPI, sequence number, inner packet); raises if not authentic."""
    # your code here (about 5 lines)
    ### BEGIN SOLUTION
    spi, seq = struct.unpack("!II", datagram[:8])
    plaintext = AESGCM(key[:16]).decrypt(key[16:] + datagram[8:16], datagram[16:], datagram[:8])
    return spi, seq, plaintext[: -2 - plaintext[-2]]
    ### END SOLUTION


lab.start_vpn("esp-aes-gcm")
behaviour.show(esp_exercise.check_esp_seal_open(lab, esp_seal, esp_open))

# %% [markdown]
# The grade comes from the next cell's hidden test: `nbgrader autograde` runs the same check
# with your functions on the instructor's side, in a fresh lab, and requires every fact.

# %%
### BEGIN HIDDEN TESTS
from vpnlab.course import behaviour, esp_exercise

behaviour.require(esp_exercise.check_esp_seal_open(lab, esp_seal, esp_open))
### END HIDDEN TESTS

# %% [markdown]
# ## Exercises
# **5.1** How many bytes does the `plain` tunnel add to an 84-byte ping? (Count what the
# tunnel adds, not the Ethernet header: `eth0` has that with or without the tunnel.)
#
# **5.2** How long is the `esp-aes-gcm` frame carrying that ping?
#
# **5.3** Which protocol stack does tshark give the FTP control packets on `tun0`?
#
# **5.4** What "SPI" does tshark show for a plain ping datagram? (Hint: the first four bytes of
# an IPv4 header of 84 bytes; give it as tshark writes it, a hex string.)

# %%
answer_5_1 = ...
### BEGIN SOLUTION
answer_5_1 = 28
### END SOLUTION
course.check_answer("5.1", answer_5_1)

# %%
answer_5_2 = ...
### BEGIN SOLUTION
answer_5_2 = 162
### END SOLUTION
course.check_answer("5.2", answer_5_2)

# %%
answer_5_3 = ...
### BEGIN SOLUTION
answer_5_3 = "raw:ip:tcp:ftp"
### END SOLUTION
course.check_answer("5.3", answer_5_3)

# %%
answer_5_4 = ...
### BEGIN SOLUTION
answer_5_4 = "0x45000054"
### END SOLUTION
course.check_answer("5.4", answer_5_4)

# %%
# The fixed facts of this notebook (5.1, 5.2, 5.3, 5.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "5.1": (answer_5_1, 28),
        "5.2": (answer_5_2, 162),
        "5.3": (answer_5_3, "raw:ip:tcp:ftp"),
        "5.4": (answer_5_4, "0x45000054"),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - On the external interface the tunnel is `eth:ethertype:ip:udp:udpencap:esp`; on `tun0`
#   the same traffic is `raw:ip:...` (no link layer), e.g. `raw:ip:tcp:ftp`.
# - The `plain` format is "ESP" only by port number; `esp-null` is real ESP, authenticated but
#   readable; `esp-aes-gcm` is encrypted: without keys only SPI, sequence and sizes show.
# - On `eth0` the outer IPv4 header carries the public addresses (192.0.2.2 <-> 198.51.100.2);
#   the tunnel addresses travel inside.
# - What the tunnel adds to a packet: 28 bytes for `plain` (outer IPv4 20 + UDP 8), 56 for
#   `esp-null` (+ ESP header 8, padding, pad length and next header, ICV 16), 64 for
#   `esp-aes-gcm` (+ IV 8). The 14-byte Ethernet header is on the wire with or without it.
# - tun0's MTU follows: 1500 - 20 - 8 - the ESP overhead at its largest = 1472 / 1443 / 1435.
# - With the session's exported keys (`vpnlab keys export`) tshark decrypts ESP and the stack
#   continues into the inner packet.
