"""Issue 27 against real daemons: a recorded Hello is never answered twice, also after the
server restarts; a copied Hello sent from elsewhere ends nothing; a wrongly typed peers file
kills nothing.

The lab runs the identity mode (esp-aes-gcm). The recorded Hello is one r1's key makes (read
from r1's config, as a capture would have it), sent from r1's namespace on another port.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

import pytest

from vpnlab import lab
from vpnlab.core.constants import PORT
from vpnlab.lab import state
from vpnlab.lab.build import start_daemon
from vpnlab.lab.nodes import udp_socket_in
from vpnlab.lab.topology import DEFAULT_TOPOLOGY
from vpnlab.shell.keys import write_secret
from vpnlab.shell.peers import PEERS, read_client_config
from vpnlab.wire.identity import WELCOME_PREFIX, IdentityFormat

from .helpers import LAN1, SITE_TO_SITE, WEB_IP, run, wait_until

pytestmark = pytest.mark.lab

SERVER = (DEFAULT_TOPOLOGY.server_ip, PORT)


def server_status(prefix: str) -> dict:
    path = state.state_dir(prefix) / "server.json"
    return json.loads(path.read_text()) if path.exists() else {}


def answered(prefix: str, hello: bytes, source: str = "192.0.2.2") -> bool:
    """Send ``hello`` from r1's namespace (another port than the client's); a Welcome back?"""
    sock = udp_socket_in(prefix, "r1", source)
    try:
        for _ in range(3):
            sock.sendto(hello, SERVER)
            if select.select([sock], [], [], 1.0)[0]:
                return sock.recv(2048).startswith(WELCOME_PREFIX)
        return False
    finally:
        sock.close()


def restart_server(prefix: str) -> None:
    """SIGTERM the server, start it again with the same argv (the same identity folder)."""
    record = state.record_of(prefix)
    daemon = record.daemons["server"]
    state.stop_daemons(record, ["server"])
    status = state.state_dir(prefix) / "server.json"
    status.unlink(missing_ok=True)
    start_daemon(prefix, record, "server", daemon.node, daemon.argv)
    assert wait_until(lambda: status.exists(), 10) is not None


def test_a_recorded_hello_is_answered_once_also_across_a_restart(prefix):
    lab.up(prefix=prefix, cipher="esp-aes-gcm")
    keys = state.state_dir(prefix) / "identity"
    config = read_client_config(keys / "r1.conf")
    fmt = IdentityFormat("esp-aes-gcm", client=config.identity)
    hello = fmt.client_handshake(os.urandom).hello(time.time())
    assert answered(prefix, hello)  # fresh: answered (r1's session keeps its keys)
    assert not answered(prefix, hello, "192.0.2.2")  # the same again: a replay
    assert (keys / "hello-stamps.json").exists()
    restart_server(prefix)
    assert not answered(prefix, hello)  # issue 27: it used to be answered once more here
    drops = server_status(prefix)["counters"]["drops"]
    assert wait_until(lambda: server_status(prefix)["counters"]["drops"].get("replayed hello"), 3)
    assert "Traceback" not in (state.state_dir(prefix) / "logs" / "server.log").read_text(), drops


def test_a_copied_hello_ends_nothing_and_a_bad_peers_file_kills_nothing(prefix):
    lab.up(prefix=prefix, cipher="esp-aes-gcm")
    keys = state.state_dir(prefix) / "identity"
    config = read_client_config(keys / "r1.conf")
    copied = IdentityFormat("esp-aes-gcm", client=config.identity)
    hello = copied.client_handshake(os.urandom).hello(time.time())
    assert answered(prefix, hello)  # a valid Hello of r1's key, from another port
    time.sleep(1.5)
    # the status as the server wrote it after that (once a second, so up to 2 s apart)
    status_file = state.state_dir(prefix) / "server.json"
    written_after = time.time()
    assert wait_until(lambda: status_file.stat().st_mtime > written_after, 3) is not None
    clients = server_status(prefix)["clients"]
    assert [c["tunnel_address"] for c in clients] == ["10.8.0.2/24"]
    assert clients[0]["peer"] == "192.0.2.2:4500"  # still r1's own address and session
    assert run(prefix, "r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP).returncode == 0

    write_secret(keys / PEERS, '[[peer]]\nname = "r1"\npublic_key = 5\naddress = "10.8.0.2/24"\n')
    assert wait_until(lambda: server_status(prefix).get("peers_error"), 5) is not None
    assert "public_key" in server_status(prefix)["peers_error"]
    assert state.alive(lab.status(prefix)["daemons"]["server"]["pid"])
    assert run(prefix, "r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", WEB_IP).returncode == 0


def test_a_reload_takes_a_revoked_peers_lan_route_with_it(prefix):
    """Issue 27: a reload never updated the site networks: a revoked peer's LAN stayed routed
    into tun0 (and, in the core, to whoever got its address next)."""
    lab.up(prefix=prefix, topology=SITE_TO_SITE, nat=False)
    keys = state.state_dir(prefix) / "identity"

    def routes() -> str:
        return run(prefix, "r2", "ip", "route").stdout

    assert LAN1 in routes()
    done = lab.exec_in(
        prefix,
        "r2",
        [sys.executable, "-m", "vpnlab", "keys", "revoke", str(keys), "r1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: LAN1 not in routes(), 5) is not None, routes()
    assert server_status(prefix).get("peers_error") is None
