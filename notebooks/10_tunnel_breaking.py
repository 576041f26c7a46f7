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
# # 10. Breaking the tunnel
#
# What happens to a TCP connection **inside** the tunnel when the tunnel stops for a moment?
# We download a big file from the web host through the VPN and, once the first 4 MB have
# arrived (so the transfer runs at full speed, with data surely in flight), freeze the VPN
# server with `SIGSTOP` (the process stops, its sockets and `tun0` stay open; `SIGCONT` lets
# it go on). Two experiments:
#
# - a **3 s** pause: shorter than the **6 s** liveness timeout of notebook 6;
# - an **8 s** pause: longer.
#
# Two layers each have a timer: TCP (end to end, between web and r1) retransmits what is not
# acknowledged, and the VPN (between r1 and r2) declares a silent peer lost after 6 s.

# %%
import hashlib
import os
import signal
import time
from pathlib import Path

import matplotlib.pyplot as plt

from vpnlab.core.constants import LIVENESS_TIMEOUT_S
from vpnlab.course import notebook as course
from vpnlab.instruments import capture
from vpnlab.instruments.whoami import pattern_sha256

SIZE = 40_000_000  # bytes: a few seconds through the tunnel
URL = f"http://203.0.113.10/bytes/{SIZE}"
DOWNLOAD = Path("work/break-download.bin").absolute()
lab = course.CourseLab("10_tunnel_breaking")
lab.up()
EXPECTED = pattern_sha256(SIZE)
print("expected SHA-256:", EXPECTED)
print("liveness timeout:", LIVENESS_TIMEOUT_S, "s")


def download_with_pause(pause_s, after_bytes=4_000_000):
    """Start the download in r1; once after_bytes arrived, SIGSTOP the server for pause_s."""
    server_pid = lab.daemon_pid("server")
    DOWNLOAD.unlink(missing_ok=True)
    curl = lab.popen("r1", f"curl -s -S -m 60 -o {DOWNLOAD} {URL}")
    course.wait_for(lambda: DOWNLOAD.exists() and DOWNLOAD.stat().st_size >= after_bytes,
                    timeout_s=20, interval_s=0.01)
    os.kill(server_pid, signal.SIGSTOP)
    stopped = time.time()
    time.sleep(pause_s)
    os.kill(server_pid, signal.SIGCONT)
    return curl, stopped


# %% [markdown]
# ## A 3 s pause: TCP retransmits, the connection survives
# We capture on the web host's `eth0`: web is the **sender** of the download, so its
# retransmissions are what we want to see.

# %%
cap = capture.start_capture(lab.prefix, "web", "eth0", "work/break-web-eth0.pcapng",
                            count=10000, duration_s=40, capture_filter="tcp port 80")
client_pid = lab.daemon_pid("client-r1")
curl, stopped = download_with_pause(3.0)
curl.communicate(timeout=60)
took_s = time.time() - stopped
cap_file = cap.stop()
digest = hashlib.sha256(DOWNLOAD.read_bytes()).hexdigest() if DOWNLOAD.exists() else ""
DOWNLOAD.unlink(missing_ok=True)
print(f"download finished {took_s:.1f} s after the pause began; sha256 {digest}")
print("checksum as expected:", digest == EXPECTED)
print("VPN client still running:", lab.daemon_pid("client-r1") == client_pid)
lab.record("short_checksum_ok", digest == EXPECTED)
lab.record("short_client_alive", lab.daemon_pid("client-r1") == client_pid)

# %% [markdown]
# tshark's TCP analysis marks a segment whose data was sent before as
# `tcp.analysis.retransmission`. Times are relative to the `SIGSTOP`:

# %%
rows = capture.fields(cap_file, ["frame.time_epoch", "ip.src", "tcp.seq", "tcp.len"],
                      display_filter="ip.src == 203.0.113.10 and tcp.len > 0")
retrans = capture.fields(cap_file, ["frame.time_epoch", "tcp.seq"],
                         display_filter="tcp.analysis.retransmission and ip.src == 203.0.113.10")
