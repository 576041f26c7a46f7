# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13. The MTU: headers, probes, a black hole and MSS clamping
#
# Every datagram of the tunnel must fit the path between r1 and r2: 1500 bytes of Ethernet
# payload (`EXTERNAL_MTU`). The tunnel puts its own headers in front of each inner packet, so
# the inner packets must be smaller: that is **tun0's MTU**, which Ifconfig sets. Here we
# derive it from the headers, probe it with `ping -M do` (DF set: "do not fragment"), break
# it on purpose (tun0 at 1500 and an isp that drops fragments: a **black hole**) and see how
# the daemons' **MSS clamping** keeps TCP out of trouble. In the code: `tun_mtu` in
# `vpnlab/core/constants.py`, `Algorithm.overhead_bytes` in `vpnlab/wire/crypto.py`,
# `clamp_mss` in `vpnlab/core/packet.py`.

# %%
import matplotlib.pyplot as plt

from vpnlab.core.constants import EXTERNAL_MTU, OUTER_HEADERS_BYTES, tun_mtu
from vpnlab.course import figures
from vpnlab.course import notebook as course
from vpnlab.instruments import capture
from vpnlab.wire.crypto import ESP_HEADER, ICV_BYTES, algorithm

lab = course.CourseLab("13_mtu")
lab.up()  # the default cipher, esp-aes-gcm
WEB = "203.0.113.10"
lab.sh("r1", "ip link show tun0")

# %% [markdown]
# ## The headers
# On the wire each datagram is: outer IPv4 (20) + UDP (8) = `OUTER_HEADERS_BYTES`, then the
# format's own bytes. `plain` adds nothing. ESP (RFC 4303) adds its header (SPI and sequence
# number, 8), an IV (AES-GCM: 8; NULL: none), then after the inner packet a trailer: padding,
# pad length (1) and next header (1), the padding making inner + trailer a multiple of 4, and
# the integrity check value (ICV, 16). The padding depends on the inner packet's length (0 to
# 3 bytes): the daemons count the worst case (3), so **every** packet up to tun0's MTU fits.

# %%
def esp_fixed(name):
    """ESP's bytes apart from the padding: header, IV, pad length + next header, ICV."""
    return ESP_HEADER.size + algorithm(name).iv_bytes + 2 + ICV_BYTES


