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
# # 8. Routing without NAT
#
# Notebook 4 showed the masquerade rule of SetRouting(0): r2 rewrites the source 10.8.0.2 to
# its own 198.51.100.2, so the web host answers r2. Here we take NAT away (`vpnlab lab up
# --nat off`): r2 still forwards the tunnel's packets, but with their **own** source, the
# tunnel address 10.8.0.2. We watch the answers die on the way back, find where, fix it with a
# route instead of NAT, and compare what the web host sees in each case.
#
# (The SEED VPN Tunneling Lab does the same in its task "routing": there the fix is a route on
# the host behind the VPN server; ours is one on the isp.)

# %%
import time

import matplotlib.pyplot as plt

from vpnlab.course import figures
from vpnlab.course import notebook as course
from vpnlab.instruments import capture

lab = course.CourseLab("08_routing_without_nat")
lab.up(nat=False)  # the VPN runs, but r2 has no masquerade rule
lab.sh("r2", "nft list ruleset")
lab.sh("r1", "ip route")
figures.draw_topology(lab.status())  # the isp's interfaces: eth0 (r1), eth1 (r2), eth2 (web)
plt.show()

# %% [markdown]
# `nft list ruleset` in r2 prints nothing: no NAT table. r1's routes are those of notebook 3:
# everything (0/1 and 128/1) goes into `tun0`.
#
# ## The failure
# We ping the web host from r1 and capture on both sides of the isp at once: `eth2` (towards
# web) and `eth1` (towards r2).

# %%
towards_web = capture.start_capture(lab.prefix, "isp", "eth2", "work/nonat-isp-eth2.pcapng",
                                    count=50, duration_s=15, capture_filter="icmp")
towards_r2 = capture.start_capture(lab.prefix, "isp", "eth1", "work/nonat-isp-eth1.pcapng",
                                   count=50, duration_s=15, capture_filter="icmp")
ping = lab.run("r1", "ping -c 3 -i 0.2 -W 1 203.0.113.10")
time.sleep(0.3)
print("r1:", next(ln for ln in ping.stdout.splitlines() if "packet loss" in ln))
names = ["ip.src", "ip.dst", "icmp.type"]
# an ICMP error quotes the packet it is about: tshark gives both headers ("a,b"); keep the outer
web_side = [[v.split(",")[0] for v in row] for row in capture.fields(towards_web.stop(), names)]
r2_side = [[v.split(",")[0] for v in row] for row in capture.fields(towards_r2.stop(), names)]
TYPES = {"0": "echo reply", "3": "destination unreachable", "8": "echo request"}
print("isp eth2 (towards web):")
for src, dst, icmp_type in web_side:
    print(f"  {src:>13} -> {dst:<13} icmp type {icmp_type} ({TYPES.get(icmp_type, '?')})")
print("isp eth1 (towards r2), to 10.8.0.2:", [r for r in r2_side if r[1] == "10.8.0.2"] or "none")
lab.record("ping_rc_without_nat", ping.returncode)
lab.record("web_side", web_side)
lab.record("r2_side_to_tunnel", [r for r in r2_side if r[1] == "10.8.0.2"])

# %% [markdown]
# Read it from the top: the echo requests (type 8) leave the isp towards web with the source
# **10.8.0.2** (r2 forwarded them unchanged); web answers each one (type 0) to 10.8.0.2, and
# the answers come back into the isp on `eth2`... and never leave it on `eth1`. Instead the
# isp tells web so, with an ICMP **destination unreachable** (type 3, from 203.0.113.1; the
# kernel rate-limits these, so not every answer gets one). The isp has routes to its three
# networks and nothing else:

# %%
lab.sh("isp", "ip route")
no_route = lab.sh("isp", "ip route get 10.8.0.2")
lab.record("isp_route_get", no_route)

# %% [markdown]
# "Network is unreachable": the answers die at the isp. On the real Internet they would die
# at the first router too: 10.0.0.0/8 is a private range that no Internet router carries.
#
# ## The fix: a route back
# Somebody on the far side has to know that 10.8.0.0/24 lives behind r2. `vpnlab lab
# route-back` adds `10.8.0.0/24 via 198.51.100.2` on the isp (in the real world, your
# provider would have to announce your tunnel network, or you would put the route on the
# routers of your own network behind the VPN server).

