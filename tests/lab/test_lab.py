"""The lab itself: build, look inside, reach web, survive crashes, leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpnlab import cli, keys, lab
from vpnlab.core.errors import LabError
from vpnlab.lab import build, state
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, from_dict, load_topology, make_topology

needs_root = pytest.mark.lab


# --- topology as data (no root) -----------------------------------------------------------------


def test_Topology_default_matches_design():
    t = DEFAULT_TOPOLOGY
    assert t.node("r1").interface("eth0").address == "192.0.2.2/24"
    assert t.node("r1").gateway == "192.0.2.1"
    isp = t.node("isp")
    assert [i.address for i in isp.interfaces] == [
        "192.0.2.1/24",
        "198.51.100.1/24",
        "203.0.113.1/24",
    ]
    assert isp.forwarding and isp.gateway is None
    assert t.node("r2").interface("eth0").address == "198.51.100.2/24"
    assert t.node("web").interface("eth0").address == "203.0.113.10/24"
    assert (t.server_ip, t.web_ip) == ("198.51.100.2", "203.0.113.10")
    assert (t.tunnel.network, t.tunnel.server_address) == ("10.8.0.0/24", "10.8.0.1/24")
    assert (t.tunnel.server, t.tunnel.clients) == ("r2", ("r1",))


def test_Topology_round_trips_through_dict_and_toml(tmp_path):
    assert from_dict(json.loads(json.dumps(DEFAULT_TOPOLOGY.to_dict()))) == DEFAULT_TOPOLOGY
    path = tmp_path / "lab.toml"
    path.write_text(
        """
