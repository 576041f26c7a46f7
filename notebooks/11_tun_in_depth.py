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
# # 11. The TUN device in depth
#
# Notebook 1 opened `tun0` by hand. Here we look at the corners: names chosen by the kernel,
# the length limit of a name, what `ip -d link` says about a TUN device, what the kernel
# sends into a fresh TUN device **on its own**, and what happens when we write something that
# is not an IP packet. In the code: `vpnlab/shell/tun.py` (`ifreq`, `create_tun_dev`) and
# `vpnlab/shell/tunnel.py` (`TunDevice.write`, which writes to `tun0`).

# %%
import errno
import os
import select
import time

from scapy.all import IPv6

from vpnlab.core.errors import SetupError
from vpnlab.core.session import Counters
from vpnlab.course import notebook as course
from vpnlab.shell import tun, tunnel

lab = course.CourseLab("11_tun_in_depth")
lab.up(vpn=False)


def read_all(fd, seconds):
    """Everything the kernel writes into fd within the given time, as (time, bytes)."""
    got, start = [], time.monotonic()
    while (left := start + seconds - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            got.append((time.monotonic() - start, os.read(fd, 65535)))
    return got


# %% [markdown]
# First the picture to keep in mind: the same ping, as one `os.read()` returns it from a TUN
# device without packet info (vpnlab's `tun0`: `IFF_NO_PI`), from one with it (4 bytes of
# `tun_pi` in front: flags and the EtherType, notebook 1), and from a TAP device (a whole
# Ethernet frame: SEED task 9, below).

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_reads()
plt.show()

# %% [markdown]
# ## A name from a template: your name and `%d`
# If the name in the `ifreq` contains `%d`, the kernel replaces it with the first free
# number and writes the real name back into the `ifreq` it returns (`create_tun_dev` reads
# it from there). Two devices from the same template, made of **your** user name (the one
# you logged in with: `SUDO_USER` if you ran the lab with sudo, else your account's name from
# the password database), cut to 12 letters and digits so that name and number fit in 15:

# %%
import pwd
import re

user = os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
template = re.sub(r"[^a-z0-9]", "", user.lower())[:12] + "%d"
with course.netns(lab.ns("r1")):
    fd0, name0 = tun.create_tun_dev(template)
    fd1, name1 = tun.create_tun_dev(template)
print(f"you are {user}; asked for {template}, got:", name0, "and", name1)
details = lab.sh("r1", f"ip -d link show {name0}")
lab.record("template", template)
lab.record("template_names", [name0, name1])
lab.record("pi_off", "pi off" in details)

# %% [markdown]
# `ip -d` (details) shows the device's driver settings: `tun type tun` (not `tap`), **`pi
# off`** (our `IFF_NO_PI`: no 4-byte header in front of each packet), `vnet_hdr off` (no
# offload header, see the fast data path), `persist off` (it goes away with its last fd),
# and `link/none`: a TUN device has no MAC address, it is layer 3 only.
#
# ## At most 15 characters
# `ifr_name` is 16 bytes and must end with a NUL, so a name has at most 15 characters
# (`IFNAMSIZ - 1`). `struct.pack("16s", ...)` would silently cut a longer name (and drop its
# NUL), so `vpnlab/shell/tun.py: ifreq` refuses it with a clear error before the kernel sees it:

# %%
try:
    tun.ifreq("vpnlab-tunnel-0001", tun.IFF_TUN | tun.IFF_NO_PI)
except SetupError as exc:
    long_error = str(exc)
print(long_error)
print(len("vpnlab-tunnel-0001"), "characters; this one fits:",
      tun.ifreq("vpnlab-tunnel-1", tun.IFF_TUN)[:16])
lab.record("long_name_error", long_error)
for fd in (fd0, fd1):
    os.close(fd)

# %% [markdown]
# ## What the kernel sends on its own
# The lab is dual stack, so IPv6 is on in every node (`vpnlab lab up --ipv6 off` would switch
# it off with `disable_ipv6`, a per-namespace sysctl; the sysctl below makes sure it is on).
# We open a fresh TUN device: as soon as it is up, the kernel starts IPv6 on it and **sends
# packets into it by itself**: a router solicitation (scapy: `ICMPv6ND_RS`, "is there a router
# on this link?", from the device's new link-local address to ff02::2, all routers), repeated
# every few seconds, and on some kernels multicast listener reports (MLD). Nobody asked for
# them: they come from the kernel's IPv6 autoconfiguration.

# %%
lab.sh("r1", "sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0")
with course.netns(lab.ns("r1")):
    fresh, fresh_name = tun.create_tun_dev("fresh%d")
lab.sh("r1", f"ip link set {fresh_name} up")
unasked = read_all(fresh, 2.5)
kinds = []
for t, data in unasked:
    packet = IPv6(data) if data[0] >> 4 == 6 else None
    summary = packet.summary() if packet else data[:20].hex()
    kinds.append(summary)
    print(f"{t:4.2f} s  {len(data):3} bytes  version {data[0] >> 4}  {summary}")
lab.record("unasked_versions", sorted({data[0] >> 4 for _, data in unasked}))
lab.record("unasked_kinds", kinds)

# %% [markdown]
# The first nibble is **6**: IPv6, never 4. A VPN daemon reading `tun0` gets these too.
#
# ## ... and what the daemons do with them
# vpnlab carries IPv4 and IPv6, but not IPv6 that belongs to tun0's own link (from `::` or
# fe80::, to ff02::...). The client and the server read such a packet from `tun0` like any
# other and drop it, counted as **"tun: ipv6 link scope"** (`client_core.ClientCore.send_packets`,
# `server_core.ServerCore.send_packets`): never a crash, never sent. With IPv6 still on in r1,
# we start the VPN: the client's new `tun0` gets the same unasked packets.

# %%
lab.start_vpn()
course.wait_for(lambda: (lab.status()["tunnel"]["clients"]["r1"] or {}).get("counters", {})
                .get("drops", {}).get("tun: ipv6 link scope", 0) > 0, timeout_s=6, interval_s=0.5)
counters = lab.status()["tunnel"]["clients"]["r1"]["counters"]
print("client drops:", counters["drops"])
lab.sh("r1", "ping -c 1 -W 2 203.0.113.10")
lab.record("client_not_ipv4", counters["drops"].get("tun: ipv6 link scope", 0))
lab.record("verify_ok", lab.vpnlab("lab", "verify", "--json", show=False).count('"ok": true') > 0)

# %% [markdown]
# The tunnel works as before; the IPv6 packets were counted and dropped.
#
# ## Writing something that is not an IP packet
# The other direction: what if a process writes bytes into `tun0` that are not an IP packet?
# The kernel's TUN driver looks at the first nibble (4 or 6, as there is no header to tell it
# the protocol) and refuses anything else with **EINVAL**; the device's receive-drop counter
# goes up.

# %%
before = lab.sh("r1", f"cat /sys/class/net/{fresh_name}/statistics/rx_dropped", show=False)
try:
    os.write(fresh, b"\x00hello, I am not an IP packet")
    write_errno = 0
except OSError as exc:
    write_errno = exc.errno
    print(f"os.write: [Errno {exc.errno}] {errno.errorcode[exc.errno]}: {exc.strerror}")
after = lab.sh("r1", f"cat /sys/class/net/{fresh_name}/statistics/rx_dropped", show=False)
print(f"{fresh_name} rx_dropped: {before} -> {after}")
lab.record("write_errno", errno.errorcode.get(write_errno, "none"))
lab.record("rx_dropped_delta", int(after) - int(before))

# %% [markdown]
# Only the nibble is checked: `b"\x45"` followed by garbage is accepted by the driver (the
# write returns its length) and thrown away later by the IP layer, which checks the header.
#
# The simple data path writes to `tun0` in one place, `tunnel.TunDevice.write`. The daemons
# only write what opened as an IPv4 or IPv6 packet (plain checks the version nibble, ESP
# checks that it matches the next-header field), but if a write fails anyway, `write` counts
# it as **"tun write: <reason>"** and carries on. Here is that very method, on our device:

# %%
print("b'\\x45' + garbage:", os.write(fresh, b"\x45" + bytes(7)), "bytes accepted")
device = tunnel.TunDevice(fresh, Counters().drops)
device.write([b"\x00not an IP packet"])
print("counted by TunDevice.write:", dict(device.drops))
lab.record("tun_write_drops", dict(device.drops))
os.close(fresh)

# %% [markdown]
# ## Write to the TUN device yourself (SEED task 2.d)
# Notebook 1 wrote one echo reply by hand. Now you write the function a responder needs:
# `echo_reply(packet)` gets every packet the kernel sends into a TUN device and returns the
# packet to write back: for an IPv4 ICMP **echo request**, its echo reply (source and
# destination swapped, ICMP type 0, same identifier, sequence number and data, both
# checksums right); for anything else `None`: the kernel sends IPv6 router solicitations
# into the device too (above). scapy does the checksums if you let it (`bytes(IP(...)/ICMP(...)
# /payload)`), or use `struct` and `vpnlab.core.packet.internet_checksum`.
#
# The check gives r1 a TUN device `ex2d0` with 10.66.0.1/24, hands each packet it reads to
# your function, writes what it returns and pings 10.66.0.2 from r1: the kernel accepts a
# reply only if every field is right, and `ping` counts what it accepted.

# %%
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from vpnlab.course import tuntap_exercise


def echo_reply(packet: bytes) -> bytes | None:
    """The reply to an IPv4 echo request read from a TUN device; None for anything else."""
    # your code here (about 6 lines)
    ### BEGIN SOLUTION
    if not packet or packet[0] >> 4 != 4:
        return None
    request = IP(packet)
    if ICMP not in request or request[ICMP].type != 8:
        return None
    echo = request[ICMP]
    return bytes(IP(src=request.dst, dst=request.src)
                 / ICMP(type=0, id=echo.id, seq=echo.seq) / echo.payload)
    ### END SOLUTION


course.observe("11.5", tuntap_exercise.check_echo_reply(lab, echo_reply))

# %% [markdown]
# ## Answer ARP on a TAP device yourself (SEED task 9)
# A TAP device carries Ethernet frames, so before the kernel sends an IP packet to a
# neighbour it asks for the neighbour's MAC address with an **ARP request** (notebook 1's
# *TAP* experiment answered one with vpnlab's code). Write `arp_reply(frame, mac)`: for a
# frame holding an ARP request ("who has X? tell Y"), the ARP reply that claims X is at `mac`
# (an Ethernet frame to the asker, ARP op 2, sender = X at `mac`, target = the asker);
# `None` for any other frame (the kernel sends IPv6 frames there too).
#
# The check gives web a TAP device `ex9tap0` (10.10.0.1/24), serves it with your function and
# runs `arping 10.10.0.7` there: arping must be answered from the made-up MAC, and the
# kernel's neighbour table must hold it.

# %%
def arp_reply(frame: bytes, mac: str) -> bytes | None:
    """The reply to an ARP request read from a TAP device (X is at mac); None otherwise."""
    # your code here (about 6 lines)
    ### BEGIN SOLUTION
    asked = Ether(frame)
    if ARP not in asked or asked[ARP].op != 1:
        return None
    arp = asked[ARP]
    return bytes(Ether(dst=arp.hwsrc, src=mac)
                 / ARP(op=2, hwsrc=mac, psrc=arp.pdst, hwdst=arp.hwsrc, pdst=arp.psrc))
    ### END SOLUTION


course.observe("11.6", tuntap_exercise.check_arp_reply(lab, arp_reply))

# %% [markdown]
# The grade comes from the next cell's hidden tests: `nbgrader autograde` runs the same checks
# with your functions on the instructor's side, in a fresh lab, and requires every fact.

# %%
### BEGIN HIDDEN TESTS
from vpnlab.course import behaviour, tuntap_exercise

behaviour.require(tuntap_exercise.check_echo_reply(lab, echo_reply))
behaviour.require(tuntap_exercise.check_arp_reply(lab, arp_reply))
### END HIDDEN TESTS

# %% [markdown]
# ## Exercises
# **11.1** Which name did the kernel give the second device made from your template?
#
# **11.2** How many characters can an interface name have at most?
#
# **11.3** Which IP version did the packets the kernel sent on its own have?
#
# **11.4** Which errno name did writing a non-IP packet give?

# %%
answer_11_1 = ...
### BEGIN SOLUTION
answer_11_1 = name1
### END SOLUTION
course.check_answer("11.1", answer_11_1, lab)

# %%
answer_11_2 = ...
### BEGIN SOLUTION
answer_11_2 = 15
### END SOLUTION
course.check_answer("11.2", answer_11_2)

# %%
answer_11_3 = ...
### BEGIN SOLUTION
answer_11_3 = 6
### END SOLUTION
course.check_answer("11.3", answer_11_3)

# %%
answer_11_4 = ...
### BEGIN SOLUTION
answer_11_4 = "EINVAL"
### END SOLUTION
course.check_answer("11.4", answer_11_4)

# %%
# The fixed facts of this notebook (11.1, 11.2, 11.3, 11.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "11.1": (answer_11_1, template % 1),
        "11.2": (answer_11_2, 15),
        "11.3": (answer_11_3, 6),
        "11.4": (answer_11_4, "EINVAL"),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - `%d` in a TUN name is a template: the kernel picks the number and returns the real name
#   in the `ifreq`. Names have at most 15 characters; vpnlab refuses longer ones itself.
# - `ip -d link` shows the driver's settings: `tun type tun pi off vnet_hdr off persist off`.
# - A fresh TUN device with IPv6 on receives the kernel's own IPv6 traffic (router
#   solicitations, MLD reports); the daemons count it as "tun: ipv6 link scope" and drop it.
# - The TUN driver accepts only writes that start like IPv4 or IPv6 (EINVAL otherwise, and
#   `rx_dropped` grows); the daemons never write anything else, and count any failed write.
