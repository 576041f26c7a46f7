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
# # 2. Handshake, timeouts and the select loop
#
# From the design notes:
#
# > **Server**: Init(PORT) (UDP socket, bind) - CreateTunDev - Ifconfig - ServerConnection:
# > recvfrom() client Hello, sendto() client server Hello, SetRouting(0), while loop:
# > select on tunfd and the socket: TunSelected? read, encapsulate, sendto peer.
# > SockSelected? receive from socket, write to tun0. - CleanUp()
# >
# > **Client**: Init(PORT) - ClientConnection: set timeout for 2.5 seconds, sendto() server
# > client Hello, select() on sockfd till timeout: if recvfrom() server during this time,
# > continue, else terminate! - CreateTunDev - Ifconfig - SetRouting(1) - set timeout for 6
# > seconds - while loop: select on tunfd and socket; TunSelected / SockSelected; watch for
# > server response timeout - CleanUp()
#
# UDP has no `listen()`/`accept()`: the server's socket is bound to port 4500 and datagrams
# from anyone simply arrive; the Hello is what makes a "connection". In the code:
# `vpnlab/shell/transport.py: init_socket` (Init), `vpnlab/shell/client.py: client_connection`
# (the Hello and the 2.5 s wait), `vpnlab/core/server_core.py: ServerCore` (ServerConnection),
# `vpnlab/shell/tunnel.py: SelectLoop` (the select loop), `vpnlab/core/constants.py` (2.5 s, 6 s,
# the 2 s keepalive).
#
# We watch it all on the wire: dumpcap runs **inside** `r1`
# (`vpnlab/instruments/capture.py: start_capture`).

# %%
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt

from vpnlab.core.constants import CONNECT_TIMEOUT_S, HELLO_RETRY_S, KEEPALIVE_INTERVAL_S
from vpnlab.course import diagrams, figures
from vpnlab.course import notebook as course
from vpnlab.instruments import capture

lab = course.CourseLab("02_handshake_timeouts")
lab.up(vpn=False, cipher="plain")
work = Path("work")
work.mkdir(exist_ok=True)
print("timers:", CONNECT_TIMEOUT_S, "s connect,", HELLO_RETRY_S, "s Hello retry,",
      KEEPALIVE_INTERVAL_S, "s keepalive")

# %% [markdown]
# ## The plain handshake: a Hello and its answer
# The `plain` wire format is the notes' own: a text Hello, and then every inner IP packet as
# the whole UDP payload. We capture r1's `eth0` (UDP 4500 only), start the server and the
# client, and once the tunnel is up we also capture r1's `tun0`; then two pings, and 5 s of
# silence so that we see the keepalives.

# %%
def payload_kind(hexpayload: str) -> str:
    """What one plain datagram is: a control message (text) or an inner IP packet."""
    data = bytes.fromhex(hexpayload or "")
    if data.startswith(b"VPNLAB/1 "):
        return data[9:].split()[0].decode()  # HELLO, WELCOME, KEEPALIVE, BYE
    return "IP packet" if data[:1] and data[0] >> 4 == 4 else "other"


eth = capture.start_capture(lab.prefix, "r1", "eth0", work / "plain-eth0.pcapng", count=200,
                            duration_s=30, capture_filter="udp port 4500")
lab.start_vpn("plain")
tun = capture.start_capture(lab.prefix, "r1", "tun0", work / "plain-tun0.pcapng", count=200,
                            duration_s=30)
lab.sh("r1", "ping -c 2 -i 0.3 203.0.113.10")
time.sleep(5.0)
tun_file, eth_file = tun.stop(), eth.stop()

rows = capture.fields(eth_file, ["frame.time_epoch", "ip.src", "ip.dst", "udp.length",
                                 "udp.payload"])
t0 = float(rows[0][0])
wire = [(float(t) - t0, src, dst, int(n) - 8, payload_kind(p)) for t, src, dst, n, p in rows]
for t, src, dst, size, kind in wire:
    print(f"{t:7.3f} s  {src:>13} -> {dst:<13} {size:4} B  {kind}")
first = bytes.fromhex(rows[0][4])
print("\nthe first datagram, byte by byte:")
print(course.hexdump(first))
lab.record("plain_first_kinds", [w[4] for w in wire[:2]])
lab.record("plain_kinds", sorted({w[4] for w in wire}))

