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
# # 0. Setup and topology
#
# This course takes apart a real VPN, one step of the design notes at a time. Everything runs in
# a **sealed lab**: four Linux network namespaces, connected by virtual cables (veth pairs).
# A network namespace is not a virtual machine: there is one kernel and one set of processes
# and files, but each namespace has a network stack of its own (interfaces, addresses, routes,
# firewall, sockets). None of it touches the machine's own network.
#
# | node | plays | address |
# |---|---|---|
# | `r1` | VPN **client** (runs `vpnlab client`) | 192.0.2.2 |
# | `isp` | the "internet": a router | 192.0.2.1, 198.51.100.1, 203.0.113.1 |
# | `r2` | VPN **server** + NAT (runs `vpnlab server`) | 198.51.100.2, tun0 10.8.0.1 |
# | `web` | a "who am I" web service | 203.0.113.10 |
#
# The notebooks run lab commands as subprocesses (`vpnlab lab ...`, `ip netns exec ...`):
# inside Jupyter an event loop is already running, and the synchronous APIs of pyroute2 and
# pyshark refuse to run in it. Every notebook builds its own lab under the prefix in
# `$VPNLAB_PREFIX` (default `nb-`: namespaces `nb-r1`, `nb-isp`, ...) and removes it at the end.
#
# This notebook: check the machine, build the lab, draw it, look at its namespaces,
# interfaces and routes.

# %%
import os
import shutil

from vpnlab.course import figures
from vpnlab.course import notebook as course

lab = course.CourseLab("00_setup_topology")
print("lab prefix:", lab.prefix)
assert os.geteuid() == 0, (
    "the lab needs root: start Jupyter with sudo scripts/netns-lab.sh notebook"
)
tools = {t: bool(shutil.which(t)) for t in ("ip", "nft", "tshark", "dumpcap", "conntrack", "curl")}
print(tools)
assert all(tools.values()), "missing tools: run sudo scripts/netns-lab.sh once (it installs them)"

# %% [markdown]
# ## Build the lab
# `lab.up()` runs `vpnlab lab up --prefix nb-`: namespaces, veth links, addresses, routes, the
# who-am-I service on `web`, then the VPN server on `r2` and the client on `r1`
# (ServerConnection, then ClientConnection). It takes a few seconds.

# %%
status = lab.up()
print(lab.vpnlab("lab", "status", show=False))

# %% [markdown]
# ## The topology, drawn from the lab's own status
# The picture below is made from `vpnlab lab status --json`: what exists right now, not a
# drawing of what should exist. The red dashed line is the tunnel: `tun0` on both ends.

# %%
import matplotlib.pyplot as plt

figures.draw_topology(status)
plt.show()

# %% [markdown]
# ## Namespaces, interfaces, routes
# `ip netns list` shows every named namespace on the machine; ours carry the prefix.
# `ip netns exec NS CMD` runs a command inside one; `lab.sh(node, cmd)` does exactly that.

# %%
namespaces = sorted(line.split()[0] for line in
                    os.popen("ip netns list").read().splitlines()
                    if line.startswith(lab.prefix))
print(namespaces)
lab.record("namespaces", namespaces)

# %%
for node in ("r1", "isp", "r2", "web"):
    lab.sh(node, "ip -br addr")
    lab.sh(node, "ip route")
    print()

# %% [markdown]
# `r1` has a `tun0` with 10.8.0.2 (given by the server during the handshake) and routes
# `0.0.0.0/1` and `128.0.0.0/1` via `tun0`: the client's **SetRouting(1)** (notebook 3).
# `r2` has `tun0` 10.8.0.1. Which process owns them? The lab's daemons:

# %%
for name, d in status["daemons"].items():
    print(f"{name:<10} node {d['node']:<4} pid {d['pid']:<8} alive {d['alive']}  log {d['log']}")
lab.record("daemons", sorted(status["daemons"]))
lab.record("r1_interfaces", sorted(status["nodes"]["r1"]["interfaces"]))

# %% [markdown]
# ## Proof that it works
# `vpnlab lab verify` pings the server through the tunnel and the web host, checks that the
# route to the web host leaves through `tun0`, and asks who-am-I who we are.

# %%
out = lab.vpnlab("lab", "verify")
lab.record("verify_ok", "all checks passed" in out)
answer = lab.whoami("r1")
print("who-am-I from r1:", answer)
lab.record("whoami", answer)

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell. An answer your lab shows (0.2, 0.4) is
# checked against your lab right away: compute it with code that reads the lab, as the
# instructor re-runs your notebook in a fresh lab of their own, where a copied value is wrong.
# A fixed fact (0.1, 0.3) is recorded and graded by your instructor, with the notebook's
# other facts.
#
# **0.1** How many network namespaces does the lab have (count them from `ip netns list`)?
#
# **0.2** Which node's namespace is the VPN server's? Give the full namespace name.
#
# **0.3** Who-am-I answered with an address. Whose address is it (`"r1"`, `"isp"`, `"r2"`)?
#
# **0.4** Who-am-I also serves your lab's own token at `/token`, drawn when the lab came up.
# Fetch it through the tunnel from r1 (`lab.whoami(node, url)`) and give it.

# %%
answer_0_1 = ...
### BEGIN SOLUTION
answer_0_1 = 4
### END SOLUTION
course.check_answer("0.1", answer_0_1)

# %%
answer_0_2 = ...
### BEGIN SOLUTION
answer_0_2 = lab.prefix + "r2"
### END SOLUTION
course.check_answer("0.2", answer_0_2, lab)

# %%
course.grade("0.2", answer_0_2, lab)

# %%
answer_0_3 = ...
### BEGIN SOLUTION
answer_0_3 = "r2"
### END SOLUTION
course.check_answer("0.3", answer_0_3)

# %%
answer_0_4 = ...
### BEGIN SOLUTION
answer_0_4 = lab.whoami("r1", "http://203.0.113.10/token")
### END SOLUTION
course.check_answer("0.4", answer_0_4, lab)

# %%
course.grade("0.4", answer_0_4, lab)

# %%
# The fixed facts of this notebook (0.1, 0.3) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "0.1": (answer_0_1, 4),
        "0.3": (answer_0_3, "r2"),
    }
)
### END HIDDEN TESTS

# %% [markdown]
# ## Clean up
# `vpnlab lab down` stops the daemons, deletes the namespaces (and with them every interface,
# route and nftables rule in them) and the state folder.

# %%
lab.down()
left = [ln for ln in os.popen("ip netns list").read().splitlines() if ln.startswith(lab.prefix)]
lab.record("left_after_down", left)
assert not left

# %% [markdown]
# ## What you learned
# - The lab is four network namespaces (one kernel, four network stacks; not virtual machines),
#   `r1` (VPN client), `isp`, `r2` (VPN server + NAT), `web`, joined by veth pairs, sealed from
#   the machine's own network.
# - `vpnlab lab up/status/verify/down` build, inspect, prove and remove it; `ip netns exec`
#   runs any command inside a node.
# - With the VPN up, `r1` has `tun0` (10.8.0.2), routes into it, and the web host sees `r2`.