times = [float(t) - stopped for t, _ in retrans]
in_pause = [t for t in times if 0 <= t < 3.0]  # while the server was stopped
print("retransmissions (s after SIGSTOP):", [round(t, 2) for t in times])
# one timeout may resend more than one segment at once: a burst within 50 ms is one firing
firings = [t for i, t in enumerate(in_pause) if i == 0 or t - in_pause[i - 1] > 0.05]
gaps = [round(b - a, 2) for a, b in zip(firings, firings[1:], strict=False)]
print("gaps between those during the pause:", gaps)
lab.record("retransmissions", len(times))
lab.record("retransmission_gaps", gaps)

fig, ax = plt.subplots(figsize=(11, 3.5))
ax.plot([float(t) - stopped for t, *_ in rows], [int(s) / 1000 for _, _, s, _ in rows], ".",
        ms=2, label="data segment from web")
ax.plot(times, [int(s) / 1000 for _, s in retrans], "rx", ms=8, label="retransmission")
ax.axvspan(0, 3.0, color="tab:red", alpha=0.1, label="server stopped (SIGSTOP)")
ax.set_xlabel("seconds after SIGSTOP")
ax.set_ylabel("TCP sequence number (kB)")
ax.legend(loc="upper left")
ax.set_title("a 3 s pause of the VPN server, seen by the sender")
plt.show()

# %% [markdown]
# During the pause web's segments go into r2's `tun0` but nobody reads them (they wait in
# the device's queue); no acknowledgement comes back, so web's TCP retransmits the first
# unacknowledged segment after its retransmission timeout (RTO, at least 200 ms on Linux),
# and **doubles** the timeout after each try: the gaps grow 0.2, 0.4, 0.8, 1.6 s...
# (exponential backoff, RFC 6298). When the server runs again it drains the queue, the
# acknowledgements flow, and TCP carries on where it stopped: the file arrives intact. The
# VPN never noticed anything worth acting on: 3 s of silence is less than 6.
#
# ## An 8 s pause: the VPN gives up first
# Now the pause is longer than the liveness timeout. The client hears nothing from the
# server for 6 s, declares it lost, exits (code 4) and runs CleanUp: its routes and `tun0`
# are gone before the server even wakes up.

# %%
client_pid = lab.daemon_pid("client-r1")
curl, stopped = download_with_pause(8.0)
course.wait_for(lambda: "closed: peer lost" in lab.log("server"), timeout_s=12, interval_s=0.2)
server_dropped_s = time.time() - stopped
curl.kill()
curl.wait(timeout=5)
DOWNLOAD.unlink(missing_ok=True)
client_log = lab.log("client-r1")
print("\n".join(ln for ln in client_log.splitlines() if "peer lost" in ln or "exit" in ln))
print("server:", next((ln for ln in lab.log("server").splitlines() if "peer lost" in ln), ""))
print(f"the server dropped the client {server_dropped_s:.1f} s after its pause began:",
      "at once when it ran again" if server_dropped_s < 8.0 + 1.5 else
      "it read the client's waiting datagrams first, then waited 6 s more")
lab.record("long_server_dropped_s", round(server_dropped_s, 1))
lab.sh("r1", "ip route")
lab.record("long_client_peer_lost", "peer lost" in client_log)
lab.record("long_client_alive", lab.daemon_pid("client-r1") is not None)
lab.record("long_server_dropped", "closed: peer lost" in lab.log("server"))

# %% [markdown]
# The client gave up at 6 s. The server was frozen, but its clock was not: when it ran again
# at 8 s, either its timer fired at once (the client's last datagram was more than 6 s old),
# or, if the client's last datagrams (sent before it gave up) were still waiting in its
# socket, it read them first, a sign of life as far as it could tell, heard nothing more,
# and dropped the session 6 s later. Which one you see depends on whether anything of the
# client's was still waiting; the line above says which it was. The TCP connection inside
# had no chance: its packets now have no tunnel to take (r1's routes are back to normal and
# the tunnel address 10.8.0.2 is gone), so curl would wait for its own timeout.
#
# A UDP tunnel is transparent to TCP as long as it comes back before its own liveness
# timer fires; TCP's patience (minutes of retransmissions) is far longer than the VPN's 6 s.
# But is a tunnel that **ended** the end of the connections inside it? The next experiment.
#
# ## SEED Task 6: kill the client, start it again
# The SEED lab's tunnel-breaking task: with a TCP session open through the tunnel (SEED uses
# telnet; we use a line-echo server on web and a TCP socket that this notebook opens in r1),
# stop the VPN client, type something, start the client again. Does the session survive?
#
# Predict first (`True`/`False`). Think about what the inner TCP connection consists of: two
# addresses and ports, and state in r1's kernel, in r2's conntrack (the NAT entry), and in
# web's kernel. Which of those does a new VPN session change?