# %% [markdown]
# The first two datagrams are the handshake: `VPNLAB/1 HELLO` from r1, `VPNLAB/1 WELCOME
# 10.8.0.2/24` from r2 (the server assigns the client its tunnel address). Then the pings as
# `IP packet`s, and while nothing else is sent, a `KEEPALIVE` every 2 s from each side.
#
# ## The select loop, on a timeline
# Each daemon is one loop (`vpnlab/shell/tunnel.py: SelectLoop.turn`):
# 1. ask the core for its next deadline (a keepalive to send, or the 6 s liveness timeout);
# 2. `select()` on `tun0` and the socket until that deadline;
# 3. **TunSelected**: read the packets waiting on `tun0`, seal them, `sendto()` the peer;
# 4. **SockSelected**: `recvfrom()` the datagrams waiting, open them, `write()` them to `tun0`;
# 5. deadline passed: send a keepalive (or declare the peer lost).
#
# The figure puts the two captures on one time axis, from the client's point of view. Its
# lanes are **inferred from the capture timestamps**, not traced inside the daemon: a datagram
# from r1 on `eth0` is drawn as a `sendto`, one from r2 as SockSelected, a packet from 10.8.0.2
# on `tun0` as TunSelected, one to it as a `tun0` write, and each client keepalive also as a
# timer deadline. dumpcap stamps a packet when it crosses the interface, so a read is a little
# later than its dot and a send a little earlier; the daemon's own calls are not measured.

# %%
tun_rows = capture.fields(tun_file, ["frame.time_epoch", "ip.src"])
events = []
for t, src, _dst, _size, kind in wire:
    if src == "192.0.2.2":
        lane = "sendto (eth0 out)"
        label = "data sealed" if kind == "IP packet" else f"{kind} sent"
        if kind == "KEEPALIVE":
            events.append((t, "timer deadline", "keepalive timer"))
    else:
        lane = "SockSelected (eth0 in)"
        label = "data opened" if kind == "IP packet" else f"{kind} received"
    events.append((t, lane, label))
for t, src in tun_rows:
    if src == "10.8.0.2":
        events.append((float(t) - t0, "TunSelected (tun0 read)", "ping request read"))
    else:
        events.append((float(t) - t0, "tun0 write", "ping reply written"))
lanes = ["TunSelected (tun0 read)", "sendto (eth0 out)", "SockSelected (eth0 in)",
         "tun0 write", "timer deadline"]
connected = next(t for t, *_, kind in wire if kind == "WELCOME")
figures.draw_timeline(events, lanes, "the client's select loop (plain format)",
                     marks=[(connected, "connected")])
plt.show()
keepalive_times = [t for t, src, *_, kind in wire if kind == "KEEPALIVE" and src == "192.0.2.2"]
gaps = [round(b - a, 1) for a, b in zip(keepalive_times, keepalive_times[1:], strict=False)]
print("client keepalives at", [round(t, 2) for t in keepalive_times], "gaps", gaps)
lab.record("keepalive_gaps", gaps)

# %% [markdown]
# ## A stranger's datagram: the notes' `nc -u` test
# The notes test the server by typing text at it with `nc -u 198.51.100.2 4500`. netcat is
# often not installed (Debian's `netcat-openbsd` is a package of its own), so we send the same
# with a Python one-liner in r1: `hello` from a fresh UDP socket, that is from a port the
# server has no session for. The server does not answer it (no reply, no error) and does not
# write it to `tun0`: it drops it and counts the drop in its status file (`server.json` in the
# lab's state folder, `"counters"` -> `"drops"`, rewritten every second; `vpnlab lab status`
# shows their sum).

# %%
print("nc in r1:", lab.run("r1", "which nc").stdout.strip() or "not installed")
server_json = lab.state_dir() / "server.json"


def server_drops():
    return json.loads(server_json.read_text())["counters"]["drops"]


drops_before = server_drops()
hello = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
         ".sendto(b'hello\\n', ('198.51.100.2', 4500))")
print("r1$ python -c", hello)
lab.run("r1", [sys.executable, "-c", hello], check=True)
course.wait_for(lambda: server_drops() != drops_before, timeout_s=4, interval_s=0.2)
drops_after = server_drops()
print("server drops before:", drops_before, " after:", drops_after)
print("\n".join(line for line in lab.log("server").splitlines() if "dropped" in line))
lab.record("stranger_drops", {k: n - drops_before.get(k, 0) for k, n in drops_after.items()
                              if n != drops_before.get(k, 0)})

# %% [markdown]
# ## A whole session, as a sequence diagram
# One plain session from start to end, captured on r1's `eth0`: the VPN starts (Hello,
# Welcome), stays idle for 4.5 s (keepalives, one from each side every 2 s), and stops
# (SIGTERM: the client's CleanUp sends a Bye). Each arrow is one captured datagram.

