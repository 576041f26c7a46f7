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
# # 14. The tunnel with IPv6: what changes and what does not
#
# Every real VPN carries both families, and WireGuard and OpenVPN users expect it. The lab is
# dual stack: each link has an IPv4 /24 and an IPv6 /64 of the documentation prefix
# 2001:db8::/32, and the tunnel has the ULA **fd10:8::/64** beside 10.8.0.0/24. IPv6 can be
# *inside* the tunnel (the packets on `tun0`) and *outside* it (the UDP datagrams between r1
# and r2), independently. We look at both, and at what stays exactly as it was.
#
# | link | IPv4 | IPv6 |
# |---|---|---|
# | r1 -- isp | 192.0.2.0/24 (r1 .2) | 2001:db8:1::/64 (r1 ::2) |
# | isp -- r2 | 198.51.100.0/24 (r2 .2) | 2001:db8:2::/64 (r2 ::2) |
# | isp -- web | 203.0.113.0/24 (web .10) | 2001:db8:3::/64 (web ::10) |
# | tunnel | 10.8.0.0/24 (r2 .1, r1 .2) | fd10:8::/64 (r2 ::1, r1 ::2) |

# %%
import time

from vpnlab.course import notebook as course
from vpnlab.instruments import capture

lab = course.CourseLab("14_ipv6")
info = lab.up(cipher="esp-aes-gcm")
client = info["tunnel"]["clients"]["r1"]
print("r1's tunnel addresses:", client["tunnel_address"], "and", client["tunnel_address6"])
lab.sh("r1", "ip -6 addr show dev tun0")
routes6 = lab.sh("r1", "ip -6 route")
lab.record("tunnel_address6", client["tunnel_address6"])
lab.record("v6_halves", "::/1 dev tun0" in routes6 and "8000::/1 dev tun0" in routes6)

# %% [markdown]
# ## Inside: the handshake assigns both addresses
# The Welcome still carries one address, 10.8.0.2/24. The client's IPv6 address is its
# **twin** in the ULA, with the same host part: 10.8.0.**2** is fd10:8::**2**
# (`core/pool.tunnel_address6`). So the handshake assigns both, and its wire format did not
# change at all. `tun0` has both, plus a link-local fe80:: address the kernel gave it.
#
# SetRouting(1) does for IPv6 what it does for IPv4: two halves, **::/1** and **8000::/1**,
# more specific than the default route, so they win without deleting it.

# %%
ping6 = lab.sh("r1", "ping -c 3 -i 0.2 -W 2 2001:db8:3::10")
seen6 = lab.whoami("r1", "http://[2001:db8:3::10]/")
seen4 = lab.whoami("r1")
print("who-am-I over IPv6:", seen6, "| over IPv4:", seen4)
nat66 = lab.sh("r2", "nft list table ip6 vpnlab")
lab.record("ping6_ok", " 0% packet loss" in ping6)
lab.record("whoami6_nat", seen6)
lab.record("nat66_rule", "masquerade" in nat66)

# %% [markdown]
# The IPv6 ping's way, hop by hop: the same as the IPv4 one of notebook 4, with IPv6 inside
# and, for now, IPv4 outside.

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_ping_path(
    [
        ("r1: ping", "fd10:8::2 -> 2001:db8:3::10\nICMPv6 echo request", "::/1, 8000::/1 dev tun0"),
        ("r1: client daemon", "read from tun0, sealed\n(next header 41: IPv6)", "TunSelected"),
        (
            "r1 eth0 -> isp",
            "192.0.2.2 -> 198.51.100.2\nUDP 4500 [ESP [IPv6 inner]]",
            "IPv4 outside",
        ),
        ("r2: server daemon", "opened, written to tun0", "SockSelected"),
        (
            "r2: forward + NAT66",
            "2001:db8:2::2 -> 2001:db8:3::10\nICMPv6 echo request",
            "ip6 masquerade",
        ),
        ("web", "echo reply to 2001:db8:2::2", "conntrack undoes NAT66 at r2"),
    ],
    title="one IPv6 ping through the tunnel (IPv4 outside), and back",
    back="the reply: the same way back\n(NAT66 undone and sealed at r2,\n"
    "opened and written to tun0 at r1)",
)
plt.show()

