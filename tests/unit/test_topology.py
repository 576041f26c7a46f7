"""The lab topology as data (vpnlab/lab/topology.py): no namespace is built, no root needed.

The one place that spells out the default lab's addresses; every other test takes them from
the topology (tests/lab/helpers.py).
"""

from __future__ import annotations

import json

import pytest

from vpnlab.core.errors import LabError
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, from_dict, load_topology, make_topology


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
    with pytest.raises(LabError, match="^bad topology description: no 'nodes'$"):
        from_dict({"node": [{"name": "x"}]})  # a topology file's typo: [[node]]


def test_load_topology_refuses_an_unreadable_file_in_one_line(tmp_path):
    """A folder, a binary file and bad TOML: each one line naming the file and why."""
    binary = tmp_path / "junk.toml"
    binary.write_bytes(b"\xff\xfe\x00 not utf-8")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[node]\nname = 1\n")
    cases = {
        tmp_path: f"^cannot read topology {tmp_path}: Is a directory$",
        tmp_path / "absent.toml": f"^cannot read topology {tmp_path}/absent.toml: No such file",
        binary: f"^cannot read topology {binary}: not text$",
        broken: f"^cannot read topology {broken}: Expected ']]'",
    }
    for path, message in cases.items():
        with pytest.raises(LabError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_topology(path)


def test_make_topology_adds_clients_behind_a_bridge():
    topo = make_topology(3)
    assert topo.tunnel.clients == ("r1", "r3", "r4")
    assert topo.node("r4").interface("eth0").address == "192.0.2.4/24"
    assert topo.node("isp").bridges == ("eth0",)