# %%
lab.vpnlab("lab", "route-back")
lab.sh("isp", "ip route get 10.8.0.2")
ping = lab.sh("r1", "ping -c 3 -i 0.2 -W 2 203.0.113.10")
seen_routed = lab.whoami("r1")
print("who-am-I without NAT, with the route back:", seen_routed)
lab.record("ping_ok_with_route", " 0% packet loss" in ping)
lab.record("whoami_routed", seen_routed)

# %% [markdown]
# The web host now sees **10.8.0.2**: the client's own tunnel address, end to end. No
# translation anywhere, so no conntrack state in r2 is needed either:

# %%
ct = lab.sh("r2", "conntrack -L -p tcp --dport 80")
lab.record("conntrack_nat_entries", ct.count("dst=198.51.100.2"))

# %% [markdown]
# ## The comparison: the same with NAT
# We remove the route again and restart the VPN with the masquerade rule (`start-vpn --nat
# on`). The isp no longer needs to know anything about the tunnel:

# %%
lab.vpnlab("lab", "route-back", "--remove")
lab.vpnlab("lab", "start-vpn", "--nat", "on", show=False)
seen_nat = lab.whoami("r1")
print("who-am-I with NAT, no route back:", seen_nat)
lab.sh("isp", "ip route get 10.8.0.2")
lab.record("whoami_nat", seen_nat)

# %% [markdown]
# | | without NAT, route back | with NAT |
# |---|---|---|
# | source the web host sees | 10.8.0.2 (the client) | 198.51.100.2 (the server) |
# | what the far side must know | a route to 10.8.0.0/24 via r2 | nothing |
# | state in r2 | none (pure routing) | a conntrack entry per connection |
# | several clients | web tells them apart by address | all look like r2; only ports differ |
# | typical use | site-to-site, company networks you control | a "privacy" VPN to the Internet |
#
# NAT hides the tunnel network behind one public address: that is why it works without
# anyone's help, and why the web host cannot see who is really talking to it. Routing
# keeps the addresses, so both ends can open connections to each other (notebook 9), but
# every router on the way back must know the route.
#
# ## Exercises
# **8.1** Which node dropped web's answers when there was no NAT and no route back? Give its
# node name.
#
# **8.2** What ICMP type number did web's answers have?
#
# **8.3** With the route back, which address did the web host see?
#
# **8.4** Which gateway does the isp's new route name for 10.8.0.0/24?

# %%
answer_8_1 = ...
### BEGIN SOLUTION
answer_8_1 = "isp"
### END SOLUTION
course.check_answer("8.1", answer_8_1)

# %%
answer_8_2 = ...
### BEGIN SOLUTION
answer_8_2 = 0
### END SOLUTION
course.check_answer("8.2", answer_8_2)

# %%
answer_8_3 = ...
### BEGIN SOLUTION
answer_8_3 = "10.8.0.2"
### END SOLUTION
course.check_answer("8.3", answer_8_3)

# %%
answer_8_4 = ...
### BEGIN SOLUTION
answer_8_4 = "198.51.100.2"
### END SOLUTION
course.check_answer("8.4", answer_8_4)

# %%
# The fixed facts of this notebook (8.1, 8.2, 8.3, 8.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "8.1": (answer_8_1, "isp"),
        "8.2": (answer_8_2, 0),
        "8.3": (answer_8_3, "10.8.0.2"),
        "8.4": (answer_8_4, "198.51.100.2"),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - Without NAT the tunnel's packets reach the world with the **tunnel address** as source;
#   the answers need a route back to 10.8.0.0/24, and the first router without one (here the
#   isp) drops them. A capture on each side of that router proves where.
# - The fix is routing, not translation: `10.8.0.0/24 via 198.51.100.2` on the isp.
# - NAT needs no help from the far side and hides the clients; routing keeps their addresses
#   visible and reachable, but every router on the way back must know the route.
