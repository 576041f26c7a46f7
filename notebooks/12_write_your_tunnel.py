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
# # 12. Write your own tunnel
#
# So far you have read and run vpnlab's tunnel. Now you write one: the SEED lab's Tasks 4 and
# 5, the heart of every VPN. From the design notes:
#
# > TunSelected: read the packet from tun0 [...] send it to the other end through the socket.
# > SockSelected: read the datagram from the socket [...] write it to tun0.
#
# The lab runs **without** vpnlab's daemons (`lab up --no-vpn`). This notebook gives each of
# r1 and r2 what the daemons would have made (CreateTunDev, Ifconfig, Init(PORT)): a `tun0`
# (r1: 10.8.0.2, r2: 10.8.0.1), a UDP socket bound to port 4500, and the routes (web through
# r1's `tun0`, forwarding in r2, and on the isp a route back to 10.8.0.0/24, so no NAT: web
# sees the tunnel address). Your code moves the packets, in the **plain** format: each IP
# packet is the payload of one UDP datagram, nothing added. It runs in two threads of this
# notebook for a few seconds, one per node (`vpnlab/course/mytunnel.py` does the running and
# the observing; read it if you like).

# %%
import contextlib
import os
import select
import socket
import time

from IPython.display import HTML, display

from vpnlab.course import mytunnel
from vpnlab.course import notebook as course

lab = course.CourseLab("12_write_your_tunnel")
lab.up(vpn=False)
ends = mytunnel.prepare(lab)
lab.sh("r1", "ip addr show tun0")
lab.sh("r1", "ip route get 203.0.113.10")
lab.sh("isp", "ip route get 10.8.0.2")

# %% [markdown]
# What you are about to build, as one ping from r1 to web will cross it (your code is the two
# "your loop" steps; the rest is the kernel and the routes this notebook set):

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_ping_path(
    [
        ("r1: ping", "10.8.0.2 -> 203.0.113.10\nICMP echo request", "203.0.113.10/32 dev tun0"),
        ("r1: your loop", "os.read(tun) -> sock.sendto(peer)", "TunSelected"),
        (
            "r1 eth0 -> isp",
            "192.0.2.2:4500 ->\n198.51.100.2:4500 UDP [inner]",
            "plain: nothing added",
        ),
        (
            "r2: your loop",
            "sock.recvfrom: from peer?\n-> os.write(tun)",
            "SockSelected: strangers dropped",
        ),
        ("r2: forwards", "10.8.0.2 -> 203.0.113.10\nunchanged, no NAT", "ip_forward=1"),
        ("web", "echo reply to 10.8.0.2", "the isp routes 10.8.0.0/24 to r2"),
    ],
    title="your tunnel: one ping r1 -> web, and back",
    back=(
        "the reply: the same way back\n(r2's loop reads it from tun0,\n"
        "r1's loop writes it to tun0)"
    ),
)
plt.show()

# %% [markdown]
# ## Task 4: one way
# Write `forward(tun, sock, peer, until)`: until the clock `time.monotonic()` reaches `until`,
# wait (at most 0.2 s at a time, so the loop can notice the deadline) until `tun` has a packet,
# read it (`os.read`) and send it to `peer`, an `(address, port)` pair, as one datagram
# (`sock.sendto`). `tun` is the file descriptor of `tun0` (non-blocking), `sock` the UDP socket.
# That is TunSelected alone: about 5 lines.

# %%
def forward(tun: int, sock: socket.socket, peer: tuple[str, int], until: float) -> None:
    """TunSelected only: every packet read from tun0 goes to peer as one UDP datagram."""
    # your code here (about 5 lines)
    ### BEGIN SOLUTION
    while time.monotonic() < until:
        ready, _, _ = select.select([tun], [], [], 0.2)
        if ready:
            sock.sendto(os.read(tun, 65535), peer)
    ### END SOLUTION


# %% [markdown]
# The check runs your `forward` in r1 for 5 s, pings web 3 times from r1 and listens on r2's
# socket. Each echo request should arrive there as one datagram; no answer can come back yet.

# %%
course.observe("12.1", mytunnel.try_one_way(lab, forward, ends))

# %% [markdown]
# ## Task 5: both ways, with select
# Now `tunnel(tun, sock, peer, until)`: one loop that waits for **either** `tun` or `sock`
# (one `select` on both) and then does what is ready:
# - **TunSelected**: a packet from `tun` goes to `peer`, as in Task 4;
# - **SockSelected**: a datagram from the socket (`sock.recvfrom`) is written to `tun`
#   (`os.write`), but only if it came from `peer`, address **and** port: anybody can send a
#   UDP datagram to port 4500, and whatever you write to `tun0` the kernel routes on into your
#   network.
# - A datagram that holds no IP packet (a truncated one, garbage) makes `os.write` fail
#   with `OSError` (EINVAL): drop it and go on. One bad datagram must not stop the tunnel.
#
# The same function runs in r1 (peer: r2's 198.51.100.2) and in r2 (peer: r1's 192.0.2.2).
# About 14 lines.

