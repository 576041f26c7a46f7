"""The lab itself: build, look inside, reach web, survive crashes, leave nothing behind.

The topology as data (no namespace, no root) is tested in tests/unit/test_topology.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpnlab import cli, lab
from vpnlab.core.errors import LabError
from vpnlab.lab import nodes, state
from vpnlab.lab.records import DaemonRecord
from vpnlab.lab.topology import make_topology

from .helpers import (
    CLIENT_GATEWAY,
    CLIENT_IP,
    SERVER_IP,
    TOPOLOGY,
    WEB_IP,
    WEB_URL,
    cidr,
    client_ip,
    tunnel_address,
)

pytestmark = pytest.mark.lab


# --- a real lab ----------------------------------------------------------------------------------


def test_up_builds_nodes_addresses_routes(shared_lab):
    info = lab.status(shared_lab.prefix)
    assert info["up"] and not info["vpn"] and info["leftovers"] == []
    nodes = info["nodes"]
    assert set(nodes) == {"r1", "isp", "r2", "web"}
    for name, node in nodes.items():
        assert node["namespace"] == f"{shared_lab.prefix}{name}"
        assert node["interfaces"]["lo"]["state"] == "up"
    assert nodes["r1"]["interfaces"]["eth0"]["addresses"] == [cidr("r1")]
    assert nodes["r2"]["interfaces"]["eth0"]["addresses"] == [cidr("r2")]
    assert nodes["web"]["interfaces"]["eth0"]["addresses"] == [cidr("web")]
    isp = nodes["isp"]["interfaces"]
    assert [isp[i]["addresses"] for i in ("eth0", "eth1", "eth2")] == [
        [cidr("isp", "eth0")],
        [cidr("isp", "eth1")],
        [cidr("isp", "eth2")],
    ]
    for node in ("r1", "r2", "web"):
        assert f"default via {TOPOLOGY.node(node).gateway} dev eth0" in nodes[node]["routes"]
    assert not any(r.startswith("default") for r in nodes["isp"]["routes"])
    forwarding = shared_lab.run("isp", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    assert forwarding == "1"
    assert shared_lab.run("r2", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert info["daemons"]["whoami"]["alive"]
    assert "r1" in lab.format_status(info) and "whoami" in lab.format_status(info)


def test_exec_into_every_node(shared_lab):
    for node in TOPOLOGY.nodes:
        for itf in node.interfaces:
            out = shared_lab.run(node.name, "ip", "-o", "-4", "addr", "show", "dev", itf.name)
            assert out.returncode == 0 and f"inet {itf.address} " in out.stdout


def test_web_reachable_from_r1_without_vpn(shared_lab):
    result = lab.verify(shared_lab.prefix)
    assert result["ok"] and not result["vpn"]
    assert any(c["detail"] == f"you are {CLIENT_IP}" for c in result["checks"])
    url = f"{WEB_URL}/json"
    code = f"import urllib.request as u; print(u.urlopen('{url}', timeout=3).read().decode())"
    answer = json.loads(shared_lab.run("r1", sys.executable, "-c", code).stdout)
    assert answer["you"] == CLIENT_IP and answer["server"] == f"{WEB_IP}:{TOPOLOGY.web_port}"


def test_the_lab_is_sealed(shared_lab):
    """Each node has only its own veths, and the isp (the lab's internet) has no way out."""
    for node in TOPOLOGY.nodes:
        out = shared_lab.run(node.name, "ip", "-o", "link").stdout.splitlines()
        names = sorted(line.split(": ")[1].split("@")[0] for line in out)
        assert names == sorted(["lo", *(i.name for i in node.interfaces)])
    assert shared_lab.run("isp", "ip", "route", "get", "8.8.8.8").returncode != 0
    assert "unreachable" in shared_lab.run("isp", "ip", "route", "get", "8.8.8.8").stderr


def test_bad_node_is_a_LabError(shared_lab, capsys):
    with pytest.raises(LabError, match="no node 'r9'.*r1, isp, r2, web"):
        lab.exec_in(shared_lab.prefix, "r9", ["true"])
    rc = cli.main(["lab", "exec", "--prefix", shared_lab.prefix, "r9", "--", "ip", "a"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "no node 'r9'" in err and "Traceback" not in err


def test_cli_exec_status_verify(shared_lab, capfd):
    p = ["--prefix", shared_lab.prefix]
    assert cli.main(["lab", "exec", *p, "r1", "--", "ip", "route"]) == 0
    assert f"default via {CLIENT_GATEWAY}" in capfd.readouterr().out
    assert cli.main(["lab", "exec", *p, "r1", "false"]) == 1
    assert cli.main(["lab", "status", *p, "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["prefix"] == shared_lab.prefix
    assert cli.main(["lab", "verify", *p]) == 0
    assert "all checks passed" in capfd.readouterr().out


def test_up_twice_down_twice(prefix):
    first = lab.up(prefix=prefix, vpn=False)
    pid = first["daemons"]["whoami"]["pid"]
    second = lab.up(prefix=prefix, vpn=False)
    assert not state.alive(pid), "up again replaces the old lab"
    assert second["daemons"]["whoami"]["alive"]
    assert lab.status(prefix) == lab.status(prefix)
    assert lab.down(prefix)
    assert lab.down(prefix) == []
    assert lab.status(prefix)["up"] is False
    assert lab.format_status(lab.status(prefix)) == f"lab {prefix}: down"


def test_two_ups_at_once_take_turns_and_down_leaves_nothing(prefix, check_gone):
    """Two terminals (or a terminal and a notebook) build the same lab at once: the second
    waits for the first and then replaces its lab, instead of both failing half-way."""
    argv = [sys.executable, "-m", "vpnlab", "lab", "up", "--no-vpn", "--prefix", prefix]
    ups = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL)]
    time.sleep(0.2)  # the first one is building
    ups.append(subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL))
    errors = [up.communicate(timeout=120)[1] for up in ups]
    assert [up.returncode for up in ups] == [0, 0], errors
    assert f"lab {prefix}: waiting for another vpnlab command (PID {ups[0].pid})" in errors[1]
    assert lab.status(prefix)["daemons"]["whoami"]["alive"]
    assert lab.verify(prefix, check=False)["ok"]
    lab.down(prefix)
    check_gone(prefix, {}, [])


def test_down_after_kill9_of_a_daemon(fresh_lab):
    pid = lab.status(fresh_lab.prefix)["daemons"]["whoami"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert nodes.wait_for(lambda: not state.alive(pid), 2)
    assert lab.status(fresh_lab.prefix)["daemons"]["whoami"]["alive"] is False
    with pytest.raises(LabError, match="who-am-I"):
        lab.verify(fresh_lab.prefix)
    # the fixture's down must still clean up, and check it did


def test_whoami_exits_cleanly_on_SIGTERM(fresh_lab):
    daemon = lab.status(fresh_lab.prefix)["daemons"]["whoami"]
    os.kill(daemon["pid"], signal.SIGTERM)
    assert nodes.wait_for(lambda: not state.alive(daemon["pid"]), 2)
    assert "whoami: stopped" in Path(daemon["log"]).read_text()


def test_down_kills_recorded_pids_only_inside_the_lab(fresh_lab):
    """A recorded PID that now belongs to a process outside the lab is left alone."""
    outsider = subprocess.Popen(["sleep", "30"])  # root namespace: must survive down
    try:
        record = state.load(fresh_lab.prefix)
        record.daemons["reused"] = DaemonRecord("r1", [], outsider.pid, "")
        state.save(record)
        lab.down(fresh_lab.prefix)
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


def test_down_without_record_cleans_by_prefix_and_kills_orphans(
    prefix, check_gone, recorded_pids, monkeypatch
):
    monkeypatch.setattr(state, "TERM_GRACE_S", 0.3)  # the stubborn one waits this, then KILL
    lab.up(prefix=prefix, vpn=False)
    ids = state.ns_ids(state.prefix_namespaces(prefix))
    pids = recorded_pids(prefix)
    orphan = subprocess.Popen(
        ["ip", "netns", "exec", f"{prefix}r2", "sleep", "600"], start_new_session=True
    )
    state.register_child(orphan)
    # a stubborn one, too: ignores SIGTERM, must get SIGKILL
    stubborn = subprocess.Popen(
        ["ip", "netns", "exec", f"{prefix}isp", "sh", "-c", "trap '' TERM; sleep 600"],
        start_new_session=True,
    )
    state.register_child(stubborn)
    time.sleep(0.1)
    import shutil

    shutil.rmtree(state.state_dir(prefix))  # the record is lost (a crash, rm -rf, reboot of /run)
    done = lab.down(prefix)
    assert any("other process" in line for line in done)
    assert orphan.wait(timeout=5) is not None and stubborn.wait(timeout=5) is not None
    check_gone(prefix, ids, pids + [orphan.pid, stubborn.pid])


def test_down_stops_a_process_that_entered_the_lab_after_it_looked(
    prefix, check_gone, recorded_pids, monkeypatch
):
    """CI (meltdown.sh, SIGTERM): an ``ip netns exec ... ping`` forked just as the signal came
    entered r1 after down had looked for processes, and outlived the deleted namespace."""
    lab.up(prefix=prefix, vpn=False)
    ids = state.ns_ids(state.prefix_namespaces(prefix))
    pids = recorded_pids(prefix)
    late: list[subprocess.Popen] = []
    remove = state.remove_namespace

    def enter_then_remove(name: str) -> bool:
        if not late and name == f"{prefix}r1":  # after the look, before the delete
            late.append(subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"]))
            state.register_child(late[0])
            assert nodes.wait_for(lambda: state.pid_ns_id(late[0].pid) in ids, 5, 0.02)
        return remove(name)

    monkeypatch.setattr(state, "remove_namespace", enter_then_remove)
    try:
        done = lab.down(prefix)
        assert late and late[0].wait(timeout=5) is not None, done
        check_gone(prefix, ids, [*pids, late[0].pid])
    finally:
        for proc in late:
            proc.kill()
            proc.wait()


def test_down_after_kill9_of_up(prefix, check_gone):
    """kill -9 of ``vpnlab lab up`` at some point of the build: down still removes it all."""
    for delay_s in (0.05, 0.25):
        proc = subprocess.Popen(
            [sys.executable, "-m", "vpnlab", "lab", "up", "--no-vpn", "--prefix", prefix],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay_s)
        proc.kill()
        proc.wait()
        time.sleep(0.1)  # let pyroute2's orphaned fork finish a namespace it was creating
        lab.down(prefix)
        check_gone(prefix, {}, [])


def test_partial_build_is_cleaned(prefix):
    """A half-built lab (namespaces only, no record) is found by its prefix."""
    from pyroute2 import netns

    for node in ("r1", "isp"):
        netns.create(f"{prefix}{node}")
    assert state.prefix_namespaces(prefix) == [f"{prefix}isp", f"{prefix}r1"]
    assert lab.status(prefix)["up"]
    lab.down(prefix)
    assert state.prefix_namespaces(prefix) == []


def test_down_spares_other_prefixes(prefix, make_prefix):
    other = make_prefix()
    try:
        lab.up(prefix=other, vpn=False)
        lab.up(prefix=prefix, vpn=False)
        lab.down(prefix)
        assert len(state.prefix_namespaces(other)) == 4
        assert lab.status(other)["daemons"]["whoami"]["alive"]
    finally:
        lab.down(other)


def test_two_clients_behind_a_bridge(prefix):
    lab.up(prefix=prefix, topology=make_topology(2), vpn=False)
    checks = lab.verify(prefix)["checks"]
    answers = {c["node"]: c["detail"] for c in checks if c["name"].startswith("who-am-I says")}
    assert answers == {"r1": f"you are {CLIENT_IP}", "r3": f"you are {client_ip('r3', 2)}"}
    answers6 = {c["node"]: c["detail"] for c in checks if "over IPv6" in c["name"]}
    assert answers6 == {"r1": "you are 2001:db8:1::2", "r3": "you are 2001:db8:1::3"}


# --- with the VPN daemons -----------------------------------


@pytest.mark.parametrize("vpn_lab", ["plain", "esp-null", "esp-aes-gcm"], indirect=True)
def test_up_with_vpn_and_verify(vpn_lab):
    prefix = vpn_lab.prefix
    info = lab.status(prefix)
    cipher = info["cipher"]
    assert info["tunnel"]["clients"]["r1"]["state"] == "connected"
    assert info["daemons"]["server"]["alive"] and info["daemons"]["client-r1"]["alive"]
    config = state.state_dir(prefix) / "identity" / "r1.conf"  # each client its own key
    assert config.exists() == (cipher != "plain")
    assert not (state.state_dir(prefix) / "psk").exists()  # no key shared by all
    result = lab.verify(prefix)
    assert result["vpn"] and any(c["detail"] == f"you are {SERVER_IP}" for c in result["checks"])
    lab.stop_vpn(prefix)
    assert lab.verify(prefix)["vpn"] is False  # back to r1's own address, via eth0
    lab.start_vpn(prefix, cipher)
    assert lab.verify(prefix)["vpn"] is True


def test_two_clients_through_one_server(prefix):
    lab.up(prefix=prefix, topology=make_topology(2))
    checks = lab.verify(prefix)["checks"]
    answers = {c["node"]: c["detail"] for c in checks if c["name"].startswith("who-am-I says")}
    assert answers == {"r1": f"you are {SERVER_IP}", "r3": f"you are {SERVER_IP}"}
    answers6 = {c["node"]: c["detail"] for c in checks if "over IPv6" in c["name"]}
    server6 = f"you are {TOPOLOGY.server_ip6}"  # NAT66 for both, as NAT for IPv4
    assert answers6 == {"r1": server6, "r3": server6}
    tunnel = lab.status(prefix)["tunnel"]["clients"]
    assert {tunnel["r1"]["tunnel_address"], tunnel["r3"]["tunnel_address"]} == {
        tunnel_address(0),
        tunnel_address(1),
    }
