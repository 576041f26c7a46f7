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
# # 6. Liveness and CleanUp
#
# From the design notes:
#
# > - **client watch for timeout from server during active connection**
# >   - server closed connection? client terminate and release resources.
# > - **server watch for timeout from client during active connection**
# >   - client closed connection? server terminate and release resources.
# >
# > set timeout for 6 seconds [...] watch for server response timeout: no response and
# > timeout? release resources and terminate. - CleanUp()
#
# UDP has no connection to break: a dead peer is simply silent. So each side sends a
# **keepalive** after 2 s without sending anything, and a peer silent for **6 s** is declared
# lost. In the code: `vpnlab/core/session.py: Session.next_timer/handle_timer`,
# `vpnlab/core/constants.py: LIVENESS_TIMEOUT_S`, and `vpnlab/shell/tunnel.py: clean_up`, which both
# daemons run in their `finally`.
#
# We kill daemons with `SIGKILL` (`kill -9`: no chance to say goodbye) and with `SIGTERM`
# (CleanUp runs, the peer is told with a **Bye**), and watch the other side.

# %%
import os
import signal
import time

import matplotlib.pyplot as plt

from vpnlab.core.constants import KEEPALIVE_INTERVAL_S, LIVENESS_TIMEOUT_S
from vpnlab.course import diagrams, figures
from vpnlab.course import notebook as course
from vpnlab.instruments import capture

lab = course.CourseLab("06_liveness_cleanup")
lab.up()
print("keepalive after", KEEPALIVE_INTERVAL_S, "s idle; peer lost after", LIVENESS_TIMEOUT_S, "s")


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# %% [markdown]
# ## kill -9 the server: the client notices 4-6 s later
# The 6 s count from the **last datagram received**, not from the kill. An idle server sends a
# keepalive every 2 s, so its last datagram reached the client 0-2 s before it died, and the
# client declares it lost 6 s after that one: 4-6 s after the kill (plus a little for the loop
# and CleanUp). We capture r1's `eth0` from 2.5 s before the kill, so that the server's last
# datagram is in it, and then the client's keepalives going unanswered (r2's kernel answers
# them with ICMP "port unreachable": nobody listens on 4500 any more).

# %%
client_pid, server_pid = lab.daemon_pid("client-r1"), lab.daemon_pid("server")
cap = capture.start_capture(lab.prefix, "r1", "eth0", "work/liveness-eth0.pcapng", count=100,
                            duration_s=25, capture_filter="udp port 4500 or icmp")
time.sleep(2.5)  # at least one keepalive from the server before the kill
killed = time.time()
os.kill(server_pid, signal.SIGKILL)
course.wait_for(lambda: "peer lost" in lab.log("client-r1"), timeout_s=LIVENESS_TIMEOUT_S + 4,
                interval_s=0.05)
lost_s = time.time() - killed
course.wait_for(lambda: not alive(client_pid), timeout_s=5)
noticed_s = time.time() - killed
cap_file = cap.stop()
print(f"server killed; the client logged 'peer lost' after {lost_s:.1f} s and was gone "
      f"(CleanUp done, process exited) after {noticed_s:.1f} s")
log = lab.log("client-r1")
print(log[-700:])
lab.record("client_noticed_s", round(noticed_s, 1))
lab.record("client_peer_lost_s", round(lost_s, 1))
lab.record("client_peer_lost", "peer lost" in log and "cleaned up (peer lost)" in log)

# %%
rows = capture.fields(cap_file, ["frame.time_epoch", "ip.src", "icmp.type"])
events = []
for t, src, icmp_type in rows:
    t = float(t) - killed
    if src == "192.0.2.2":
        events.append((t, "r1 sends", "keepalive (or data)"))
    elif icmp_type:
        events.append((t, "r2 answers", "ICMP port unreachable"))
    else:
        events.append((t, "r2 answers", "datagram from the server"))
last_from_server = max((t for t, _, label in events
                        if label == "datagram from the server" and t <= 0), default=None)
ax = figures.draw_timeline(events, ["r1 sends", "r2 answers"], "the server is killed at 0 s",
                          marks=[(0.0, "kill -9"), (lost_s, "client: peer lost")])
if last_from_server is not None:  # the window counts from the last datagram received
    diagrams.shade_window(ax, last_from_server, LIVENESS_TIMEOUT_S, "liveness window")
plt.show()
lab.record("keepalives_after_kill", sum(e[0] > 0 and e[1] == "r1 sends" for e in events))
if last_from_server is not None:
    print(f"the server's last datagram reached r1 {-last_from_server:.1f} s before the kill; "
          f"the client declared it lost {lost_s - last_from_server:.1f} s after that datagram")
    lab.record("client_silence_s", round(lost_s - last_from_server, 1))

