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
# # 9. Site to site, and client to client
#
# So far one machine (r1) sent its own traffic through the tunnel. A **site-to-site** VPN
# joins two whole networks: each gateway carries a private LAN, and hosts on one LAN reach
# hosts on the other as if they were next door, without knowing a VPN exists.
#
# ```
# [h1] 172.16.1.10 -- r1 (VPN client) == tunnel 10.8.0.0/24 == r2 (VPN server) -- [h2] 172.16.2.10
#     LAN 172.16.1.0/24  eth0 192.0.2.2 -- isp -- 198.51.100.2 eth0   LAN 172.16.2.0/24
# ```
#
# `vpnlab lab up --site-to-site --nat off` builds it. The client is told the far LAN
# (`vpnlab client --route 172.16.2.0/24`) and routes only that into `tun0`; the server is told
# which client stands for which LAN (`vpnlab server --client-network 10.8.0.2=172.16.1.0/24`),
# routes it into `tun0` and accepts packets from that client with sources in its LAN (without
# it, they would be dropped as spoofed). No NAT anywhere: both LANs keep their addresses.

# %%
import sys
import time

from vpnlab.course import notebook as course
from vpnlab.instruments import capture, ftp

H1, H2 = "172.16.1.10", "172.16.2.10"
lab = course.CourseLab("09_site_to_site")
lab.up(nat=False, site_to_site=True)
print(lab.vpnlab("lab", "status", show=False).split("daemons:")[0])

# %% [markdown]
# ## Both routing tables
# r1 (client) sends only the far LAN into the tunnel (no 0/1 and 128/1 this time: r1's own
# Internet traffic is not the VPN's business); r2 (server) routes r1's LAN into its `tun0`.
# Both forward (`ip_forward = 1`): they are routers for their LANs.

# %%
r1_routes = lab.sh("r1", "ip route")
r2_routes = lab.sh("r2", "ip route")
lab.sh("r1", "sysctl net.ipv4.ip_forward")
lab.sh("h1", "ip route")
lab.record("r1_routes", r1_routes.splitlines())
lab.record("r2_routes", r2_routes.splitlines())

# %% [markdown]
# h1 knows nothing of the VPN: its default gateway is r1, and that is all. One ping from h1
# to h2, hop by hop (compare notebook 4's picture: no NAT anywhere, the LAN addresses cross
# unchanged, inside the encrypted datagram):

# %%
import matplotlib.pyplot as plt

from vpnlab.course import diagrams

diagrams.draw_ping_path(
    [
        ("h1: ping", f"{H1} -> {H2}\nICMP echo request", "h1's default route: via r1"),
        ("r1: forwards", "unchanged", "172.16.2.0/24 dev tun0 (--route)"),
        ("r1: client daemon", "read from tun0, sealed", "TunSelected"),
        ("r1 eth0 -> isp", "192.0.2.2 -> 198.51.100.2\nUDP 4500 [ESP [inner]]", "host route"),
        ("r2: server daemon", "opened; source in 172.16.1.0/24?", "--client-network: allowed"),
        ("r2: forwards", f"{H1} -> {H2}\nunchanged, no NAT", "172.16.2.0/24 on eth1"),
        ("h2", f"echo reply to {H1}", "h2's default route: via r2"),
    ],
    title="site to site: one ping from LAN 1 to LAN 2, and back",
    back="the reply: the same way back\n(r2 routes 172.16.1.0/24 into tun0,\n"
    "the client's network)",
)
plt.show()

# %% [markdown]
# ## ping, both ways
# We capture at the same time on h1's LAN (r1 `eth1`), on the wire (r1 `eth0`) and on h2's
# LAN (r2 `eth1`).

# %%
caps = {
    "LAN 1 (r1 eth1)": capture.start_capture(lab.prefix, "r1", "eth1", "work/s2s-lan1.pcapng",
                                             count=40, duration_s=15, capture_filter="icmp"),
    "wire (r1 eth0)": capture.start_capture(lab.prefix, "r1", "eth0", "work/s2s-wire.pcapng",
                                            count=40, duration_s=15,
                                            capture_filter="udp port 4500"),
    "LAN 2 (r2 eth1)": capture.start_capture(lab.prefix, "r2", "eth1", "work/s2s-lan2.pcapng",
                                             count=40, duration_s=15, capture_filter="icmp"),
}
ping_12 = lab.sh("h1", f"ping -c 2 -i 0.2 -W 2 {H2}")
ping_21 = lab.sh("h2", f"ping -c 2 -i 0.2 -W 2 {H1}")
time.sleep(0.3)
seen = {}
for where, cap in caps.items():
    rows = capture.fields(cap.stop(), ["ip.src", "ip.dst", "frame.protocols"])
    seen[where] = rows
    print(where)
    for src, dst, stack in rows[:4]:
        print(f"  {src:>13} -> {dst:<13} {stack}")
lab.record("ping_h1_h2", " 0% packet loss" in ping_12)
lab.record("ping_h2_h1", " 0% packet loss" in ping_21)
lab.record("lan1_first", seen["LAN 1 (r1 eth1)"][0])
lab.record("lan2_first", seen["LAN 2 (r2 eth1)"][0])
lab.record("wire_first", next(r for r in seen["wire (r1 eth0)"] if r[0] == "192.0.2.2"))

# %% [markdown]
# The same echo request three times: on LAN 1 and LAN 2 it is `172.16.1.10 -> 172.16.2.10`,
# unchanged (no NAT); on the wire between the gateways only `192.0.2.2 <-> 198.51.100.2`
# UDP 4500 is visible, and inside it ESP: the LAN addresses travel encrypted.
#
# ## HTTP, both ways
# A who-am-I service on each host: each one sees the other host's own LAN address.

