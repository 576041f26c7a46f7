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
# # 4. NAT: the masquerade rule
#
# From the design notes:
#
# > All traffic with source address of tunnel not destined for tunnel, send to external
# > interface and masquerade.
# >
# > r1 sends all its traffic to r2 (vpn server) which masquerades all traffic not belonging to
# > the vpn subnet, out the external interface, to host and out - can browse the web.
#
# Packets from the tunnel carry the source 10.8.0.2, an address only r1 and r2 know. The web
# host would answer them, to 10.8.0.2, but its replies would die at the isp, which has no route
# back to 10.8.0.0/24 and drops them. So r2 **masquerades**:
# it rewrites the source to its own public address 198.51.100.2 on the way out, remembers the
# translation in its **conntrack** table, and rewrites the answers back.
# In the code: `vpnlab/shell/routing.py`: `nat_ruleset` and `ServerRouting` (SetRouting(0)).
#
# The web node runs a tiny "who am I" HTTP service that answers with the client address it
# sees: the perfect NAT detector.

# %%
import re

from vpnlab.course import notebook as course
from vpnlab.shell.routing import nat_ruleset

lab = course.CourseLab("04_nat")
lab.up(vpn=False)
before = lab.whoami("r1")
print("who-am-I from r1, no VPN:", before)
lab.record("whoami_before", before)

# %% [markdown]
# Without the VPN, the web host sees r1's own address. Now the VPN:

# %%
lab.start_vpn()
after = lab.whoami("r1")
print("who-am-I from r1, VPN on:", after)
lab.record("whoami_after", after)

# %% [markdown]
# The whole way of one ping, hop by hop, with the addresses the packet carries at each: the
# inner packet keeps its addresses inside the tunnel, the outer datagram has the two public
# addresses, and r2 rewrites the inner source before the packet leaves towards web.

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_ping_path()
plt.show()

# %% [markdown]
# ## The rule
# SetRouting(0) writes this nftables ruleset to a file and loads it with `nft -f` inside r2:

# %%
from ipaddress import IPv4Network

print(nat_ruleset(IPv4Network("10.8.0.0/24"), "eth0"))
table = lab.sh("r2", "nft list table ip vpnlab")

# %% [markdown]
# Read the rule from left to right: in the `postrouting` hook (after routing decided the way
# out, just before the packet leaves), with `type nat ... priority srcnat` (source NAT):
# if the source is in 10.8.0.0/24 **and** the destination is not, **and** the packet leaves
# through `eth0`, then count it and `masquerade` (source := the address of `eth0`).
#
# The `counter` shows how many connections used it: NAT looks only at the first packet of
# each connection; conntrack translates the rest.

# %%
def nat_packets():
    text = lab.run("r2", "nft list table ip vpnlab").stdout
    return int(re.search(r"counter packets (\d+)", text).group(1))


n0 = nat_packets()
lab.sh("r1", "ping -c 3 -i 0.2 203.0.113.10")
n1 = nat_packets()
print(f"rule counter: {n0} -> {n1} (3 pings = 1 ICMP 'connection')")
lab.record("counter_delta_3_pings", n1 - n0)

# %% [markdown]
# ## The conntrack table
# Each line is one connection: first the **original** direction as it arrived (from
# 10.8.0.2), then the **reply** direction as r2 expects it back: to 198.51.100.2. That
# second half is the translation.

# %%
lab.whoami("r1")
ct = lab.sh("r2", "conntrack -L -p tcp --dport 80")
lab.sh("r2", "conntrack -L -p icmp")
m = re.search(r"src=(\S+) dst=(\S+) sport=\d+ dport=80 src=(\S+) dst=(\S+)", ct)
orig_src, orig_dst, reply_src, reply_dst = m.groups()
print(f"original: {orig_src} -> {orig_dst}; reply expected: {reply_src} -> {reply_dst}")
lab.record("conntrack", [orig_src, orig_dst, reply_src, reply_dst])

# %% [markdown]
# ## Without the rule
# What if r2 forwarded without masquerading? We delete the table for a moment: the request
# reaches the web host with source 10.8.0.2, its answer goes to the isp, which has no route to
# 10.8.0.0/24 and drops it. curl gives up after 2 s. Then we load the ruleset file again.