def largest_inner(fixed, align=4):
    """The largest inner packet whose datagram fits: inner + 2 (trailer) padded to align."""
    best = 0
    for inner in range(EXTERNAL_MTU):
        padded = -(-(inner + 2) // align) * align
        if OUTER_HEADERS_BYTES + fixed - 2 + padded <= EXTERNAL_MTU:
            best = inner
    return best


table = {"plain": (0, tun_mtu(0), EXTERNAL_MTU - OUTER_HEADERS_BYTES)}
for name in ("esp-null", "esp-aes-gcm"):
    table[name] = (algorithm(name).overhead_bytes, tun_mtu(algorithm(name).overhead_bytes),
                   largest_inner(esp_fixed(name)))
print(f"{'format':12} {'overhead (worst)':>17} {'tun0 MTU':>9} {'largest that fits':>18}")
for name, (overhead, mtu, largest) in table.items():
    print(f"{name:12} {overhead:>17} {mtu:>9} {largest:>18}")
lab.record("mtu_table", table)

rows = [("plain", [("IPv4", 20), ("UDP", 8), ("inner packet", 1472)])]
rows.append(("esp-null", [("IPv4", 20), ("UDP", 8), ("ESP", 8), ("inner packet", 1443),
                          ("padding", 3), ("trailer", 2), ("ICV", 16)]))
rows.append(("esp-aes-gcm", [("IPv4", 20), ("UDP", 8), ("ESP", 8), ("IV", 8),
                             ("inner packet", 1435), ("padding", 3), ("trailer", 2), ("ICV", 16)]))
figures.draw_budget(rows, EXTERNAL_MTU)
plt.title("tun0's MTU: what is left of 1500 bytes (worst-case padding)")
plt.show()

# %% [markdown]
# The derived MTU (1472, 1443, 1435) is safe for every length. A packet a few bytes longer
# can still fit when its padding happens to be small: with esp-aes-gcm up to 1438 bytes, with
# esp-null 1446 (the last column). The daemons do not rely on that luck.
#
# ## Probing with `ping -M do`
# `ping -s N` sends N bytes of ICMP data: the IPv4 packet is N + 8 (ICMP) + 20 (IPv4).
# `-M do` sets DF and forbids fragmenting, so a packet too big for the first link fails at
# once, with the MTU in the error. Outside the tunnel (r1 to r2) and through it (r1 to web):

# %%
def probe(dst, size):
    """One DF ping of ``size`` data bytes: True if answered; prints the outcome."""
    done = lab.run("r1", ["ping", "-M", "do", "-c", "1", "-W", "1", "-s", str(size), dst])
    said = (done.stdout + done.stderr).strip().splitlines()
    print(f"ping -M do -s {size} {dst}: {'answered' if done.returncode == 0 else said[-1]}")
    return done.returncode == 0


outside = [probe("198.51.100.2", 1472), probe("198.51.100.2", 1473)]
inside = [probe(WEB, 1407), probe(WEB, 1408)]
lab.record("probes", {"outside": outside, "inside": inside})

# %% [markdown]
# 1472 + 28 = 1500 fits eth0; 1407 + 28 = 1435 fits tun0. One byte more and the kernel
# refuses before anything is sent ("message too long"; older pings add "mtu=1435"): it knows
# the MTU of the first link. What it cannot know is what lies **behind** the tunnel's daemon.
#
# ## A black hole
# Predict first: we restart the VPN with tun0 at MTU **1500** (`--mtu 1500`, both ends), and
# make the isp drop IP fragments (many firewalls do). A fetch of 1000 bytes from web, then one
# of 200 KB: which of them will finish?

# %%
prediction_13_3 = ...
### BEGIN SOLUTION
prediction_13_3 = False
### END SOLUTION
course.predict("13.3", prediction_13_3)

# %%
lab.stop_vpn()
lab.start_vpn(server_args=["--mtu", "1500"], client_args=["--mtu", "1500"])
lab.sh("r1", "ip link show tun0")
cap = capture.start_capture(lab.prefix, "r1", "eth0", "work/mtu-fragments.pcapng", count=20,
                            duration_s=5, capture_filter="host 198.51.100.2 and not icmp")
probe(WEB, 1472)
frames = capture.fields(cap.stop(), ["ip.id", "ip.len", "ip.flags.mf", "ip.frag_offset"])
print("r1 eth0 for that one ping (id, length, more fragments, offset):")
for row in frames:
    print("  ", row)
lab.record("fragments", len(frames))

# %% [markdown]
# The ping worked, but look at the wire: the 1500-byte inner packet became a datagram of
# 1500 + 28 + up to 37 bytes, too big for eth0, so r1's kernel **fragmented** it (the same IP
# id, "more fragments" set on the first, an offset on the second), and r2 put it back
# together. Now the isp drops fragments:

# %%
lab.sh("isp", "nft add table ip nofrag")
lab.sh("isp", "nft add chain ip nofrag drops '{ type filter hook forward priority 0; }'")
lab.sh("isp", "nft add rule ip nofrag drops ip frag-off and 0x3fff != 0 counter drop")


def fetch(size, timeout_s=4):
    """curl of ``size`` bytes from web: (bytes received, seconds)."""
    out = lab.run("r1", ["curl", "-s", "-m", str(timeout_s), "-o", "/dev/null", "-w",
                         "%{size_download} %{time_total}", f"http://{WEB}/bytes/{size}"]).stdout
    got, took = out.split()
    print(f"fetch {size} bytes: {got} received in {float(took):.2f} s")
    return int(got)


small_hole, big_hole = fetch(1000), fetch(200_000)
probe(WEB, 1300)
probe(WEB, 1472)
lab.sh("isp", "nft list chain ip nofrag drops")
lab.record("black_hole", {"small": small_hole, "big": big_hole})

# %% [markdown]
# That is a black hole: small things work (the TCP handshake, a ping of 1300, 1000 bytes of
# HTTP), big things vanish without any error: the inner TCP sends full 1460-byte segments
# (its MSS, from tun0's 1500), each becomes two fragments, the isp drops them, and the
# download stalls until curl gives up. Nobody sends an ICMP "fragmentation needed" back:
# the inner packets were never too big for anything the inner TCP can see.
#
# Where exactly is the edge? Bisect it with DF pings through the hole:

# %%
low, high = 1300, 1472  # low crosses, high does not
while high - low > 1:
    middle = (low + high) // 2
    if probe(WEB, middle):
        low = middle
    else:
        high = middle
print(f"largest ping through the black hole: -s {low} (an inner packet of {low + 28} bytes)")
lab.record("largest_ping_payload", low)

# %% [markdown]
# ## The fix: tun0's MTU from the headers, and MSS clamping
# Back to the derived MTU: the kernel now refuses (or TCP avoids) any inner packet whose
# datagram would not fit, so nothing is fragmented and the isp's rule has nothing to drop.

# %%
lab.stop_vpn()
lab.start_vpn()
lab.sh("r1", "ip link show tun0")
big_fixed = fetch(200_000)
lab.record("big_fixed", big_fixed)

# %% [markdown]
# TCP learns how big its segments may be from the **MSS** option of the SYNs: each side
# announces its own MTU minus 40 (IPv4 + TCP headers). r1's kernel announces 1435 - 40 =
# 1395, but web, on a 1500 link, announces 1460, and r1 would believe it. So the daemons
# **clamp** the MSS of every SYN they read from tun0 to tun0's MTU - 40: the core does it as it
# seals the packet (`ClientCore.send_packets`, `ServerCore.send_packets`, their `mss_clamp`).
# We capture the handshake on web's eth0 and on r1's tun0:

# %%
syn = "tcp[tcpflags] & tcp-syn != 0"
at_web = capture.start_capture(lab.prefix, "web", "eth0", "work/mtu-syn-web.pcapng", count=10,
                               duration_s=5, capture_filter=syn)
at_r1 = capture.start_capture(lab.prefix, "r1", "tun0", "work/mtu-syn-r1.pcapng", count=10,
                              duration_s=5, capture_filter=syn)
fetch(1000)
names = ["ip.src", "tcp.flags.str", "tcp.options.mss_val"]
mss = {"web eth0": capture.fields(at_web.stop(), names),
       "r1 tun0": capture.fields(at_r1.stop(), names)}
for where, seen in mss.items():
    print(where)
    for src, flags, value in seen:
        print(f"   from {src:>13} {flags:>12}  MSS {value}")
lab.record("mss", mss)

# %% [markdown]
# On web's eth0 the SYN-ACK leaves with MSS 1460; on r1's tun0 it arrives with 1395: r2's
# daemon read it from its tun0 and lowered it (the checksum updated, RFC 1624). r1's own SYN
# says 1395 in both places. So a TCP inside the tunnel never sends a segment whose datagram
# would need fragmenting, whatever the far end's MTU.
#
# ## Exercises
# **13.1** What tun0 MTU does the `plain` format get?
#
# **13.2** And `esp-aes-gcm` (the MTU the daemons set, worst-case padding)?
#
# **13.3** With tun0 at 1500 and fragments dropped, did the 200 KB fetch finish?
# (`True`/`False`; you predicted it above.)
#
# **13.4** What was the largest `ping -s` that crossed the black hole?
#
# **13.5** Which MSS did r1 see in web's SYN-ACK?

# %%
answer_13_1 = ...
### BEGIN SOLUTION
answer_13_1 = 1472
### END SOLUTION
course.check_answer("13.1", answer_13_1)

# %%
answer_13_2 = ...
### BEGIN SOLUTION
answer_13_2 = 1435
### END SOLUTION
course.check_answer("13.2", answer_13_2)

# %%
answer_13_3 = ...
### BEGIN SOLUTION
answer_13_3 = False
### END SOLUTION
course.check_answer("13.3", answer_13_3)

# %%
answer_13_4 = ...
### BEGIN SOLUTION
answer_13_4 = 1410
### END SOLUTION
course.check_answer("13.4", answer_13_4, lab)

# %%
answer_13_5 = ...
### BEGIN SOLUTION
answer_13_5 = 1395
### END SOLUTION
course.check_answer("13.5", answer_13_5)

# %%
# The fixed facts of this notebook (13.1, 13.2, 13.3, 13.4, 13.5) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "13.1": (answer_13_1, 1472),
        "13.2": (answer_13_2, 1435),
        "13.3": (answer_13_3, False),
        "13.4": (answer_13_4, 1410),
        "13.5": (answer_13_5, 1395),
    }
)
### END HIDDEN TESTS