# %% [markdown]
# r2 does SetRouting(0) twice: `net.ipv6.conf.all.forwarding=1` beside `ip_forward`, and the
# masquerade rule again in an `ip6` table (**NAT66**): web sees r2's 2001:db8:2::2, as it sees
# 198.51.100.2 over IPv4. (A ULA is not routed on the Internet, just like 10.8.0.0/24; below
# we try the routed alternative.)
#
# ## The kernel's own IPv6 on tun0
# A fresh `tun0` with IPv6 on gets a link-local address and immediately sends **router
# solicitations** ("is there a router on this link?", to ff02::2) and MLD reports into it, by
# itself. They belong to tun0's link, not to anybody behind the tunnel, so both daemons drop
# them before sealing, and count them:

# %%
time.sleep(1.2)  # the status files are rewritten every second
drops = lab.status()["tunnel"]["clients"]["r1"]["counters"]["drops"]
print("client drops:", drops)
lab.record("link_scope_drops", drops.get("tun: ipv6 link scope", 0))

# %% [markdown]
# ## What the wire shows: IPv6 inside, IPv4 outside
# We capture on r1's `tun0` and `eth0` while fetching who-am-I over IPv6.

# %%
tun = capture.start_capture(lab.prefix, "r1", "tun0", "work/c14-tun0.pcapng", count=100)
eth = capture.start_capture(lab.prefix, "r1", "eth0", "work/c14-eth0.pcapng", count=100,
                            capture_filter=capture.CHATTER_FILTER)
lab.whoami("r1", "http://[2001:db8:3::10]/")
tun_file, eth_file = tun.stop(), eth.stop()
keys = capture.lab_keys(lab.prefix)
print("tun0:", capture.stack_counts(tun_file))
print("eth0:", capture.stack_counts(eth_file))
print("eth0, decrypted:", capture.stack_counts(eth_file, keys))
lab.record("tun_stacks", sorted(capture.stack_counts(tun_file)))
lab.record("eth_stacks", sorted(capture.stack_counts(eth_file)))
lab.record("eth_decrypted", sorted(capture.stack_counts(eth_file, keys)))

# %% [markdown]
# `tun0` shows **raw:ipv6:tcp** where notebook 5 showed `raw:ip:tcp`. On `eth0` nothing
# changed: still `eth:ethertype:ip:udp:udpencap:esp`, the notes' stack, because the outer
# packets are still IPv4. Only after decryption does the inner IPv6 appear: ESP's next header
# says **41** (IPv6) instead of 4 (IPv4), and that is the only difference in the ESP packet.
# (`CHATTER_FILTER` kept the kernel's neighbour discovery and MLD out of the eth0 capture, as
# "not arp" did before the lab was dual stack.)
#
# ## Outside: UDP 4500 over IPv6
# Now the other way round: the server listens on **2001:db8:2::2** and the client dials it
# (`vpnlab lab start-vpn --outer 6`, i.e. `vpnlab server --listen 2001:db8:2::2` and
# `vpnlab client --server 2001:db8:2::2`).

# %%
lab.vpnlab("lab", "start-vpn", "--outer", "6", show=False)
mtu6 = lab.sh("r1", "ip link show tun0")
lab.sh("r1", "ip -6 route get 2001:db8:2::2")
eth = capture.start_capture(lab.prefix, "r1", "eth0", "work/c14-eth0-v6.pcapng", count=100,
                            capture_filter=capture.CHATTER_FILTER)
lab.sh("r1", "ping -c 2 -i 0.2 -W 2 203.0.113.10")
eth_file = eth.stop()
keys6 = capture.lab_keys(lab.prefix)
print("esp_sa rows:", [row.split(",")[:3] for row in keys6])
print("eth0:", capture.stack_counts(eth_file))
print("eth0, decrypted:", capture.stack_counts(eth_file, keys6))
lab.record("mtu_outer6", int(mtu6.split(" mtu ")[1].split()[0]))
lab.record("eth6_stacks", sorted(capture.stack_counts(eth_file)))
lab.record("eth6_decrypted", sorted(capture.stack_counts(eth_file, keys6)))

