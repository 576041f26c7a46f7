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
# # 1. The TUN device: CreateTunDev and Ifconfig
#
# From the design notes, for both the server and the client:
#
# > - CreateTunDev()
# >   - ifreq struct - create and init virtual network interface tun0
# >   - ioctl - set attributes of network interface associated with fd.
# >   - return tunfd
# > - Ifconfig()
# >   - configure tun0 MTU and IP address
#
# A **TUN** device is a network interface whose "wire" is a file descriptor in a process. When
# the kernel routes a packet to `tun0`, the process `read()`s it from the fd; when the process
# `write()`s a packet to the fd, the kernel receives it as if it had arrived on `tun0`. That is
# the whole trick of the VPN: the daemon reads packets from `tun0`, wraps them in UDP and sends
# them to its peer, which writes them into its own `tun0`.
#
# In this notebook **you** are the daemon: we open a TUN device inside `r1` by hand, let the
# kernel route a ping into it, decode the packet with scapy, and write the answer back.
# In the code: `vpnlab/shell/tun.py` (`ifreq`, `create_tun_dev`, `ifconfig`).

# %%
import fcntl
import os
import select
import stat
import struct
import time

from vpnlab.course import notebook as course
from vpnlab.shell import tun

lab = course.CourseLab("01_tun_device")
lab.up(vpn=False)  # the lab without the VPN daemons: r1 has no tun0 yet
lab.sh("r1", "ip -br link")

# %% [markdown]
# ## The `ifreq` struct, byte by byte
# ```c
# struct ifreq {                 /* 40 bytes on Linux x86-64 */
#     char  ifr_name[IFNAMSIZ];  /* 16: "tun0", NUL-padded: at most 15 characters */
#     short ifr_flags;           /*  2: IFF_TUN | IFF_NO_PI */
#     ...                        /* 22: the rest of a union, zero here */
# };
# ```
# In Python, `struct.pack` builds the same bytes: `16s` (16-byte string), `H` (unsigned short,
# native byte order: little-endian on x86) and `22x` (22 zero bytes).

# %%
IFF_TUN, IFF_TAP, IFF_NO_PI = 0x0001, 0x0002, 0x1000
req = struct.pack("16sH22x", b"tun0", IFF_TUN | IFF_NO_PI)
print(len(req), "bytes")
print(course.hexdump(req))
assert req == tun.ifreq("tun0", tun.IFF_TUN | tun.IFF_NO_PI)  # what the daemons send
lab.record("ifreq_len", len(req))
lab.record("ifreq_flags_bytes", req[16:18].hex())

# %% [markdown]
# Bytes 16-17 are `01 10`: the flags `0x1001` little-endian, `IFF_TUN` (0x0001) plus
# `IFF_NO_PI` (0x1000).
#
# ## `ioctl(fd, TUNSETIFF, &ifr)`
# The request number is built by the kernel's `_IOW('T', 202, int)` macro: direction "write"
# (1) in bits 30-31, the argument size (4) in bits 16-29, the type `'T'` in bits 8-15 and the
# number 202 in bits 0-7.

# %%
TUNSETIFF = (1 << 30) | (4 << 16) | (ord("T") << 8) | 202
print(hex(TUNSETIFF))
assert TUNSETIFF == tun.TUNSETIFF

# %% [markdown]
# Now CreateTunDev, by hand. A TUN device belongs to the network namespace of the process
# that opens `/dev/net/tun`; `course.netns("nb-r1")` moves this notebook's thread into `r1`
# for the `with` block only, so `tun0` appears in `r1` and not on this machine.
# The fd keeps working after the block.

# %%
with course.netns(lab.ns("r1")):
    tunfd = os.open("/dev/net/tun", os.O_RDWR)
    answer = fcntl.ioctl(tunfd, TUNSETIFF, req)
name = answer[:16].rstrip(b"\0").decode()
print("tunfd =", tunfd, " interface:", name)
lab.sh("r1", "ip -d link show tun0")

# %% [markdown]
# `ip -d link` says `tun type tun pi off`: a TUN device, no packet-information header.
# It is `DOWN` and has no address: that is **Ifconfig**'s job (the daemons do it with
# netlink, `vpnlab/shell/tun.py`: `ifconfig`; here with `ip`). The address's /24 also gives the
# kernel a route:
# `10.8.0.0/24 dev tun0`.

