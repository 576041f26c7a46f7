"""server.py's peers reload, periodic-task guard and Hello timestamps on disk (issue 27).

Real files in a temporary folder, a real ServerCore; no namespaces (the routes of a reload
are checked in tests/lab/test_handshake_attacks.py).
"""

from __future__ import annotations

import io
from ipaddress import IPv4Address, IPv4Network

import pytest

from vpnlab.core.errors import VpnlabError
from vpnlab.core.formats import Peer
from vpnlab.shell.keys import write_secret
from vpnlab.shell.peers import (
    HELLO_STAMPS,
    HELLO_STAMPS_LOG,
    PEERS,
    encode_key,
    peers_text,
    read_hello_stamps,
    read_peers,
)
from vpnlab.shell.report import Reporter
from vpnlab.shell.server import HelloStamps, PeersWatch, guarded

from .helpers import receive_one
from .test_identity import PEERS as IDENTITY_PEERS
from .test_identity import SERVER_TUNNEL_ADDRESS, connect, server_core

LAN = IPv4Network("192.168.50.0/24")


def folder_with(tmp_path, peers: tuple[Peer, ...]):
    write_secret(tmp_path / PEERS, peers_text(peers))
    return tmp_path


def watch(tmp_path, core, peers):
    folder_with(tmp_path, peers)
    log = io.StringIO()
    reporter = Reporter("server", None, log)
    return PeersWatch(tmp_path, SERVER_TUNNEL_ADDRESS, core, reporter), reporter, log


def rewrite(watcher: PeersWatch, text: str) -> None:
    write_secret(watcher.path, text)
    watcher.stamp = None  # as if the clock ticked (mtime granularity)


def test_PeersWatch_a_wrongly_typed_file_changes_nothing_and_says_why(tmp_path):
    """Issue 27: ``public_key = 5`` is valid TOML; reading it raised AttributeError out of the
    once-a-second work and ended the server."""
    core = server_core()
    watcher, reporter, log = watch(tmp_path, core, IDENTITY_PEERS)
    connect(core, "alice", 4001)
    rewrite(watcher, '[[peer]]\nname = "alice"\npublic_key = 5\naddress = "10.8.0.7/24"\n')
    assert watcher.check(1.0) == []
    assert len(core.sessions) == 1 and set(core.handshake.peers.values()) == set(IDENTITY_PEERS)
    error = reporter.fields["peers_error"]
    assert "public_key" in error and "\n" not in error and "keeping" in error
    assert "public_key" in log.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        '[[peer]]\nname = 1\npublic_key = "x"\naddress = "10.8.0.7/24"\n',
        '[[peer]]\nname = "a"\npublic_key = "{key}"\naddress = 7\n',
        '[[peer]]\nname = "a"\npublic_key = "{key}"\naddress = "10.8.0.7/24"\nnetworks = [5]\n',
        '[[peer]]\nname = "a"\npublic_key = "{key}"\naddress = "10.8.0.7/24"\npsk = true\n',
        'peer = "x"\n',
    ],
)
def test_read_peers_refuses_every_wrong_type(tmp_path, text):
    from vpnlab.shell.peers import encode_key

    write_secret(tmp_path / PEERS, text.format(key=encode_key(bytes(32))))
    with pytest.raises(VpnlabError):
        read_peers(tmp_path)


def test_PeersWatch_a_revoked_peers_networks_go_with_it(tmp_path):
    """Issue 27: a reload kept the old ``client_networks``: a new peer at a revoked peer's
    address received the old LAN's traffic."""
    alice, bob = IDENTITY_PEERS
    site = Peer(alice.name, alice.public_key, alice.tunnel_address, (LAN,))
    core = server_core()
    watcher, reporter, _ = watch(tmp_path, core, (site, bob))
    rewrite(watcher, peers_text((site, bob)))
    watcher.check(1.0)
    assert (LAN, IPv4Address("10.8.0.7")) in core.router.client_networks
    newcomer = Peer("carol", bob.public_key, alice.tunnel_address)  # alice's address, no LAN
    rewrite(watcher, peers_text((newcomer,)))
    watcher.check(2.0)
    assert core.router.client_networks == [] and reporter.fields["peers_error"] is None


def test_guarded_counts_a_bug_and_goes_on():
    core = server_core()
    log = io.StringIO()

    def broken(now: float):
        raise KeyError("x")

    task = guarded("peers", broken, core, Reporter("server", None, log))
    assert task(1.0) == [] and task(2.0) == []
    assert core.counters.drops["bug: peers: KeyError"] == 2
    assert log.getvalue().count("bug: peers") == 1


def test_HelloStamps_a_recorded_hello_is_refused_after_a_restart(tmp_path):
    """Issue 27: the timestamps were in memory only, so a recorded Hello was answered once
    more after every restart."""
    from .test_identity import NOW, SERVER, ClientCore, client_format, seeded_random

    first = server_core()
    stamps = HelloStamps(tmp_path, first)
    client = ClientCore(
        SERVER, client_format("alice").client_handshake(seeded_random(7)), clock_offset_s=NOW
    )
    client.connect(0.0)
    ((hello, _),) = client.datagrams_to_send()
    receive_one(first, hello, ("192.0.2.2", 4500), 0.0)
    assert first.sessions
    stamps.save()  # what the server does before the Welcome leaves
    assert stamps.unsynced
    stamps.sync(1.0)  # and once a second, onto the disk
    assert not stamps.unsynced
    restarted = server_core()
    HelloStamps(tmp_path, restarted)
    events = receive_one(restarted, hello, ("192.0.2.2", 4500), 5.0)
    assert [e.reason for e in events] == ["replayed hello"] and not restarted.sessions


def test_HelloStamps_a_handshake_appends_a_line_and_a_start_merges_the_log(tmp_path):
    """Issue 27: each handshake rewrote the whole timestamps file in the server's loop (250
    connects: 250 rewrites of a 250-line file); now it appends one line to a log."""
    from .test_identity import connect

    first = server_core()
    stamps = HelloStamps(tmp_path, first)
    whole = (tmp_path / HELLO_STAMPS).read_text()
    connect(first, "alice", 4500, seed=7)
    stamps.save()
    stamps.save()  # nothing new: nothing appended
    (line,) = (tmp_path / HELLO_STAMPS_LOG).read_text().splitlines()
    assert (tmp_path / HELLO_STAMPS).read_text() == whole  # not rewritten
    alice_key = IDENTITY_PEERS[0].public_key
    assert line == f"{encode_key(alice_key)} {first.handshake.latest[alice_key]}"
    restarted = server_core()
    HelloStamps(tmp_path, restarted)  # killed, started again: the log is read and merged
    assert restarted.handshake.latest == first.handshake.latest
    assert (tmp_path / HELLO_STAMPS_LOG).read_text() == ""
    assert read_hello_stamps(tmp_path) == first.handshake.latest
    (tmp_path / HELLO_STAMPS_LOG).write_text(line[:-3])  # a last line cut off by a crash
    assert read_hello_stamps(tmp_path) == first.handshake.latest
