"""routing.py without root: the NAT ruleset, and the interface names that may go into it."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from vpnlab.core.errors import SetupError
from vpnlab.shell import routing

NETWORK = IPv4Network("10.8.0.0/24")
BAD_NAMES = [
    "",
    "a" * 16,  # IFNAMSIZ is 16 with the NUL: 15 characters at most
    ".",
    "..",
    "eth/0",
    "eth0:1",
    "eth 0",
    "eth0\n",
    "eth\t0",
    'eth0"',
    "eth\\0",
    "eth\x00",
]


@pytest.mark.parametrize("name", ["eth0", "veth-r2.1", "a" * 15, "wlp0s20f3", "br_lan"])
def test_check_interface_name_accepts_linux_names(name):
    assert routing.check_interface_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_nat_ruleset_refuses_a_name_that_is_no_interface(name):
    with pytest.raises(SetupError, match="external interface"):
        routing.nat_ruleset(NETWORK, name)


def test_nat_ruleset_cannot_be_given_a_rule_of_the_callers():
    """The name lands in double quotes in the nft file: a quote would end the string, and what
    follows it would be read as nftables syntax (here: accept, then the end of the chain)."""
    with pytest.raises(SetupError):
        routing.nat_ruleset(NETWORK, 'x" accept }')
    assert 'oifname "eth0" counter masquerade' in routing.nat_ruleset(NETWORK, "eth0")


def test_ServerRouting_refuses_a_bad_name_before_changing_anything(monkeypatch, tmp_path):
    changed = []
    monkeypatch.setattr(routing, "set_forwarding", lambda on: changed.append(on) or "0")
    monkeypatch.setattr(routing, "run_nft", lambda *args: changed.append(args))
    nft_file = tmp_path / "nat.nft"
    server = routing.ServerRouting(NETWORK, 'eth0"', Path(nft_file))
    with pytest.raises(SetupError, match="external interface"):
        server.apply()
    assert changed == [] and not nft_file.exists()


def test_in_named_netns_passes_over_a_name_removed_while_it_looks(monkeypatch, tmp_path):
    """Another lab's namespace removed between listing /run/netns and its stat (a dangling
    name here) is passed over: ours, listed beside it, still says we are in a lab node."""
    (tmp_path / "gone-r1").symlink_to(tmp_path / "removed")
    (tmp_path / "ours").symlink_to("/proc/self/ns/net")
    monkeypatch.setattr(routing, "NAMED_NETNS_DIR", tmp_path)
    assert routing.in_named_netns()


def test_in_named_netns_is_no_without_our_namespace_or_without_the_folder(monkeypatch, tmp_path):
    """Fails closed: only other names (or no /run/netns at all) means the host's namespace."""
    (tmp_path / "gone-r1").symlink_to(tmp_path / "removed")
    (tmp_path / "other").write_text("")  # a plain file: not our namespace
    monkeypatch.setattr(routing, "NAMED_NETNS_DIR", tmp_path)
    assert not routing.in_named_netns()
    monkeypatch.setattr(routing, "NAMED_NETNS_DIR", tmp_path / "missing")
    assert not routing.in_named_netns()