# %%
prediction_10_5 = ...
### BEGIN SOLUTION
prediction_10_5 = True
### END SOLUTION
course.predict("10.5", prediction_10_5)

# %%
import socket
import sys

ECHO = """import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1); c, a = s.accept()
while d := c.recv(100): c.sendall(d)
"""
lab.start_vpn()  # the 8 s pause ended the old session: a fresh one
echo = lab.popen("web", [sys.executable, "-c", ECHO])
time.sleep(0.5)
with course.netns(lab.ns("r1")):  # a TCP socket of r1's, used from this notebook
    session = socket.create_connection(("203.0.113.10", 7000), timeout=5)
print("inner TCP from", session.getsockname(), "to", session.getpeername())
session.sendall(b"before\n")
print("echo:", session.recv(100))
lab.sh("r2", "conntrack -L -p tcp --dport 7000")

# %% [markdown]
# Now the break: SIGTERM to the client (its CleanUp sends a Bye and removes `tun0` and the
# routes; the server frees the tunnel address at once), then a line typed into the session
# while there is no tunnel, captured on r1's `eth0`, then the client started again with the
# same options (`lab.restart_client()`; the server kept running all along).

# %%
os.kill(lab.daemon_pid("client-r1"), signal.SIGTERM)
course.wait_for(lambda: "tun0" not in lab.run("r1", "ip -br link").stdout, timeout_s=5)
lab.sh("r1", "ip route")
gap = capture.start_capture(lab.prefix, "r1", "eth0", "work/task6-gap.pcapng", count=20,
                            duration_s=4, capture_filter="tcp port 7000")
typed = time.time()
session.sendall(b"typed while down\n")
time.sleep(2.0)
in_gap = capture.fields(gap.stop(), ["ip.src", "ip.dst", "tcp.len"])
print("r1 eth0 while the tunnel is down:", in_gap)
lab.restart_client()
print(f"client connected again {time.time() - typed:.1f} s after the line was typed")
tun_address = lab.sh("r1", "ip -br addr show tun0").split()[2].split("/")[0]
session.settimeout(15)
late = session.recv(100)
print(f"echo: {late} ({time.time() - typed:.1f} s after it was typed)")
session.sendall(b"after\n")
after = session.recv(100)
print("echo:", after)
lab.sh("r2", "conntrack -L -p tcp --dport 7000")
print("server:", [ln[13:] for ln in lab.log("server").splitlines() if "hello" in ln or "bye" in ln])
session.close()
echo.kill()
lab.record("task6", {"late_echo": late.decode(), "after_echo": after.decode(),
                     "gap_segments": in_gap, "address": tun_address})

# %% [markdown]
# The session survived. What we measured:
# - While the client was gone, r1's TCP still owned its connection: a socket is not closed
#   because its address vanished. The line typed then did not leave r1 at all (the capture
#   of `eth0` above is empty): 10.8.0.2 was no longer r1's address, so the kernel could not
#   route a packet with that source, and TCP kept the line queued, retrying on its
#   retransmission timer. Nothing reached web or came back to reset the connection.
# - The new client asked the server for an address and got **10.8.0.2 again**: the server's
#   pool gives a freed address back at the front (`AddressPool.give_back`), so a lone client
#   that comes back gets the same one. New keys, new SPIs, same inner address.
# - r2's conntrack entry (10.8.0.2:port <-> web, NATed to 198.51.100.2) was never removed:
#   the server kept running, and its NAT rule with it. So web's answers still reach the same
#   inner socket.
# - TCP's next retransmission of the typed line went into the new tunnel, and the echo came
#   back: the line arrived a few seconds late, the session went on.
#
# That is what SEED's task 6 shows with telnet: the characters typed during the break appear
# when the tunnel is back. It fails if the address changes (another client took 10.8.0.2 in
# the meantime, or a server restart flushed the NAT state and re-numbered the clients) or if
# TCP gave up first (about 15 minutes of retransmissions on Linux, `tcp_retries2`).
#
# **Explain 10.5** in a few sentences: why did the inner TCP connection survive the client's
# restart?