# %% [markdown]
# **Explain 13.4** in a few sentences: why is the edge of the black hole a few bytes above
# 1435 - 28, and why do the daemons still use 1435?

# %%
explanation_13_4 = ...
### BEGIN SOLUTION
explanation_13_4 = (
    "ESP pads the inner packet and its 2-byte trailer to a multiple of 4, so 0 to 3 bytes of "
    "padding: an inner packet of 1438 needs none and its datagram is exactly 1500 bytes. "
    "The daemons count the worst case, 3 bytes, so that every length up to the MTU fits."
)
### END SOLUTION
course.explain("13.4", explanation_13_4)

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - tun0's MTU = 1500 - 28 (outer IPv4 + UDP) - the format's overhead: 1472 (plain), 1443
#   (esp-null), 1435 (esp-aes-gcm, with the worst-case 3 bytes of ESP padding).
# - `ping -M do -s N` probes a path: N + 28 is the packet; the first link's MTU is enforced
#   locally, with an error.
# - A tun0 MTU too big makes the daemon's datagrams fragment; a path that drops fragments
#   then swallows every big packet silently while small ones pass: a black hole.
# - MSS clamping lowers the MSS of the SYNs crossing the tunnel to tun0's MTU - 40, so TCP
#   never sends what would not fit.