# %% [markdown]
# The client's CleanUp ran: its routes are gone and so is `tun0`. The server's did **not**
# (kill -9): r2 still has forwarding on and its NAT table. That is why the lab's `stop-vpn`
# and `down` clean up after dead daemons too.

# %%
lab.sh("r1", "ip route")
left = lab.sh("r2", "nft list tables")
lab.record("nat_left_after_kill9", "vpnlab" in left)
lab.stop_vpn()
lab.record("nat_after_stop_vpn", "vpnlab" in lab.run("r2", "nft list tables").stdout)

# %% [markdown]
# ## kill -9 the client: the server drops it 4-6 s later
# The server serves many clients, so it does not exit: it drops the silent client's session,
# 6 s after the client's last datagram (again a keepalive 0-2 s before the kill).

# %%
lab.start_vpn()
client_pid = lab.daemon_pid("client-r1")
killed = time.time()
os.kill(client_pid, signal.SIGKILL)
course.wait_for(lambda: "closed: peer lost" in lab.log("server"),
                timeout_s=LIVENESS_TIMEOUT_S + 4, interval_s=0.2)
dropped_s = time.time() - killed
print(f"client killed; server dropped it after {dropped_s:.1f} s")
print("\n".join(lab.log("server").splitlines()[-3:]))
lab.record("server_dropped_s", round(dropped_s, 1))
lab.sh("r1", "ip route")

# %% [markdown]
# r1 kept one route: the host route to the server (the /1 routes died with `tun0`, which the
# kernel removed when the killed process's fd was closed). Another thing CleanUp would have
# done.
#
# ## SIGTERM the client: Bye, and the server knows at once

# %%
lab.start_vpn()
client_pid = lab.daemon_pid("client-r1")
stopped = time.time()
os.kill(client_pid, signal.SIGTERM)
course.wait_for(lambda: "closed: bye" in lab.log("server"), timeout_s=5, interval_s=0.05)
bye_s = time.time() - stopped
print(f"client stopped with SIGTERM; server knew after {bye_s:.2f} s")
print("\n".join(lab.log("client-r1").splitlines()[-3:]))
lab.record("bye_s", round(bye_s, 2))
lab.record("r1_routes_after_sigterm", lab.run("r1", "ip route").stdout.strip())

# %% [markdown]
# ## Fail closed: while the tunnel is down, nothing leaves in the clear
# The notes' CleanUp restores the routes: once the client stops (or loses the server), r1's
# traffic takes the default route again, **unencrypted**. That is what a student wants in a
# lab; a user whose traffic must never leave in the clear wants the opposite, as WireGuard's
# and OpenVPN's kill switches do. `vpnlab client --fail-closed` (`vpnlab/shell/routing.py:
# ClientRouting`) ends with an `unreachable` route for each network it had sent into the
# tunnel, and keeps the host route to the server, so the next client can connect (and
# replaces them). Below: the same ping after each CleanUp.

# %%
web_ping = "ping -c 1 -W 1 203.0.113.10"
seed_leaks = lab.run("r1", web_ping).returncode == 0  # routes restored by the seed's CleanUp
lab.start_vpn(client_args=["--fail-closed"])
os.kill(lab.daemon_pid("client-r1"), signal.SIGTERM)
course.wait_for(lambda: "unreachable" in lab.run("r1", "ip route").stdout, timeout_s=5)
closed_routes = lab.run("r1", "ip route").stdout.strip()
print(closed_routes)
blocked = lab.run("r1", web_ping)
print("seed CleanUp: web reachable in the clear:", seed_leaks)
print("--fail-closed: ", (blocked.stdout + blocked.stderr).strip().splitlines()[-1])
lab.record("fail_closed_routes", closed_routes)
lab.record("leak_after_seed_cleanup", seed_leaks)
lab.record("leak_after_fail_closed", blocked.returncode == 0)
for half in ("0.0.0.0/1", "128.0.0.0/1"):  # open the way again for what follows
    lab.run("r1", f"ip route del unreachable {half}")

# %% [markdown]
# ## Write the liveness timer yourself
# The daemons never sleep until a timer: their loop asks, each time it wakes up, what is due.
# Write that decision, `liveness(now, last_received, last_sent)`: all three are times in
# seconds on one clock (`now` is the present, `last_received` when the peer's last datagram
# arrived, `last_sent` when we last sent anything). Return `"close"` once the peer has been
# silent for `LIVENESS_TIMEOUT_S` (6 s: at 6.0 s exactly it is lost), otherwise `"keepalive"`
# once we have sent nothing for `KEEPALIVE_INTERVAL_S` (2 s), otherwise `None`. The time is an
# argument, never read from a clock inside: that is what lets a test move a **fake clock**.
#
# The check asks your function at chosen instants (the boundaries exactly), steps a fake clock
# through a silent peer (the real core's `Session` on the same clock must agree), and replays
# the timeline measured above when the server was killed: your keepalives must fall when the
# client's did, and you must close when the client declared the server lost.