# %%
explanation_10_5 = ...
### BEGIN SOLUTION
explanation_10_5 = (
    "The inner connection is defined by 10.8.0.2, web and the two ports. The restarted client "
    "got 10.8.0.2 again from the server's pool, and r2's conntrack NAT entry survived because "
    "the server kept running, so TCP's retransmission went through the new tunnel unchanged."
)
### END SOLUTION
course.explain("10.5", explanation_10_5)

# %% [markdown]
# ## Exercises
# **10.1** Did the download survive the 3 s pause (True or False)?
#
# **10.2** By which factor does TCP multiply its retransmission timeout after each try?
#
# **10.3** After how many seconds of silence did the client declare the server lost?
#
# **10.4** Two questions about the 8 s pause, one answer each (`"client"` or `"server"`):
# **10.4.1** which daemon did `SIGSTOP` freeze? **10.4.2** Which one noticed the pause first
# (its timers kept running while the other's could not)?
#
# **10.5** Did the TCP session survive the client's kill and restart? (`True`/`False`;
# you predicted it above.)
#
# **10.6** Which tunnel address did the restarted client get?

# %%
answer_10_1 = ...
### BEGIN SOLUTION
answer_10_1 = True
### END SOLUTION
course.check_answer("10.1", answer_10_1, lab)

# %%
answer_10_2 = ...
### BEGIN SOLUTION
answer_10_2 = 2
### END SOLUTION
course.check_answer("10.2", answer_10_2)

# %%
answer_10_3 = ...
### BEGIN SOLUTION
answer_10_3 = 6
### END SOLUTION
course.check_answer("10.3", answer_10_3)

# %%
answer_10_4_1 = ...
### BEGIN SOLUTION
answer_10_4_1 = "server"
### END SOLUTION
course.check_answer("10.4.1", answer_10_4_1)

# %%
answer_10_4_2 = ...
### BEGIN SOLUTION
answer_10_4_2 = "client"
### END SOLUTION
course.check_answer("10.4.2", answer_10_4_2)

# %%
answer_10_5 = ...
### BEGIN SOLUTION
answer_10_5 = True
### END SOLUTION
course.check_answer("10.5", answer_10_5, lab)

# %%
answer_10_6 = ...
### BEGIN SOLUTION
answer_10_6 = "10.8.0.2"
### END SOLUTION
course.check_answer("10.6", answer_10_6, lab)

# %%
course.grade("10.6", answer_10_6, lab)

# %%
# The fixed facts of this notebook (10.1, 10.2, 10.3, 10.4.1, 10.4.2, 10.5) are graded
# together, by your instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "10.1": (answer_10_1, True),
        "10.2": (answer_10_2, 2),
        "10.3": (answer_10_3, 6),
        "10.4.1": (answer_10_4_1, "server"),
        "10.4.2": (answer_10_4_2, "client"),
        "10.5": (answer_10_5, True),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - Freezing the tunnel for less than the liveness timeout is invisible to the VPN: TCP
#   inside retransmits with exponential backoff (RTO doubling) and resumes intact.
# - Longer than 6 s and the VPN ends the session on both sides (client first: exit 4 and
#   CleanUp; the server when it runs again, at most 6 s later); the connections inside are
#   stuck until a tunnel with the same inner address comes back.
# - SEED task 6: kill the client and start it again, and an open TCP session survives: the
#   server hands the lone client 10.8.0.2 again and its NAT state outlives the session, so
#   TCP's retransmissions simply resume through the new tunnel.
# - Two layers, two timers: TCP end to end, the VPN between its peers. The outer one (the
#   VPN's 6 s) decides how long an outage the inner one can survive.