# %% [markdown]
# The outer stack is now `eth:ethertype:ipv6:udp:udpencap:esp`, and it carries an IPv4 ping:
# inside and outside are independent. Two things follow from the bigger outer header (40
# bytes instead of 20):
#
# - the derived tun MTU is **20 bytes smaller**: 1500 - 40 - 8 - 37 = 1415 for esp-aes-gcm
#   (1435 over IPv4), so every datagram still fits the 1500-byte link;
# - the client's host route to the server is a /128 (`ip -6 route get` shows it via eth0),
#   the IPv6 twin of the /32 that keeps the tunnel's own datagrams out of the tunnel.
#
# The exported `esp_sa` rows say `"IPv6"` and the outer addresses, so tshark decrypts these
# sessions as well. The fast data path works the same over IPv6 (UDP GSO and GRO are socket
# options of UDP, not of IPv4).
#
# ## Without NAT66: routing the ULA
# As in notebook 8: no masquerade, and the isp learns the way back to the tunnel network
# (`route-back` adds `fd10:8::/64 via 2001:db8:2::2` beside the IPv4 route).

# %%
lab.vpnlab("lab", "start-vpn", "--nat", "off", "--outer", "4", show=False)
lab.vpnlab("lab", "route-back")
seen_routed = lab.whoami("r1", "http://[2001:db8:3::10]/")
print("who-am-I over IPv6, routed:", seen_routed)
lab.record("whoami6_routed", seen_routed)
lab.vpnlab("lab", "route-back", "--remove")

# %% [markdown]
# web now sees **fd10:8::2**, the client's own tunnel address: the same choice as for IPv4,
# with the same costs (the far side must route the tunnel's network).
#
# ## What changes and what does not
# | | changes with IPv6 | stays the same |
# |---|---|---|
# | handshake | - | one Hello, one Welcome, the same bytes (the IPv6 address is the twin) |
# | tun0 | an fe80:: address, the kernel's RS/MLD (dropped, counted) | IFF_TUN, a packet a read |
# | routes | ::/1 and 8000::/1; a /128 to a server over IPv6 | the two-halves idea, the host route |
# | server | forwarding, NAT66 (`ip6` table), source check on fd10:8::N | a session a client |
# | ESP | next header 41 | SPI, sequence, AES-GCM, ICV, replay window |
# | outer IPv6 | 20 bytes more a datagram, tun MTU 20 less, AF_INET6 | UDP 4500, the timeouts |
# | MSS clamp | an IPv6 SYN gets 20 less (its header is 40 bytes) | the SYN's option lowered |
# | too big | ICMPv6 Packet Too Big (no fragments on the way) | the kernel answers for tun0 |
#
# ## Exercises
# **14.1** Which IPv6 address did the handshake give r1 in the tunnel (without the /64)?
#
# **14.2** What is r1's tun MTU when the server is reached over IPv6?
#
# **14.3** Which address did who-am-I see over IPv6 with NAT66?
#
# **14.4** Which ESP next header value marks an inner IPv6 packet?

# %%
answer_14_1 = ...
### BEGIN SOLUTION
answer_14_1 = "fd10:8::2"
### END SOLUTION
course.check_answer("14.1", answer_14_1, lab)

# %%
course.grade("14.1", answer_14_1, lab)

# %%
answer_14_2 = ...
### BEGIN SOLUTION
answer_14_2 = 1415
### END SOLUTION
course.check_answer("14.2", answer_14_2)

# %%
answer_14_3 = ...
### BEGIN SOLUTION
answer_14_3 = "2001:db8:2::2"
### END SOLUTION
course.check_answer("14.3", answer_14_3)

# %%
answer_14_4 = ...
### BEGIN SOLUTION
answer_14_4 = 41
### END SOLUTION
course.check_answer("14.4", answer_14_4)

# %%
# The fixed facts of this notebook (14.2, 14.3, 14.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "14.2": (answer_14_2, 1415),
        "14.3": (answer_14_3, "2001:db8:2::2"),
        "14.4": (answer_14_4, 41),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - Inside and outside are independent: IPv6 in IPv4, IPv4 in IPv6, or both of one family.
# - The handshake assigns the IPv6 tunnel address with the IPv4 one (its twin in fd10:8::/64),
#   so nothing on the wire changed; routes, forwarding and NAT are done once per family.
# - A fresh tun0 talks by itself (router solicitations, MLD): link-scope IPv6, dropped and
#   counted, never sent through the tunnel.
# - An IPv6 outer path costs 20 bytes per datagram, so the tun MTU is 20 bytes smaller; ESP
#   differs only in its next header (41).
