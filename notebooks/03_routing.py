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
# # 3. Routing: SetRouting(1) on the client, SetRouting(0) on the server
#
# From the design notes:
#
# > All R1 (client) traffic flows through tun0. R1 reaches the R2 (server) through its gw
# > specifically. R2 reaches R1 through R2 gw specifically.
# >
# > Client calls SetRouting to set its routing table accordingly after which it will enter a
# > loop. When process sends data, the packet will be passed to kernel which will check the
# > route path for this packet in routing table. [...] kernel will send the packet through tun0
# > which will read the data, encapsulate it within another packet, and send back to kernel,
# > this time it will route the packet outside the physical interface.
#
# In the code: `vpnlab/shell/routing.py`, `ClientRouting` (SetRouting(1)) and `ServerRouting`
# (SetRouting(0)). The kernel picks, for each destination, the **longest matching prefix**.

# %%
import json
import time

from vpnlab.course import notebook as course

lab = course.CourseLab("03_routing")
lab.up(vpn=False)


def routes(node):
    """A routing table as a set of 'DST [via GW] dev DEV' strings (ip -j route)."""
    table = json.loads(lab.run(node, "ip -j route").stdout)
    return {r["dst"] + (f" via {r['gateway']}" if "gateway" in r else "") + f" dev {r['dev']}"
            for r in table}


def route_dev(node, dst):
    """The interface the kernel would use for dst (ip -j route get)."""
    return json.loads(lab.run(node, f"ip -j route get {dst}").stdout)[0]["dev"]


r1_before, r2_before = routes("r1"), routes("r2")
lab.sh("r1", "ip route")
lab.sh("r1", "ip route get 203.0.113.10")
lab.sh("r2", "ip route")
lab.sh("r2", "sysctl net.ipv4.ip_forward")

# %% [markdown]
# Before the VPN, `r1` reaches everything through its default route, `via 192.0.2.1 dev eth0`.
# Now the VPN daemons start: the client runs **SetRouting(1)**, the server **SetRouting(0)**.

# %%
lab.start_vpn()
r1_after, r2_after = routes("r1"), routes("r2")
print("r1: routes added by the tunnel (tun0's own /24 comes from Ifconfig):")
for r in sorted(r1_after - r1_before):
    print("   +", r)
print("r2: routes added:")
for r in sorted(r2_after - r2_before):
    print("   +", r)
lab.record("r1_added", sorted(r1_after - r1_before))
lab.record("r2_added", sorted(r2_after - r2_before))