# %%
nft_file = lab.state_dir() / "r2-nat.nft"
try:
    lab.sh("r2", "nft delete table ip vpnlab")
    lab.run("r2", "conntrack -F")  # forget the old translations
    no_nat = lab.run("r1", "curl -s -m 2 http://203.0.113.10/")
    print("curl exit code without NAT:", no_nat.returncode, "(28 = timed out)")
    lab.sh("isp", "ip route get 10.8.0.2")
finally:
    lab.sh("r2", f"nft -f {nft_file}")
lab.record("no_nat_rc", no_nat.returncode)
lab.record("whoami_restored", lab.whoami("r1"))
print("with the rule back:", lab.whoami("r1"))

# %% [markdown]
# (The isp's `ip route get 10.8.0.2` fails: "Network is unreachable". Notebook 8, *Routing
# without NAT*, shows the other fix: a route back to the tunnel network instead of NAT.)
#
# ## Write the NAT rule yourself
# Write `nat_ruleset(network, external)`: the text of an nftables ruleset (for `nft -f`) with
# your own table and a `postrouting` chain of type `nat` that **masquerades** what comes from
# `network` (the tunnel, `10.8.0.0/24`), goes to anywhere but `network` and leaves through
# `external` (`eth0`). Only that: r2 may carry other traffic, which must leave as it came.
#
# The check takes the server's own rule away, loads yours in r2, fetches who-am-I from r1
# through the tunnel (web must see the server's address) and pings web from r2 with a source
# that is *not* the tunnel's, 10.8.1.5, while web's `eth0` is captured: that packet must arrive
# with its source unchanged. Then it removes your table and the server's rule comes back.

# %%
from vpnlab.course import behaviour, nat_exercise


def nat_ruleset(network: str, external: str) -> str:
    """SetRouting(0)'s NAT: masquerade from network, to anywhere else, out of external."""
    # your code here (a table, a chain, one rule)
    ### BEGIN SOLUTION
    return f"""
table ip mynat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {network} ip daddr != {network} oifname "{external}" masquerade
    }}
}}
"""
    ### END SOLUTION


behaviour.show(nat_exercise.check_nat_ruleset(lab, nat_ruleset))

# %% [markdown]
# The grade comes from the next cell's hidden test: `nbgrader autograde` runs the same check
# with your function on the instructor's side, in a fresh lab, and requires every fact.

# %%
### BEGIN HIDDEN TESTS
from vpnlab.course import behaviour, nat_exercise

behaviour.require(nat_exercise.check_nat_ruleset(lab, nat_ruleset))
### END HIDDEN TESTS

# %% [markdown]
# ## Exercises
# **4.1** Which address did the web host see without the VPN?
#
# **4.2** And with it?
#
# **4.3** In the conntrack entry of the HTTP connection, what is the destination address of
# the **reply** direction?
#
# **4.4** In which nftables hook does masquerading happen?

# %%
answer_4_1 = ...
### BEGIN SOLUTION
answer_4_1 = "192.0.2.2"
### END SOLUTION
course.check_answer("4.1", answer_4_1)

# %%
answer_4_2 = ...
### BEGIN SOLUTION
answer_4_2 = "198.51.100.2"
### END SOLUTION
course.check_answer("4.2", answer_4_2)

# %%
answer_4_3 = ...
### BEGIN SOLUTION
answer_4_3 = "198.51.100.2"
### END SOLUTION
course.check_answer("4.3", answer_4_3)

# %%
answer_4_4 = ...
### BEGIN SOLUTION
answer_4_4 = "postrouting"
### END SOLUTION
course.check_answer("4.4", answer_4_4)

# %%
# The fixed facts of this notebook (4.1, 4.2, 4.3, 4.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "4.1": (answer_4_1, "192.0.2.2"),
        "4.2": (answer_4_2, "198.51.100.2"),
        "4.3": (answer_4_3, "198.51.100.2"),
        "4.4": (answer_4_4, "postrouting"),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - The server **masquerades** traffic from the tunnel network leaving `eth0`: the world
#   sees r2's address, so the answers come back to r2, which sends them into the tunnel.
# - One nftables rule in the `postrouting` hook does it; **conntrack** remembers each
#   connection's translation (original vs reply direction) and applies it to every packet.
# - Without NAT the web host still answers, to 10.8.0.2, but the answers die at the first
#   router that does not know 10.8.0.0/24 (here the isp).