web = "www"
[tunnel]
server = "gw"
clients = ["c1"]
[[nodes]]
name = "c1"
gateway = "192.0.2.1"
interfaces = { eth0 = "192.0.2.2/24" }
[[nodes]]
name = "rt"
forwarding = true
interfaces = { eth0 = "192.0.2.1/24", eth1 = "198.51.100.1/24", eth2 = "203.0.113.1/24" }
[[nodes]]
name = "gw"
gateway = "198.51.100.1"
interfaces = { eth0 = "198.51.100.2/24" }
[[nodes]]
name = "www"
gateway = "203.0.113.1"
interfaces = { eth0 = "203.0.113.10/24" }
[[links]]
a = "rt:eth0"
b = "c1:eth0"
[[links]]
a = "rt:eth1"
b = "gw:eth0"
[[links]]
a = "rt:eth2"
b = "www:eth0"
"""
    )
    topo = load_topology(path)
    assert topo.node_names == ("c1", "rt", "gw", "www")
    assert (topo.server_ip, topo.web_ip, topo.tunnel.clients) == (
        "198.51.100.2",
        "203.0.113.10",
        ("c1",),
    )


def test_Topology_rejects_bad_descriptions():
    data = DEFAULT_TOPOLOGY.to_dict()
    with pytest.raises(LabError, match="unknown node"):
        from_dict({**data, "links": [{"a": ["isp", "eth0"], "b": ["nobody", "eth0"]}]})
    with pytest.raises(LabError, match="bad node name"):
        from_dict({**data, "nodes": [{**data["nodes"][0], "name": "R-1"}, *data["nodes"][1:]]})
    with pytest.raises(LabError, match="no node 'r9'"):
        DEFAULT_TOPOLOGY.node("r9")


def test_make_topology_adds_clients_behind_a_bridge():
    topo = make_topology(3)
    assert topo.tunnel.clients == ("r1", "r3", "r4")
    assert topo.node("r4").interface("eth0").address == "192.0.2.4/24"
    assert topo.node("isp").bridges == ("eth0",)


@pytest.mark.parametrize("bad", ["", "vpnlab", "Vpn-", "a-b-", "x" * 30 + "-", "../x-"])
def test_check_prefix_rejects(bad):
    with pytest.raises(LabError, match="bad prefix"):
        state.check_prefix(bad)


def test_psk_is_created_0600(tmp_path):
    path = tmp_path / "psk"
    keys.new_psk(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32


def test_not_root_or_missing_tools_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        lab.status("vpnlab-")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(build.shutil, "which", lambda tool: None if tool == "ip" else "/x")
    with pytest.raises(LabError, match="missing tools: ip"):
        lab.up("vpnlab-")


# --- a real lab (root) ----------------------------------------------------------------------------


@needs_root
def test_up_builds_nodes_addresses_routes(shared_lab):
    info = lab.status(shared_lab.prefix)
    assert info["up"] and not info["vpn"] and info["leftovers"] == []
    nodes = info["nodes"]
    assert set(nodes) == {"r1", "isp", "r2", "web"}
    for name, node in nodes.items():
        assert node["namespace"] == f"{shared_lab.prefix}{name}"
        assert node["interfaces"]["lo"]["state"] == "up"
    assert nodes["r1"]["interfaces"]["eth0"]["addresses"] == ["192.0.2.2/24"]
    assert nodes["r2"]["interfaces"]["eth0"]["addresses"] == ["198.51.100.2/24"]
    assert nodes["web"]["interfaces"]["eth0"]["addresses"] == ["203.0.113.10/24"]
    isp = nodes["isp"]["interfaces"]
    assert [isp[i]["addresses"] for i in ("eth0", "eth1", "eth2")] == [
        ["192.0.2.1/24"],
        ["198.51.100.1/24"],
        ["203.0.113.1/24"],
    ]
    assert "default via 192.0.2.1 dev eth0" in nodes["r1"]["routes"]
    assert "default via 198.51.100.1 dev eth0" in nodes["r2"]["routes"]
    assert "default via 203.0.113.1 dev eth0" in nodes["web"]["routes"]
    assert not any(r.startswith("default") for r in nodes["isp"]["routes"])
    forwarding = shared_lab.run("isp", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    assert forwarding == "1"
    assert shared_lab.run("r2", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert info["daemons"]["whoami"]["alive"]
    assert "r1" in lab.format_status(info) and "whoami" in lab.format_status(info)


@needs_root
def test_exec_into_every_node(shared_lab):
    for node in DEFAULT_TOPOLOGY.nodes:
        for itf in node.interfaces:
            out = shared_lab.run(node.name, "ip", "-o", "-4", "addr", "show", "dev", itf.name)
            assert out.returncode == 0 and f"inet {itf.address} " in out.stdout


@needs_root
def test_web_reachable_from_r1_without_vpn(shared_lab):
    result = lab.verify(shared_lab.prefix)
    assert result["ok"] and not result["vpn"]
    assert any(c["detail"] == "you are 192.0.2.2" for c in result["checks"])
    url = "http://203.0.113.10/json"
    code = f"import urllib.request as u; print(u.urlopen('{url}', timeout=3).read().decode())"
    answer = json.loads(shared_lab.run("r1", sys.executable, "-c", code).stdout)
    assert answer["you"] == "192.0.2.2" and answer["server"] == "203.0.113.10:80"


@needs_root
def test_the_lab_is_sealed(shared_lab):
    """Each node has only its own veths, and the isp (the lab's internet) has no way out."""
    for node in DEFAULT_TOPOLOGY.nodes:
        out = shared_lab.run(node.name, "ip", "-o", "link").stdout.splitlines()
        names = sorted(line.split(": ")[1].split("@")[0] for line in out)
        assert names == sorted(["lo", *(i.name for i in node.interfaces)])
    assert shared_lab.run("isp", "ip", "route", "get", "8.8.8.8").returncode != 0
    assert "unreachable" in shared_lab.run("isp", "ip", "route", "get", "8.8.8.8").stderr


@needs_root
def test_bad_node_is_a_LabError(shared_lab, capsys):
    with pytest.raises(LabError, match="no node 'r9'.*r1, isp, r2, web"):
        lab.exec_in(shared_lab.prefix, "r9", ["true"])
    rc = cli.main(["lab", "exec", "--prefix", shared_lab.prefix, "r9", "--", "ip", "a"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "no node 'r9'" in err and "Traceback" not in err


@needs_root
def test_cli_exec_status_verify(shared_lab, capfd):
    p = ["--prefix", shared_lab.prefix]
    assert cli.main(["lab", "exec", *p, "r1", "--", "ip", "route"]) == 0
    assert "default via 192.0.2.1" in capfd.readouterr().out
    assert cli.main(["lab", "exec", *p, "r1", "false"]) == 1
    assert cli.main(["lab", "status", *p, "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["prefix"] == shared_lab.prefix
    assert cli.main(["lab", "verify", *p]) == 0
    assert "all checks passed" in capfd.readouterr().out


@needs_root
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


@needs_root
def test_down_after_kill9_of_a_daemon(fresh_lab):
    pid = lab.status(fresh_lab.prefix)["daemons"]["whoami"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert build.wait_for(lambda: not state.alive(pid), 2)
    assert lab.status(fresh_lab.prefix)["daemons"]["whoami"]["alive"] is False
    with pytest.raises(LabError, match="who-am-I"):
        lab.verify(fresh_lab.prefix)
    # the fixture's down must still clean up, and check it did


@needs_root
def test_whoami_exits_cleanly_on_SIGTERM(fresh_lab):
    daemon = lab.status(fresh_lab.prefix)["daemons"]["whoami"]
    os.kill(daemon["pid"], signal.SIGTERM)
    assert build.wait_for(lambda: not state.alive(daemon["pid"]), 2)
    assert "whoami: stopped" in Path(daemon["log"]).read_text()


@needs_root
def test_down_kills_recorded_pids_only_inside_the_lab(fresh_lab):
    """A recorded PID that now belongs to a process outside the lab is left alone."""
    outsider = subprocess.Popen(["sleep", "30"])  # root namespace: must survive down
    try:
        record = state.load(fresh_lab.prefix)
        record["daemons"]["reused"] = {"node": "r1", "pid": outsider.pid, "argv": [], "log": ""}
        state.save(record)
        lab.down(fresh_lab.prefix)
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


@needs_root
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


@needs_root
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


@needs_root
def test_partial_build_is_cleaned(prefix):
    """A half-built lab (namespaces only, no record) is found by its prefix."""
    from pyroute2 import netns

    for node in ("r1", "isp"):
        netns.create(f"{prefix}{node}")
    assert state.prefix_namespaces(prefix) == [f"{prefix}isp", f"{prefix}r1"]
    assert lab.status(prefix)["up"]
    lab.down(prefix)
    assert state.prefix_namespaces(prefix) == []


@needs_root
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


@needs_root
def test_two_clients_behind_a_bridge(prefix):
    lab.up(prefix=prefix, topology=make_topology(2), vpn=False)
    answers = {
        c["node"]: c["detail"] for c in lab.verify(prefix)["checks"] if "who-am-I" in c["name"]
    }
    assert answers == {"r1": "you are 192.0.2.2", "r3": "you are 192.0.2.3"}


# --- with the VPN daemons -----------------------------------


@needs_root
@pytest.mark.parametrize("vpn_lab", ["plain", "esp-null", "esp-aes-gcm"], indirect=True)
def test_up_with_vpn_and_verify(vpn_lab):
    prefix = vpn_lab.prefix
    info = lab.status(prefix)
    cipher = info["cipher"]
    assert info["tunnel"]["clients"]["r1"]["state"] == "connected"
    assert info["daemons"]["server"]["alive"] and info["daemons"]["client-r1"]["alive"]
    psk = state.state_dir(prefix) / "psk"
    assert psk.exists() == (cipher != "plain")
    result = lab.verify(prefix)
    assert result["vpn"] and any(c["detail"] == "you are 198.51.100.2" for c in result["checks"])
    lab.stop_vpn(prefix)
    assert lab.verify(prefix)["vpn"] is False  # back to r1's own address, via eth0
    lab.start_vpn(prefix, cipher)
    assert lab.verify(prefix)["vpn"] is True


@needs_root
def test_two_clients_through_one_server(prefix):
    lab.up(prefix=prefix, topology=make_topology(2))
    checks = lab.verify(prefix)["checks"]
    answers = {c["node"]: c["detail"] for c in checks if "who-am-I" in c["name"]}
    assert answers == {"r1": "you are 198.51.100.2", "r3": "you are 198.51.100.2"}
    tunnel = lab.status(prefix)["tunnel"]["clients"]
    assert {tunnel["r1"]["tunnel_address"], tunnel["r3"]["tunnel_address"]} == {
        "10.8.0.2/24",
        "10.8.0.3/24",
    }