# %% [markdown]
# SetRouting(1) added three routes:
#
# - `0.0.0.0/1 dev tun0` and `128.0.0.0/1 dev tun0`: together they cover every address, and a
#   /1 is longer (more specific) than the default route's /0, so they win **without deleting
#   the default route**; CleanUp only has to delete them.
# - `198.51.100.2 via 192.0.2.1 dev eth0`: the **host route** (/32) to the server, through r1's
#   own gateway: the notes' "R1 reaches the R2 through its gw specifically".
#
# The picture: each route covers a range of addresses; for a destination, every route whose
# range holds it matches, and the longest prefix (the narrowest range) wins.

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_prefixes(["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "198.51.100.2/32"],
                       ["10.20.30.40", "198.51.100.2"])
plt.show()

# %% [markdown]
# Ask the kernel which way it would send things now:

# %%
for dst in ("203.0.113.10", "198.51.100.2", "10.8.0.1"):
    lab.sh("r1", f"ip route get {dst}")
lab.record("dev_web", route_dev("r1", "203.0.113.10"))
lab.record("dev_server", route_dev("r1", "198.51.100.2"))

# %% [markdown]
# ## Why the host route? Without it, the tunnel loops
# The daemon sends its UDP datagrams to 198.51.100.2. Without the /32, the longest match for
# that address is `128.0.0.0/1 dev tun0`: the tunnel's own datagrams would enter the tunnel,
# the daemon would read them from `tun0`, wrap them again and send them to 198.51.100.2...
# back into `tun0`. A routing loop, and one that the TTL does not stop (below).
#
# Let us see it, briefly and safely: the loop stays inside r1 (nothing reaches the wire), and
# the `finally` puts the route back after half a second, whatever happens. We send one ping and
# compare the client's counter of packets read from `tun0` (from its status file, rewritten
# every second).

# %%
status_file = lab.state_dir() / "client-r1.json"


def from_tun():
    time.sleep(1.2)  # let the daemon rewrite its status file
    data = json.loads(status_file.read_text())
    return (data.get("counters") or {}).get("packets_from_tun", 0)


before = from_tun()
try:
    lab.sh("r1", "ip route del 198.51.100.2/32")
    lab.sh("r1", "ip route get 198.51.100.2")
    lab.record("dev_server_without_host_route", route_dev("r1", "198.51.100.2"))
    lab.run("r1", "ping -c 1 -W 0.5 203.0.113.10")
finally:
    lab.sh("r1", "ip route replace 198.51.100.2/32 via 192.0.2.1 dev eth0")
looped = from_tun() - before
print(f"one ping made the client read {looped} packets from tun0 in about half a second")
lab.record("loop_packets", looped)
lab.sh("r1", "ping -c 1 -W 2 203.0.113.10")

# %% [markdown]
# Why does the TTL not end the loop, as it ends loops between routers? Because no packet goes
# round: each round makes a **new** datagram. The daemon reads a packet from `tun0` and sends it
# as the payload of a new UDP datagram, and the kernel gives that datagram a new IPv4 header
# with a fresh TTL (64). The old packet's TTL is inside, untouched (nothing forwards it: a
# process read it), so no TTL ever reaches 0.
#
# Each round the datagram also grows by the tunnel's overhead; past the MTU the kernel
# fragments it, and every fragment goes round again: the count explodes. With the host route
# back, the tunnel works again.
#
# ## The server: SetRouting(0)
# On `r2`, SetRouting(0) turns **forwarding** on (a host that forwards is a router: packets
# arriving from `tun0` for the web host are sent on out of `eth0`), and the route to the
# tunnel network `10.8.0.0/24 dev tun0` came with Ifconfig's address. The notes' "R2 reaches
# R1 through R2 gw specifically" is r2's default route (the way to 192.0.2.2 via the isp).
# The NAT rule is the subject of notebook 4.

# %%
forward = lab.sh("r2", "sysctl -n net.ipv4.ip_forward")
lab.sh("r2", "ip route get 10.8.0.2")
lab.sh("r2", "ip route get 192.0.2.2")
lab.record("r2_forward", forward.strip())

# %% [markdown]
# ## CleanUp puts everything back
# Stopping the daemons (SIGTERM) runs their CleanUp: the client deletes exactly the routes it
# added, the server restores `ip_forward` and removes its NAT table.

# %%
lab.stop_vpn()
lab.record("r1_restored", routes("r1") == r1_before)
lab.record("r2_forward_after", lab.run("r2", "sysctl -n net.ipv4.ip_forward").stdout.strip())
lab.sh("r1", "ip route")

# %% [markdown]
# ## Write SetRouting(1) and its CleanUp yourself
# Now you are the client daemon. Write `set_routing(ip, server, gateway)`: the three routes of
# SetRouting(1), the two halves of the address space through `tun0` and the host route to
# `server` via r1's `gateway` on `eth0`. And `clean_up(ip, server, gateway)`: delete exactly
# those. `ip("route add ...")` runs `ip route add ...` in r1 and raises if it fails.
#
# The check gives r1 a `tun0` of its own (the daemon is stopped now), runs your
# `set_routing`, asks r1's kernel (`ip route get`) where addresses in both halves, the web
# host, the server and its neighbour 198.51.100.3 would go, then runs your `clean_up` and
# compares r1's table with the one before. Whatever your code does, the check puts r1's routes
# back afterwards.

# %%
from vpnlab.course import behaviour, routing_exercise


def set_routing(ip, server: str, gateway: str) -> None:
    """SetRouting(1): everything through tun0, except the server, reached via gateway."""
    # your code here (3 lines)
    ### BEGIN SOLUTION
    ip("route add 0.0.0.0/1 dev tun0")
    ip("route add 128.0.0.0/1 dev tun0")
    ip(f"route add {server}/32 via {gateway} dev eth0")
    ### END SOLUTION


def clean_up(ip, server: str, gateway: str) -> None:
    """CleanUp: delete exactly the routes set_routing added."""
    # your code here (3 lines)
    ### BEGIN SOLUTION
    ip("route del 0.0.0.0/1 dev tun0")
    ip("route del 128.0.0.0/1 dev tun0")
    ip(f"route del {server}/32 via {gateway} dev eth0")
    ### END SOLUTION


behaviour.show(routing_exercise.check_routing_steps(lab, set_routing, clean_up))

# %% [markdown]
# The grade comes from the next cell's hidden test: `nbgrader autograde` runs the same check
# with your functions on the instructor's side, in a fresh lab, and requires every fact.

# %%
### BEGIN HIDDEN TESTS
from vpnlab.course import behaviour, routing_exercise

behaviour.require(routing_exercise.check_routing_steps(lab, set_routing, clean_up))
### END HIDDEN TESTS

# %% [markdown]
# ## Exercises
# **3.1** With the VPN up, which route (write its destination prefix exactly as `ip route`
# shows it) does r1 use for 203.0.113.10?
#
# **3.2** What is the prefix length of the host route to the server?
#
# **3.3** Without the host route, through which interface would r1 send the tunnel's own
# datagrams?
#
# **3.4** A student replaces the two /1 routes by `ip route replace default dev tun0`. Would
# r1 still reach the server? (`True`/`False`: look at what the host route does.)

# %%
answer_3_1 = ...
### BEGIN SOLUTION
answer_3_1 = "128.0.0.0/1"
### END SOLUTION
course.check_answer("3.1", answer_3_1)

# %%
answer_3_2 = ...
### BEGIN SOLUTION
answer_3_2 = 32
### END SOLUTION
course.check_answer("3.2", answer_3_2)

# %%
answer_3_3 = ...
### BEGIN SOLUTION
answer_3_3 = "tun0"
### END SOLUTION
course.check_answer("3.3", answer_3_3)

# %%
answer_3_4 = ...
### BEGIN SOLUTION
answer_3_4 = True
### END SOLUTION
course.check_answer("3.4", answer_3_4)

# %%
# The fixed facts of this notebook (3.1, 3.2, 3.3, 3.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "3.1": (answer_3_1, "128.0.0.0/1"),
        "3.2": (answer_3_2, 32),
        "3.3": (answer_3_3, "tun0"),
        "3.4": (answer_3_4, True),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - The kernel chooses the route with the **longest matching prefix**.
# - **SetRouting(1)**: `0.0.0.0/1` + `128.0.0.0/1` via `tun0` capture all traffic without
#   touching the default route; a **/32 host route** to the server via r1's own gateway keeps
#   the tunnel's own datagrams out of the tunnel. Without it: a routing loop, which the TTL
#   does not end (every round is a new datagram with a fresh TTL).
# - **SetRouting(0)**: forwarding on, the tunnel network routed to `tun0` (plus NAT).
# - **CleanUp** deletes exactly what was added.