# %%
def tunnel(tun: int, sock: socket.socket, peer: tuple[str, int], until: float) -> None:
    """The select loop: TunSelected (tun0 -> UDP) and SockSelected (UDP from peer -> tun0)."""
    # your code here (about 10 lines)
    ### BEGIN SOLUTION
    while time.monotonic() < until:
        ready, _, _ = select.select([tun, sock], [], [], 0.2)
        if tun in ready:
            sock.sendto(os.read(tun, 65535), peer)
        if sock in ready:
            datagram, source = sock.recvfrom(65535)
            if source != peer:
                continue  # a stranger, or the peer's address on another port: dropped
            # not an IP packet (truncated, garbage): dropped, the loop goes on
            with contextlib.suppress(OSError):
                os.write(tun, datagram)
    ### END SOLUTION


# %% [markdown]
# The check runs your `tunnel` in both nodes for 8 s and attacks it first: the isp (a
# stranger) sends r2 a datagram carrying a packet "from 10.8.0.2" to web, r1 sends one from
# port 4501 instead of 4500, the isp sends r1 one carrying a packet "from web", and each
# peer's own address and port sends a truncated and a garbage datagram. A capture on web's
# `eth0` shows whether any forged packet got through. Then it pings web from r1 and fetches
# who-am-I. Everything it asks is observed, nothing is compared with a stored answer: no
# forged packet at web, the ping answered, web seeing 10.8.0.2 (no NAT: the packet crossed
# your tunnel unchanged), and r1's `eth0` showing your datagrams both ways.

# %%
course.observe("12.2", mytunnel.try_tunnel(lab, tunnel, ends))

# %%
wire = mytunnel.wire("work/mytunnel-r1-eth0.pcapng")
print("r1 eth0, UDP 4500 (outer src -> dst: inner src -> dst, protocol):")
for src, dst, inner in wire[:8]:
    print(f"  {src:>12} -> {dst:<12}: {inner}")

# %% [markdown]
# ## Yours beside vpnlab's
# On the left your loop, on the right the TunSelected and SockSelected of `vpnlab/shell/tunnel.py`.
# What the real one adds:
# - **A core.** Each packet goes to `core.send_packets` (`seal`) and a wake-up's datagrams,
#   grouped by peer, to `core.receive_runs` (`open`), the sans-IO `core/`: the format
#   (plain, ESP), the session (keys, sequence numbers), the peer check (a datagram from an
#   unknown address is dropped **and counted**), and the timers: keepalives every 2 s, the
#   6 s liveness window, rekeying.
# - **Batches.** `tun0` and the socket are non-blocking; each wake-up drains up to `BATCH`
#   packets instead of one, so a busy tunnel makes fewer wake-ups per packet. The same loop
#   with other ends (`--datapath fast`, `vpnlab/fast/datapath.py`) moves many packets per
#   system call: a TCP super-packet per read from `tun0`, a UDP GSO batch per send.
# - **No packet can kill it.** An error reading the socket (an ICMP error queued there), a
#   bug meeting one odd packet: counted as a drop, the loop goes on. Yours survives the bad
#   write to `tun0`, but stops at any other exception.
# - **MSS clamping** of TCP SYNs (notebook 13) and a status file every second.

# %%
display(HTML(mytunnel.side_by_side(forward, tunnel)))
mytunnel.close(ends)

# %% [markdown]
# ## Exercises
# **12.3** How many bytes does your tunnel put on the wire in front of each inner packet
# (outer headers, not Ethernet)?
#
# **12.4** Remove the `source == peer` test from your SockSelected. Could then any host that
# can send UDP to r2's port 4500 put packets into r2's network? (`True`/`False`)
#
# **12.5** In Task 4, how many datagrams carrying your pings did r2 receive?

# %%
answer_12_3 = ...
### BEGIN SOLUTION
answer_12_3 = 28
### END SOLUTION
course.check_answer("12.3", answer_12_3)

# %%
answer_12_4 = ...
### BEGIN SOLUTION
answer_12_4 = True
### END SOLUTION
course.check_answer("12.4", answer_12_4)

# %%
answer_12_5 = ...
### BEGIN SOLUTION
answer_12_5 = 3
### END SOLUTION
course.check_answer("12.5", answer_12_5, lab)

# %%
# The fixed facts of this notebook (12.3, 12.4, 12.5) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "12.3": (answer_12_3, 28),
        "12.4": (answer_12_4, True),
        "12.5": (answer_12_5, 3),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - A tunnel is a loop around `select`: **TunSelected** reads a packet from `tun0` and sends
#   it as a datagram; **SockSelected** receives a datagram and writes it to `tun0`. With the
#   plain format that is a dozen lines, and ping, HTTP and anything else IP cross it.
# - The routes decide what enters the tunnel (here only web's /32), and the far side needs
#   forwarding and a way back (here a route on the isp; in notebook 4, NAT).
# - Only the peer check stands between the Internet and your network; vpnlab's core adds
#   keys, timers and counted drops around the same loop.