# %%
lab.sh("r1", "ip addr add 10.8.0.2/24 dev tun0")
lab.sh("r1", "ip link set tun0 mtu 1400 up")
lab.sh("r1", "ip route")
lab.sh("r1", "ip route get 10.8.0.1")

# %% [markdown]
# ## The kernel routes a packet into tun0, we read it
# `ping 10.8.0.1` in `r1`: the route says `dev tun0`, so the echo request comes out of our fd.
# Nobody else is reading it: we are the only "wire" of `tun0`.

# %%
from scapy.all import ICMP, IP, Ether, raw


def read_packet(fd, want, timeout_s=3.0):
    """Read from fd until want(data) is true (or the timeout); returns the bytes or None."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 65535)
            if want(data):
                return data
    return None


ping = lab.popen("r1", "ping -c 1 -W 5 10.8.0.1")
packet = read_packet(tunfd, lambda d: d[0] >> 4 == 4 and d[9] == 1)  # IPv4, protocol ICMP
print(len(packet), "bytes read from tunfd")
print(course.hexdump(packet))
request = IP(packet)
request.show()
lab.record("read_summary", request.summary())
lab.record("read_src_dst", [request.src, request.dst])

# %% [markdown]
# The first byte is `0x45`: IP version 4, header length 5 x 4 = 20 bytes. No Ethernet header
# (a TUN carries IP packets, layer 3) and no 4-byte prefix (`IFF_NO_PI`). The source is
# `10.8.0.2`, the address we gave `tun0`.
#
# ## We write the answer back
# We play the other end of the tunnel: build an echo reply with scapy (swap addresses, same
# id, sequence and payload) and `write()` it to the fd. The kernel receives it on `tun0` and
# hands it to `ping`, which is still waiting.

# %%
reply = IP(src=request.dst, dst=request.src) / ICMP(
    type="echo-reply", id=request[ICMP].id, seq=request[ICMP].seq) / raw(request[ICMP].payload)
os.write(tunfd, raw(reply))
out, _ = ping.communicate(timeout=10)
print(out)
lab.record("ping_rc", ping.returncode)
lab.record("ping_received", "1 received" in out)

# %% [markdown]
# `ping` got its answer from a process, not a host: that is what the VPN server's `tun0` does
# for every packet it receives from the tunnel.
#
# ## Without `IFF_NO_PI`: a 4-byte header in front of every packet
# Without the flag, every read starts with `struct tun_pi`: 2 bytes of flags and 2 bytes of
# protocol (the EtherType, big-endian: `0x0800` for IPv4). The daemons ask for `IFF_NO_PI` so
# that one read is exactly one IP packet.

# %%
with course.netns(lab.ns("r1")):
    pifd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(pifd, TUNSETIFF, struct.pack("16sH22x", b"tunpi", IFF_TUN))
lab.sh("r1", "ip addr add 10.9.0.2/24 dev tunpi")
lab.sh("r1", "ip link set tunpi up")
ping = lab.popen("r1", "ping -c 1 -W 1 10.9.0.1")
data = read_packet(pifd, lambda d: len(d) > 4 and d[4] >> 4 == 4)
ping.communicate(timeout=10)
print(course.hexdump(data[:24]))
flags, proto = struct.unpack("!HH", data[:4])
print(
    f"tun_pi: flags {flags:#06x}, proto {proto:#06x};",
    f"then the IP packet: {IP(data[4:]).summary()}",
)
lab.record("pi_proto", proto)

# %% [markdown]
# ## `IFF_TAP`: Ethernet frames instead of IP packets
# A TAP device is a layer-2 interface: the kernel treats it like an Ethernet card, so before
# it can send an IP packet to 10.10.0.1 it must find that address's MAC: the first thing we
# read is an **ARP request**, inside an Ethernet frame.
#
# (Not "by destination IP for TUN and by MAC for TAP": the kernel **routes** by destination IP
# in both cases; here the route `10.10.0.0/24 dev tap0` chose the device, as `10.8.0.0/24 dev
# tun0` did above. What TAP adds is the Ethernet link below the routing decision: ARP to find
# the next hop's MAC, an Ethernet header on every frame, and on the way in a frame is accepted
# only if it is addressed to tap0's MAC (or broadcast/multicast). Switching by MAC happens only
# if tap0 joins a bridge, or in a daemon that plays one: `vpnlab server --mode tap`.)

# %%
with course.netns(lab.ns("r1")):
    tapfd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tapfd, TUNSETIFF, struct.pack("16sH22x", b"tap0", IFF_TAP | IFF_NO_PI))
lab.sh("r1", "ip addr add 10.10.0.2/24 dev tap0")
lab.sh("r1", "ip link set tap0 up")
ping = lab.popen("r1", "ping -c 1 -W 2 10.10.0.1")
frame = read_packet(tapfd, lambda d: len(d) >= 14 and d[12:14] == b"\x08\x06")  # ARP
Ether(frame).show()
lab.record("tap_first", Ether(frame).summary())

# %% [markdown]
# ## SEED Task 9: answer the ARP request yourself
# Nobody is at 10.10.0.1: on a TAP device, **we** are the wire. So we play the neighbour:
# craft an ARP reply "10.10.0.1 is at 02:00:5e:00:53:99" with scapy (`arp.arp_reply`, the
# course's TAP experiment in `vpnlab/course/arp.py`) and write it to `tap0`. If the kernel
# believes it, its neighbour table gets the entry (`REACHABLE`: just confirmed), and the ping
# it held back while it waited for an answer leaves at once, addressed to **our** made-up
# MAC. (Here the kernel's own ARP lookup, for the ping, asks first; SEED's `arping` comes
# next.)

# %%
from vpnlab.course import arp

FAKE_MAC = "02:00:5e:00:53:99"
reply = arp.arp_reply(frame, FAKE_MAC)
Ether(reply).show()
os.write(tapfd, reply)
after = read_packet(tapfd, lambda d: len(d) >= 14 and d[12:14] == b"\x08\x00")  # IPv4
neigh = lab.sh("r1", "ip neigh show 10.10.0.1 dev tap0")
print("next frame from the kernel:", Ether(after).summary(), "to", Ether(after).dst)
ping.communicate(timeout=10)
lab.record("tap_neigh", neigh)
lab.record("tap_after_reply", [Ether(after).dst, Ether(after).summary()])

# %% [markdown]
# SEED's own tool for this is **arping**: it sends an ARP request for an address out of one
# interface and prints who answered. Ask for 10.10.0.7, an address nobody has, and answer it
# from the notebook again: arping reports a "reply" from our made-up MAC, because on a TAP
# device whatever the program writes *is* the wire.

# %%
arping = lab.popen("r1", "arping -c 1 -w 5 -I tap0 10.10.0.7")
request = read_packet(tapfd, lambda d: len(d) >= 14 and d[12:14] == b"\x08\x06", timeout_s=5)
print("arping asked:", Ether(request).summary())
os.write(tapfd, arp.arp_reply(request, FAKE_MAC))
arping_out, _ = arping.communicate(timeout=10)
print(arping_out)
lab.record("arping", arping_out)
# SEED task 9's check, on what the kernel and arping did (nothing for you to type here):
course.observe(
    "1.5",
    {
        "the neighbour table holds our MAC, REACHABLE": FAKE_MAC in neigh and "REACHABLE" in neigh,
        "the held-back ping left for our MAC": Ether(after).dst == FAKE_MAC,
        "arping got its reply from our MAC": FAKE_MAC.upper() in arping_out.upper(),
    },
)

# %% [markdown]
# ## CleanUp
# A TUN device made like this is not persistent: closing the last fd removes the interface
# (and its address and routes) from the kernel.

# %%
for fd in (tunfd, pifd, tapfd):
    os.close(fd)
gone = lab.sh("r1", "ip -br link")
lab.record("links_after_close", gone)

# %% [markdown]
# ## The notes' test: is tun0 in sysfs?
# The design notes check a running VPN with `ls /sys/devices/virtual/net/`: every interface
# without hardware behind it (loopback, veth, tun) has a directory there. `ip netns exec`
# mounts a sysfs of the node's own namespace, so in r1 we see r1's interfaces. Now the real
# daemons (ServerConnection, ClientConnection), and the listing while the client runs:

# %%
lab.start_vpn()
listing = lab.sh("r1", "ls /sys/devices/virtual/net/")
lab.record("sysfs_virtual_net", listing.split())

# %% [markdown]
# `tun0` is listed, next to `eth0` (a veth: virtual too) and `lo`.
#
# The notes also say the daemon reads the tun fd like a "raw socket". It is not a socket: it
# is the file descriptor of a **character device**, `/dev/net/tun` (`c`, major 10, minor 200),
# bound to `tun0` by `TUNSETIFF`; a `read()` takes one packet the kernel routed to `tun0`, and
# what the daemon does not read, nobody gets. A raw socket is another thing:
# `socket(AF_PACKET, SOCK_RAW)` (or `AF_INET, SOCK_RAW`) receives *copies* of the packets of
# an interface, beside the kernel's own processing. The client's open files show the
# difference: its tun fd points to `/dev/net/tun`, its UDP socket to `socket:[inode]`.

# %%
lab.sh("r1", "ls -l /dev/net/tun")
client = lab.daemon_pid("client-r1")
fd_targets = {}
for fd in sorted(os.listdir(f"/proc/{client}/fd"), key=int):
    try:
        fd_targets[int(fd)] = os.readlink(f"/proc/{client}/fd/{fd}")
    except OSError:  # closed meanwhile
        continue
print({fd: t for fd, t in fd_targets.items() if t == "/dev/net/tun" or t.startswith("socket:")})
lab.record("client_fd_targets", sorted({t for t in fd_targets.values()
                                        if t == "/dev/net/tun" or t.startswith("socket:")}))
lab.record("dev_net_tun_is_char_device", stat.S_ISCHR(os.stat("/dev/net/tun").st_mode))

# %% [markdown]
# ## Exercises
# **1.1** How many bytes is the `ifreq` struct we passed to `ioctl`?
#
# **1.2** The first 4 bits of every packet read from `tun0` give the IP version. Which value
# did you see?
#
# **1.3** Which flag (give its numeric value) would make `tun0` carry Ethernet frames?
#
# **1.4** Without `IFF_NO_PI`, what protocol number (an EtherType) precedes an IPv4 packet?
# Give it as an integer, e.g. `0x86DD` for IPv6.

# %%
answer_1_1 = ...
### BEGIN SOLUTION
answer_1_1 = 40
### END SOLUTION
course.check_answer("1.1", answer_1_1)

# %%
answer_1_2 = ...
### BEGIN SOLUTION
answer_1_2 = 4
### END SOLUTION
course.check_answer("1.2", answer_1_2)

# %%
answer_1_3 = ...
### BEGIN SOLUTION
answer_1_3 = 0x0002
### END SOLUTION
course.check_answer("1.3", answer_1_3)

# %%
answer_1_4 = ...
### BEGIN SOLUTION
answer_1_4 = 0x0800
### END SOLUTION
course.check_answer("1.4", answer_1_4)

# %%
# The fixed facts of this notebook (1.1, 1.2, 1.3, 1.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "1.1": (answer_1_1, 40),
        "1.2": (answer_1_2, 4),
        "1.3": (answer_1_3, 0x0002),
        "1.4": (answer_1_4, 0x0800),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - **CreateTunDev** is `open("/dev/net/tun")` + `ioctl(TUNSETIFF)` with a 40-byte `ifreq`:
#   name, then flags (`IFF_TUN | IFF_NO_PI`). The device lives in the opener's namespace and
#   disappears when the fd is closed.
# - **Ifconfig** gives it an address, an MTU and brings it up; the address's prefix is a route.
# - Reading the fd gives the packets the kernel routes to `tun0`; writing a packet makes the
#   kernel receive it on `tun0`. A VPN daemon is a loop doing exactly that (notebook 2).
# - `IFF_TAP` carries Ethernet frames (hence ARP); routing still goes by destination IP, TAP
#   adds the Ethernet link (ARP, MAC filtering, bridging). Without `IFF_NO_PI` each packet gets
#   a 4-byte flags + protocol header.
# - A running client shows `tun0` in `/sys/devices/virtual/net/`; its tun fd is a character
#   device's (`/dev/net/tun`), not a raw socket.