# %%
lab.stop_vpn()
session = capture.start_capture(lab.prefix, "r1", "eth0", work / "plain-session.pcapng",
                                count=50, duration_s=20, capture_filter="udp port 4500")
lab.start_vpn("plain")
time.sleep(4.5)
lab.stop_vpn()
rows = capture.fields(session.stop(), ["frame.time_epoch", "ip.src", "udp.payload"])
start = float(rows[0][0])
messages = [(float(t) - start, src == "192.0.2.2", payload_kind(p)) for t, src, p in rows]
diagrams.draw_sequence(messages, title="a plain session on r1's eth0: from a real capture")
plt.show()
lab.record("session_kinds", [(left, kind) for _, left, kind in messages])

# %% [markdown]
# ## The ESP handshake: every peer its own key
# With the default `esp-aes-gcm` (and `esp-null`) the lab gives every peer a key pair of its
# own, as WireGuard does: the server has `identity/server.key` and knows its peers in
# `identity/peers.toml` (each client's public key, its tunnel address, the networks behind
# it); each client has one config file, `identity/r1.conf`, with its own private key and the
# server's public key, which it *pins*. (`vpnlab keys server`, `add-peer` and `revoke` make and
# change them; the lab runs them for you.) So the server gives 10.8.0.2 to whoever holds r1's
# key, not to whoever comes first, and no client can pose as another.
#
# The Hello and the Welcome are the two messages of **Noise IKpsk2**, a published pattern
# (WireGuard's): the Hello carries the client's fresh ephemeral public key, its static key
# encrypted, and (encrypted) its SPI and a timestamp; the Welcome the server's ephemeral key and
# (encrypted) the client's address. Both sides end with two keys, one per direction, which
# become the two ESP SAs. Both messages start with four zero bytes, the RFC 3948 "non-ESP
# marker". On UDP 4500 that marker means "this is not ESP, IKE follows" (RFC 3948), so
# Wireshark does mistake them, not for ESP but for **IKE**: it shows them as
# `udpencap:isakmp` and reads the Noise bytes as IKE header fields (`tshark -V` calls them a
# malformed ISAKMP packet). They are neither ESP nor IKE; only the data after them is ESP.
# (`vpnlab capture decode` loads a Lua dissector,
# `vpnlab/instruments/vpnlab.lua`, that names them "vpnlab Hello/Welcome" instead.)
#
# Keys do not live forever: the client starts a new handshake every 120 s (here every 10 s, so
# that we see it), the **rekey**. Watch the SPIs change, with no ping lost.

# %%
lab.stop_vpn()
esp = capture.start_capture(lab.prefix, "r1", "eth0", work / "esp-eth0.pcapng", count=200,
                            duration_s=30, capture_filter="udp port 4500")
lab.start_vpn("esp-aes-gcm", client_args=["--rekey-after", "10"])
keys = lab.state_dir() / "identity"
print((keys / "peers.toml").read_text())
print("\n".join("private_key = (secret)" if line.startswith("private_key") else line
                for line in (keys / "r1.conf").read_text().splitlines()))
print(lab.sh("r1", "ping -c 1 203.0.113.10", show=False).splitlines()[-1])
time.sleep(11)  # past the 10 s rekey
print(lab.sh("r1", "ping -c 1 203.0.113.10", show=False).splitlines()[-1])
esp_file = esp.stop()


def esp_kind(hexpayload: str) -> str:
    """Hello / Welcome (by the type after the non-ESP marker), else ESP with its SPI."""
    data = bytes.fromhex(hexpayload)
    if data[:4] == bytes(4):
        return {1: "Hello (psk)", 2: "Welcome (psk)", 3: "Hello", 4: "Welcome"}.get(data[4], "?")
    return f"ESP, SPI {data[:4].hex()}"


esp_rows = capture.fields(esp_file, ["frame.time_epoch", "ip.src", "udp.length",
                                     "frame.protocols", "udp.payload"])
t0 = float(esp_rows[0][0])
for t, src, n, stack, p in esp_rows:
    print(f"{float(t) - t0:6.2f} s {src:>13} {int(n) - 8:4} B  {esp_kind(p):<22} {stack}")
kinds = [esp_kind(row[4]) for row in esp_rows]
lab.record("esp_handshake_stacks", [row[3] for row in esp_rows[:2]])
lab.record("esp_data_stack", esp_rows[2][3] if len(esp_rows) > 2 else None)
lab.record("identity_hellos", kinds.count("Hello"))
lab.record("esp_spis", len({k for k in kinds if k.startswith("ESP")}))