# %%
from vpnlab.course import behaviour, liveness_exercise


def liveness(now: float, last_received: float, last_sent: float) -> str | None:
    """The timers' decision: "close", "keepalive" or None."""
    # your code here (about 5 lines)
    ### BEGIN SOLUTION
    if now - last_received >= LIVENESS_TIMEOUT_S:
        return "close"
    if now - last_sent >= KEEPALIVE_INTERVAL_S:
        return "keepalive"
    return None
    ### END SOLUTION


behaviour.show(liveness_exercise.on_fake_time(liveness))
measured = liveness_exercise.Timeline.from_events(events, lost_s)
behaviour.show(liveness_exercise.against_daemon(liveness, measured))

# %% [markdown]
# The grade comes from the next cell's hidden test: `nbgrader autograde` runs the same checks
# on the instructor's side, in a fresh lab, against a timeline it measures itself (it kills
# the server once more).

# %%
### BEGIN HIDDEN TESTS
from vpnlab.course import behaviour, liveness_exercise

behaviour.require(liveness_exercise.on_fake_time(liveness))
behaviour.require(liveness_exercise.against_daemon(liveness, liveness_exercise.measure(lab)))
### END HIDDEN TESTS

# %% [markdown]
# ## CleanUp of the whole lab

# %%
lab.down()
left = [ln for ln in os.popen("ip netns list").read().splitlines() if ln.startswith(lab.prefix)]
print("namespaces left:", left)
lab.record("namespaces_left", left)

# %% [markdown]
# ## Exercises
# **6.1** How many seconds of silence make a peer "lost"?
#
# **6.2** After the server was killed, how many datagrams did the client still send before it
# gave up? Estimate it from the timers (one keepalive per `KEEPALIVE_INTERVAL_S` of silence,
# within `LIVENESS_TIMEOUT_S`), then compare with the capture: a range is fine, give the
# number the capture shows.
#
# **6.3** Which makes the server notice a leaving client faster: `"SIGTERM"` or `"SIGKILL"`?
#
# **6.4** What did kill -9 of the server leave behind in r2? Give the name of the nftables
# table.

# %%
answer_6_1 = ...
### BEGIN SOLUTION
answer_6_1 = 6
### END SOLUTION
course.check_answer("6.1", answer_6_1)

# %% [markdown]
# **Explain 6.1** in a few sentences: why does a tunnel over UDP need keepalives and a
# liveness timer at all, when a TCP connection does without them? (Recorded for your
# instructor.)

# %%
explanation_6_1 = ...
### BEGIN SOLUTION
explanation_6_1 = (
    "UDP has no connection: nothing tells a daemon that its peer died or that the path broke, "
    "no FIN and no reset. Silence is the only sign, so each side sends a keepalive when it has "
    "sent nothing for 2 s and gives the peer up after 6 s without any datagram from it."
)
### END SOLUTION
course.explain("6.1", explanation_6_1)

# %%
answer_6_2 = ...
### BEGIN SOLUTION
answer_6_2 = sum(e[0] > 0 and e[1] == "r1 sends" for e in events)
### END SOLUTION
course.check_answer("6.2", answer_6_2, lab)

# %%
answer_6_3 = ...
### BEGIN SOLUTION
answer_6_3 = "SIGTERM"
### END SOLUTION
course.check_answer("6.3", answer_6_3)

# %%
answer_6_4 = ...
### BEGIN SOLUTION
answer_6_4 = "vpnlab"
### END SOLUTION
course.check_answer("6.4", answer_6_4)

# %%
# The fixed facts of this notebook (6.1, 6.2, 6.3, 6.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "6.1": (answer_6_1, 6),
        "6.2": (answer_6_2, range(2, 5)),
        "6.3": (answer_6_3, "SIGTERM"),
        "6.4": (answer_6_4, "vpnlab"),
    }
)
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# - Over UDP, liveness is a timer: keepalives every 2 s of idleness, and **6 s** of silence
#   ends the session (client: exit 4 and CleanUp; server: drop that client). The 6 s count
#   from the last datagram received, so a peer that dies is noticed 4-6 s after its death.
# - A clean stop (SIGTERM) runs **CleanUp**: Bye to the peer (which reacts at once), routes,
#   NAT table, forwarding and `tun0` restored.
# - kill -9 skips CleanUp: the kernel closes the fds (so `tun0` and its routes vanish) but
#   host routes, NAT tables and sysctls stay until someone (`vpnlab lab stop-vpn`/`down`)
#   removes them.
