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
# # 15. The kernel as data plane: the control plane and the data plane, split
#
# A real IPsec VPN is two programs. strongSwan's `charon` runs IKE in userspace: it finds the
# peer, proves who is who, agrees on keys and renews them. Then it hands the keys to the
# **kernel** (`ip xfrm state`, `ip xfrm policy`), and from there on every data packet is
# sealed and opened by the kernel's ESP; charon never sees one. vpnlab can do the same:
# `vpnlab client --kernel-dataplane` shakes hands in Python as always (Hello, Welcome), then
#
# | step | who | what |
# |---|---|---|
# | handshake | Python | non-ESP marker `00000000`: the kernel passes it to the socket |
# | hand-off | Python | two xfrm **states** (our SAs, `encap espinudp`), xfrm **policies** |
# | data | kernel | seals what the policies select; opens ESP arriving on port 4500 |
# | keepalive | Python | RFC 3948 NAT-keepalive (0xFF), never ESP (no nonce reused) |
# | rekey, CleanUp | Python | new states for new keys; the states and policies removed |
#
# The policies say which inner packets go in (those routed to tun0); the kernel's sequence
# numbers start where Python's ended, so no GCM nonce is used twice.
#
# In the code: `vpnlab/shell/xfrm.py` (`KernelDataplane.hand_over`), `hand_to_kernel` in
# `vpnlab/shell/client.py`. The server does the same for each client (`vpnlab server
# --kernel-dataplane`, `KernelSessions` in `vpnlab/shell/server.py`). The kernel must have
# ESP: the lab's may not. We ask it.

# %%
import os

import matplotlib.pyplot as plt

from vpnlab.course import dataplane
from vpnlab.course import notebook as course
from vpnlab.shell.xfrm import kernel_has_esp

lab = course.CourseLab("15_kernel_dataplane")
why = kernel_has_esp("esp-aes-gcm")
print("this kernel has ESP" if why is None else f"this kernel has no ESP ({why})")
lab.record("kernel_has_esp", why is None)

# %% [markdown]
# ## A kernel that has ESP: Debian's, in a VM
# Where the lab's kernel has no ESP, the experiment runs in a small VM: Debian's stock kernel
# under QEMU, joined to r2 by a TAP device (`vpnlab/lab/vm.py`; the VM runs the host's own
# programs, so it is the same vpnlab). The client runs in the VM twice, once with Python's
# data path and once with `--kernel-dataplane`; the server is vpnlab in r2 both times. Under
# an emulated CPU this takes a few minutes, so by default we show the result of a run saved
# with `python -m vpnlab.course.dataplane` (`vpnlab/course/dataplane_vm.json`); set
# `VPNLAB_RUN_VM=1` to run it here (root, `qemu-system-x86`).

# %%
if os.environ.get("VPNLAB_RUN_VM") == "1":
    result = dataplane.compare(lab.prefix + "vm-")
    print("measured now")
else:
    result = dataplane.saved_result()
    print(f"saved run of {result['when']} (Linux {result['kernel_release']} under TCG)")
paths = result["paths"]
for name, path in paths.items():
    print(f"{name:7} xfrm states {path['xfrm_states']}  pings answered {path['pings_answered']}"
          f"  {path['mbit_s']} Mbit/s")
lab.record("xfrm_states", {name: path["xfrm_states"] for name, path in paths.items()})

# %% [markdown]
# ## The same bytes on the wire
# Python's ESP and the kernel's ESP are the same protocol, so a capture of either opens with
# the `esp_sa` rows vpnlab exports (`--esp-sa-file`): tshark does not know who sealed them.
# The stacks below are what tshark said about each UDP datagram on the TAP device, decrypted
# with the rows of its own session: the handshake (`isakmp`: the non-ESP marker looks like
# IKE to tshark), the keepalives, and the pings inside ESP.

# %%
for name, path in paths.items():
    stacks = sorted(set(path["stacks"]))
    print(name)
    for stack in stacks:
        print(f"  {path['stacks'].count(stack):3}  {stack}")
pings = {
    name: sum(s.endswith("esp:ip:icmp:data") for s in p["stacks"]) for name, p in paths.items()
}
lab.record("decrypted_pings", pings)

# %% [markdown]
# ## Python's data path against the kernel's
# iperf3 (TCP, from the VM to the server's tunnel address) for a few seconds each way of
# running the client. Both run on the same emulated CPU, and the server is Python both times,
# so the difference is only the client's data path: each packet through tun0, a system call
# and Python's AES-GCM, or straight through the kernel's xfrm.

# %%
names = list(paths)
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(names, [paths[n]["mbit_s"] for n in names], color=["tab:blue", "tab:green"])
ax.set_ylabel("Mbit/s (iperf3, under TCG)")
ax.set_title("the client's data path")
plt.show()
lab.record("mbit_s", {n: paths[n]["mbit_s"] for n in names})

# %% [markdown]
# ## What the split costs
# - The daemon no longer sees data, so it cannot use it as proof that the peer is alive, and
#   the kernel eats the NAT-keepalives: the liveness timeout is off (as with `--kernel-peer`).
# - A vpnlab server in Python still sends its keepalives as ESP dummy packets (next header
#   59): the client's kernel drops each one and counts it in `/proc/net/xfrm_stat` as
#   `XfrmInStateProtoError`.
# - Nothing sealed in userspace may use the kernel's SA after the hand-off: the kernel's
#   counter starts where Python's stopped (`replay-oseq`), and Python seals nothing more.

# %% [markdown]
# ## Exercises
# **15.1** Which value does the daemon give `setsockopt(IPPROTO_UDP, UDP_ENCAP, ...)` so that
# the kernel opens the ESP arriving on its socket?
#
# **15.2** How many xfrm states does the client's kernel hold for one session?
#
# **15.3** Which counter of `/proc/net/xfrm_stat` grows at the kernel-data-plane client with
# each keepalive of a vpnlab server in Python?

# %%
answer_15_1 = ...
### BEGIN SOLUTION
answer_15_1 = 2
### END SOLUTION
course.check_answer("15.1", answer_15_1)

# %%
answer_15_2 = ...
### BEGIN SOLUTION
answer_15_2 = 2
### END SOLUTION
course.check_answer("15.2", answer_15_2)

# %%
answer_15_3 = ...
### BEGIN SOLUTION
answer_15_3 = "XfrmInStateProtoError"
### END SOLUTION
course.check_answer("15.3", answer_15_3)

# %%
# The fixed facts of this notebook (15.1, 15.2, 15.3) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "15.1": (answer_15_1, 2),
        "15.2": (answer_15_2, 2),
        "15.3": (answer_15_3, "XfrmInStateProtoError"),
    }
)
### END HIDDEN TESTS

# %%
lab.down()  # nothing to remove here (the VM's lab, if it ran, is gone already): the habit

# %% [markdown]
# ## What you learned
# - The control plane (handshake, keepalives, rekeys, CleanUp) and the data plane (sealing
#   and opening every packet) can live apart: vpnlab in Python for the first, the kernel's
#   xfrm for the second, as strongSwan and the kernel share IPsec.
# - The hand-off is two xfrm states (one SA each way, `encap espinudp`), policies that choose
#   which inner packets go in, and `UDP_ENCAP_ESPINUDP` on the daemon's socket; the non-ESP
#   marker keeps the handshake out of the kernel's way.
# - The same esp_sa rows decrypt both: ESP is ESP, whoever seals it.
# - The kernel's path skips tun0, a system call per packet and Python's crypto.