# %% [markdown]
# The first Hello (146 bytes: the Noise message and its two MACs) and Welcome (63 bytes)
# open the session; ESP follows, with one SPI per direction. About 10 s later the client
# sends a new Hello: the rekey. From then on
# the datagrams carry two new SPIs (the old keys still open late datagrams for 15 s). A Hello
# from a key that is not in `peers.toml`, a replayed Hello, or one for another server's key
# gets no answer at all.

# %% [markdown]
# ## Under attack: mac1, and a cookie before any Diffie-Hellman
# Reading a Noise Hello costs the server four X25519 operations (about 340 us of CPU) before
# it knows who sent it. A student with a loop could send thousands a second. So, as WireGuard
# does (its paper, section 5.4; `vpnlab/core/cookie.py`), every Hello ends with two MACs:
#
# - **mac1** = MAC(HASH("mac1----" + server public key), the Hello before it). Only someone
#   who knows the server's public key can make it; a Hello without it is dropped for the
#   price of one BLAKE2s ("bad mac1"), before any Diffie-Hellman.
# - **mac2** = MAC(cookie, the Hello before it), or zeros. Every client knows the server's
#   public key, so mac1 alone does not stop a flood from spoofed addresses. When the server
#   is **under load** (more than 50 Hellos a second, or its handshake queue filling), a Hello
#   without a valid mac2 gets a **cookie reply** instead of a Diffie-Hellman: a 16-byte cookie
#   = MAC(secret, the sender's address and port), the secret new every 2 minutes, sealed
#   with ChaCha20-Poly1305 (WireGuard uses XChaCha20; the Python `cryptography` package has
#   only the 12-byte-nonce ChaCha20-Poly1305, with a random nonce: the same cipher) under a
#   key from the server's public key, bound to the Hello's mac1. A spoofed sender never sees
#   it; a real client sends its Hello again at once, with mac2, and is answered.
#
# After that, Diffie-Hellmans are rate-limited per source and done at most two per wake-up
# of the loop, from a bounded queue, after the data: handshakes never starve the tunnel.
#
# Below, the isp node sends a **bounded burst of junk Hellos** (2,000 a second for 4 s, from
# one made-up address: `vpnlab/instruments/flood.py`) while the VPN starts. r1's capture shows
# its Hello, the server's cookie reply, the Hello again (now with mac2) and the Welcome.

# %%
from vpnlab.lab.nodes import popen_in

lab.stop_vpn()
attack = capture.start_capture(lab.prefix, "r1", "eth0", work / "cookie-eth0.pcapng",
                               count=40, duration_s=20, capture_filter="udp port 4500")
burst = popen_in(lab.prefix, "isp", [sys.executable, "-m", "vpnlab.cli.flood", "--kind", "junk",
                                     "--server", "198.51.100.2", "--sources", "203.0.113.77",
                                     "--rate", "2000", "--seconds", "4"],
                 stdout=subprocess.PIPE, text=True)
time.sleep(0.5)  # the burst under way: the server will be under load from its first second
lab.start_vpn("esp-aes-gcm")
print("burst:", burst.communicate(timeout=30)[0].strip())
time.sleep(1.5)  # the status file is written once a second
cookie_file = attack.stop()
drops = lab.status()["tunnel"]["server"]["counters"]["drops"]
print({k: v for k, v in drops.items() if k in ("bad mac1", "under load: cookie reply sent")})
cookie_rows = capture.fields(cookie_file, ["frame.time_epoch", "ip.src", "udp.length",
                                           "vpnlab.message", "vpnlab.has_cookie"],
                             dissector=True)
t0 = float(cookie_rows[0][0])
for t, src, n, message, has_cookie in cookie_rows[:6]:
    mac2 = {"True": " (mac2: a cookie)", "False": " (mac2: zeros)"}.get(has_cookie, "")
    print(f"{float(t) - t0:6.3f} s {src:>13} {int(n) - 8:4} B  {message or 'ESP'}{mac2}")
lab.record("cookie_messages", [row[3] for row in cookie_rows if row[3]][:4])
lab.record("junk_dropped", drops.get("bad mac1", 0))

# %% [markdown]
# Four handshake messages instead of two: Hello (146 bytes, mac2 zeros), **Cookie reply** (50
# bytes), Hello (the same Noise message, mac2 now the cookie's), Welcome. Thousands of junk
# Hellos cost the server one hash each ("bad mac1" in its counters), and none of them got a
# reply. `vpnlab bench --flood` measures the same at 12,000 junk Hellos a second, and 4,000 a
# second with a valid mac1 from 250 spoofed sources (`docs/security.md`).