# %%
def whoami_across(client, server, address):
    # all addresses: http.server looks up the name of a bound address (a DNS query, which in
    # the sealed lab only times out after 10 s); for 0.0.0.0 it takes the host name instead
    daemon = lab.popen(server, [sys.executable, "-m", "vpnlab", "whoami", "--listen", "0.0.0.0",
                                "--port", "8080"])
    try:
        print(server, "runs", daemon.stdout.readline().strip())
        return lab.run(client, f"curl -s -m 3 http://{address}:8080/").stdout.strip()
    finally:
        daemon.terminate()
        daemon.wait(timeout=5)


seen_by_h2 = whoami_across("h1", "h2", H2)
seen_by_h1 = whoami_across("h2", "h1", H1)
print("h1 asks h2:", seen_by_h2)
print("h2 asks h1:", seen_by_h1)
lab.record("http_h1_to_h2", seen_by_h2)
lab.record("http_h2_to_h1", seen_by_h1)

# %% [markdown]
# ## FTP, passive and active
# Active FTP is the hard case for NAT: the **server** opens the data connection back to the
# client. Between routed sites it simply works: h2 connects to h1's real address.

# %%
with ftp.lab_server(lab.prefix, node="h2", listen=H2):
    results = {mode: ftp.lab_transfer(lab.prefix, node="h1", server=H2, mode=mode,
                                      size_bytes=200_000) for mode in ("passive", "active")}
for mode, result in results.items():
    print(f"{mode:>8}: {result['bytes']} bytes up and back, checksums equal: {result['ok']}")
lab.record("ftp_ok", {mode: r["ok"] for mode, r in results.items()})
drops = lab.status()["tunnel"]["server"]["counters"]["drops"]
print("server drops:", drops)
lab.record("server_drops", drops)

# %% [markdown]
# ## Client to client
# A server with several clients can let them reach each other through it (a packet from r1
# to r3's tunnel address enters r2's `tun0`, the kernel routes it back out of `tun0`, and the
# server sends it to r3), or keep them apart: `vpnlab server --isolate-clients` drops every
# packet from one client to another (counted as "client to client denied"), while each
# client still reaches the server and the world. We need a lab with two clients, r1 and r3.

# %%
lab.up(clients=2)
clients = lab.status()["tunnel"]["clients"]
r3_address = clients["r3"]["tunnel_address"].split("/")[0]
print("r1:", clients["r1"]["tunnel_address"], " r3:", r3_address)
allowed = lab.sh("r1", f"ping -c 2 -i 0.2 -W 1 {r3_address}")
lab.record("c2c_allowed", " 0% packet loss" in allowed)

# %%
lab.start_vpn(server_args=["--isolate-clients"])
denied = lab.sh("r1", f"ping -c 2 -i 0.2 -W 1 {r3_address}")
to_server = lab.sh("r1", "ping -c 1 -W 2 10.8.0.1")
time.sleep(1.2)  # the status file is rewritten every second
denied_count = lab.status()["tunnel"]["server"]["counters"]["drops"].get(
    "client to client denied", 0)
print("server: client to client denied =", denied_count)
lab.record("c2c_isolated_rc_ok", "100% packet loss" in denied)
lab.record("c2c_to_server_ok", " 0% packet loss" in to_server)
lab.record("c2c_denied_count", denied_count)

# %% [markdown]
# ## Exercises
# **9.1** Which route in r1 sends h2's LAN into the tunnel? Give the network.
#
# **9.2** On the wire between the gateways, which destination address did the tunnel
# datagrams from r1 carry?
#
# **9.3** Which address did h2's who-am-I see when h1 asked?
#
# **9.4** With `--isolate-clients`, how many of r1's pings to r3 were answered?

# %%
answer_9_1 = ...
### BEGIN SOLUTION
answer_9_1 = "172.16.2.0/24"
### END SOLUTION
course.check_answer("9.1", answer_9_1)

# %%
answer_9_2 = ...
### BEGIN SOLUTION
answer_9_2 = "198.51.100.2"
### END SOLUTION
course.check_answer("9.2", answer_9_2)

# %%
answer_9_3 = ...
### BEGIN SOLUTION
answer_9_3 = "172.16.1.10"
### END SOLUTION
course.check_answer("9.3", answer_9_3)

# %%
answer_9_4 = ...
### BEGIN SOLUTION
answer_9_4 = 0
### END SOLUTION
course.check_answer("9.4", answer_9_4)

# %%
# The fixed facts of this notebook (9.1, 9.2, 9.3, 9.4) are graded together, by your
# instructor's hidden tests.
### BEGIN HIDDEN TESTS
course.grade_facts(
    {
        "9.1": (answer_9_1, "172.16.2.0/24"),
        "9.2": (answer_9_2, "198.51.100.2"),
        "9.3": (answer_9_3, "172.16.1.10"),
        "9.4": (answer_9_4, 0),
    }
)
### END HIDDEN TESTS

# %%
lab.down()

# %% [markdown]
# ## What you learned
# - Site to site: each gateway routes the **other** LAN into `tun0` (client: `--route`;
#   server: `--client-network`, which also tells it which LAN sources that client may use).
#   The hosts only need their ordinary default gateway.
# - Without NAT both sides keep their addresses: ping, HTTP and even active FTP work in both
#   directions, and each side sees the other's real address. On the wire only the gateways'
#   addresses and ESP are visible.
# - Clients of one server reach each other through the server's kernel, unless the server
#   isolates them (`--isolate-clients`): a policy decision, made per packet and counted.
