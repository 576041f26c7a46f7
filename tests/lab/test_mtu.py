"""MTU: tun0's MTU derived from the format, path-MTU answers for big DF packets, MSS clamping."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from vpnlab.core.constants import tun_mtu
from vpnlab.wire.crypto import algorithm

from .helpers import CLIENT_TUNNEL_IP, SERVER_IP, TUNNEL_NETWORK, WEB_IP

pytestmark = pytest.mark.lab

GCM_MTU = tun_mtu(algorithm("esp-aes-gcm").overhead_bytes)  # 1435


@pytest.mark.parametrize("vpn_lab", ["esp-aes-gcm"], indirect=True)
def test_tun_mtu_is_derived_and_big_df_packets_get_the_right_answer(vpn_lab):
    for node in ("r1", "r2"):
        assert f"mtu {GCM_MTU}" in vpn_lab.run(node, "ip", "link", "show", "tun0").stdout
    fits = vpn_lab.run(
        "r1", "ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(GCM_MTU - 28), WEB_IP
    )
    assert fits.returncode == 0, fits.stdout + fits.stderr
    big = vpn_lab.run(
        "r1", "ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(GCM_MTU - 27), WEB_IP
    )
    said = big.stdout + big.stderr  # refused before sending; iputils up to 20240117 adds the MTU
    assert big.returncode != 0 and "message too long" in said.lower(), said
    assert "mtu=" not in said or f"mtu={GCM_MTU}" in said, said
    # from the internet side: web -> r1's tunnel address crosses r2's tun0; r2 must answer
    # "frag needed"
    vpn_lab.run("isp", "ip", "route", "add", TUNNEL_NETWORK, "via", SERVER_IP, check=True)
    fits = vpn_lab.run(
        "web", "ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(GCM_MTU - 28), CLIENT_TUNNEL_IP
    )
    assert fits.returncode == 0, fits.stdout
    big = vpn_lab.run(
        "web", "ping", "-M", "do", "-c", "1", "-W", "2", "-s", "1472", CLIENT_TUNNEL_IP
    )
    assert big.returncode != 0
    answer = rf"From {re.escape(SERVER_IP)} .*Frag needed.*mtu = {GCM_MTU}"
    assert re.search(answer, big.stdout), big.stdout


@pytest.mark.parametrize("vpn_lab", ["esp-aes-gcm"], indirect=True)
def test_syn_mss_is_clamped_to_the_tunnel(vpn_lab):
    # r1 pretends its route allows 1460 (as a host behind a VPN gateway would): the daemon
    # lowers the SYN's MSS option to the tunnel's, tun MTU - 40.
    vpn_lab.run(
        "r1", "ip", "route", "add", f"{WEB_IP}/32", "dev", "tun0", "advmss", "1460", check=True
    )
    tcpdump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            vpn_lab.ns("web"),
            "timeout",
            "8",
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-v",
            "-c",
            "1",
            "tcp[tcpflags] & tcp-syn != 0 and dst port 80",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1.0)
    page = vpn_lab.run("r1", "curl", "-s", "--max-time", "3", f"http://{WEB_IP}/")
    assert page.stdout.startswith("you are")
    out, _ = tcpdump.communicate(timeout=10)
    assert f"mss {GCM_MTU - 40}" in out, out