# %% [markdown]
# ## Server down: the 2.5 s connect timeout
# Now we stop both daemons and run the client alone, in the foreground, in `r1`. It sends its
# Hello (again every 0.5 s), `select()`s on the socket, and after 2.5 s without an answer it
# gives up: "server unreachable", exit code 3, nothing left behind (no tun0, no routes).
# The kernel of r2 answers each Hello with ICMP "port unreachable": nobody listens on 4500.

# %%
lab.stop_vpn()
down = capture.start_capture(lab.prefix, "r1", "eth0", work / "down-eth0.pcapng", count=50,
                             duration_s=20, capture_filter="udp port 4500 or icmp")
start = time.monotonic()
done = lab.run("r1", [sys.executable, "-m", "vpnlab", "client", "--server", "198.51.100.2",
                     "--cipher", "plain"], timeout_s=20)
took = time.monotonic() - start
down_file = down.stop()
print(done.stdout + done.stderr)
print(f"exit code {done.returncode} after {took:.2f} s")
lab.record("unreachable_rc", done.returncode)
lab.record("unreachable_s", round(took, 2))
lab.record("unreachable_msg", "server unreachable" in done.stdout + done.stderr)
lab.sh("r1", "ip -br link")

# %%
rows = capture.fields(down_file, ["frame.time_epoch", "ip.src", "frame.protocols"])
t0 = float(rows[0][0])
events = [(float(t) - t0, "r1 sends" if src == "192.0.2.2" else "r2 answers",
           "Hello" if src == "192.0.2.2" else "ICMP port unreachable") for t, src, _ in rows]
hellos = [e for e in events if e[2] == "Hello"]
figures.draw_timeline(events, ["r1 sends", "r2 answers"], "server down: Hello, retries, timeout",
                     marks=[(CONNECT_TIMEOUT_S, "2.5 s: give up")])
plt.show()
print(len(hellos), "Hellos at", [round(e[0], 2) for e in hellos])
lab.record("unreachable_hellos", len(hellos))

# %% [markdown]
# ## Exercises
# **2.1** How many bytes is the plain `VPNLAB/1 HELLO` datagram's UDP payload? (Count the
# hexdump above, or `len()` it.)
#
# **2.2** With the server down, how many Hellos did the client send before giving up? Work it
# out from the timers: one at once, then one every `HELLO_RETRY_S` while less than
# `CONNECT_TIMEOUT_S` has passed.
#
# **2.3** Which exit code means "server unreachable"?
#
# **2.4** When the tunnel is idle, how often (seconds) does each side send a keepalive?

# %%
answer_2_1 = ...
### BEGIN SOLUTION
answer_2_1 = 15
### END SOLUTION
course.check_answer("2.1", answer_2_1)

# %%
answer_2_2 = ...
### BEGIN SOLUTION
answer_2_2 = 5
### END SOLUTION
course.check_answer("2.2", answer_2_2)

# %%
answer_2_3 = ...
### BEGIN SOLUTION
answer_2_3 = 3
### END SOLUTION
course.check_answer("2.3", answer_2_3)

# %%
answer_2_4 = ...
### BEGIN SOLUTION
answer_2_4 = 2
### END SOLUTION
course.check_answer("2.4", answer_2_4)

# %%
# The fixed facts of this notebook (2.1, 2.2, 2.3, 2.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "2.1": (answer_2_1, 15),
        "2.2": (answer_2_2, 5),
        "2.3": (answer_2_3, 3),
        "2.4": (answer_2_4, 2),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - **Init**: a UDP socket bound to port 4500; no listen/accept. **ClientConnection**: a Hello,
#   then `select()` with a timeout; the server's answer assigns the tunnel address.
# - With the server down the client retries every 0.5 s and gives up after **2.5 s** (exit 3)
#   without creating `tun0` or touching routes.
# - The ESP handshake is Noise IKpsk2: each peer its own key, the server knows its peers, the
#   client pins the server's key; it travels behind a non-ESP marker, so Wireshark takes it
#   for IKE (`udpencap:isakmp`) although it is not IKE, and the data is ESP; a rekey every
#   120 s gives new SPIs and keys without losing a packet.
# - A stranger's datagram (`nc -u`, or the Python one-liner) gets no answer: the server drops
#   it and counts it (`unknown peer` in `server.json`'s drops).
# - One **select loop** per daemon: TunSelected (tun0 -> seal -> sendto), SockSelected
#   (recvfrom -> open -> tun0), and a timer for keepalives (every 2 s when idle) and for the
#   6 s liveness timeout (notebook 6).
