"""The identity mode with real daemons: own keys, revocation, strangers, rekeying on the wire.

The lab's default: identity/server.key, identity/peers.toml and one identity/NODE.conf per
client, made by start-vpn. A revoked or unknown key gets nothing; the tunnel rekeys without
losing a ping, and tshark decrypts the datagrams of every set of keys.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest

from vpnlab import lab
from vpnlab.instruments.capture import fields, start_capture
from vpnlab.lab import state
from vpnlab.lab.nodes import popen_in
from vpnlab.lab.topology import make_topology
from vpnlab.shell.peers import ClientConfig, client_config_text, read_client_config, read_peers
from vpnlab.wire.identity import ClientIdentity

from .helpers import WEB_IP, run, tunnel_address, wait_until

pytestmark = pytest.mark.lab


def server_status(prefix: str) -> dict:
    path = state.state_dir(prefix) / "server.json"
    return json.loads(path.read_text()) if path.exists() else {}


def vpnlab(prefix: str, node: str, *argv: str, timeout: float = 20):
    return lab.exec_in(
        prefix,
        node,
        [sys.executable, "-m", "vpnlab", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_identity_addresses_revocation_and_strangers(prefix, tmp_path):
    lab.up(prefix=prefix, topology=make_topology(2), cipher="esp-aes-gcm")
    keys = state.state_dir(prefix) / "identity"
    peers = {peer.name: peer for peer in read_peers(keys)}
    assert {name: str(p.tunnel_address) for name, p in peers.items()} == {
        "r1": tunnel_address(0),
        "r3": tunnel_address(1),
    }
    assert oct(os.stat(keys / "r1.conf").st_mode & 0o777) == "0o600"

    def clients() -> set[str]:
        return {c["tunnel_address"] for c in server_status(prefix).get("clients", [])}

    both = {tunnel_address(0), tunnel_address(1)}
    assert wait_until(lambda: clients() == both, 3) is not None, clients()

    # revoke r3: the running server reads peers.toml again and ends r3's session
    done = vpnlab(prefix, "r2", "keys", "revoke", str(keys), "r3")
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: clients() == {tunnel_address(0)}, 5) is not None, clients()
    r3 = lab.status(prefix)["daemons"]["client-r3"]["pid"]
    assert wait_until(lambda: not state.alive(r3), 12) is not None  # peer lost, exit 4
    again = vpnlab(prefix, "r3", "client", "--config", str(keys / "r3.conf"))
    assert again.returncode == 3, again.stdout + again.stderr  # no answer: server unreachable
    assert ping(prefix, "r1").returncode == 0  # r1 untouched

    # a stranger: the right server key pinned, but a key the server does not know
    real = read_client_config(keys / "r1.conf")
    stranger = tmp_path / "stranger.conf"
    stranger.write_text(
        client_config_text(
            ClientConfig(
                "stranger",
                ClientIdentity(os.urandom(32), real.identity.server_public_key),
                real.address,
                real.server,
                real.port,
                real.cipher,
                (),
            )
        )
    )
    stranger.chmod(0o600)
    refused = vpnlab(prefix, "r3", "client", "--config", str(stranger))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    drops = server_status(prefix)["counters"]["drops"]
    assert drops.get("unknown peer key", 0) >= 5  # the Hello and its retries, unanswered
    assert "Traceback" not in Path(lab.status(prefix)["daemons"]["server"]["log"]).read_text()


def ping(prefix: str, node: str, count: int = 2):
    return run(prefix, node, "ping", "-c", str(count), "-i", "0.2", "-W", "2", WEB_IP)


def test_identity_rekeys_without_loss_and_tshark_decrypts_every_key(prefix, tmp_path):
    lab.up(prefix=prefix, cipher="esp-aes-gcm", vpn=False)
    lab.start_vpn(prefix, "esp-aes-gcm", client_args=["--rekey-after", "10"])
    esp_sa = state.state_dir(prefix) / "esp_sa"
    rows: set[str] = set()
    cap = start_capture(prefix, "r2", "eth0", tmp_path / "eth0.pcapng", 5000, 28, "udp port 4500")
    pinger = popen_in(
        prefix, "r1", ["ping", "-q", "-i", "0.2", "-c", "120", WEB_IP], stdout=PIPE, text=True
    )
    end = time.monotonic() + 26
    while time.monotonic() < end:  # every SA that was ever up: the export keeps only live ones
        rows |= {r for r in esp_sa.read_text().splitlines() if r and not r.startswith("#")}
        time.sleep(0.5)
    out, _ = pinger.communicate(timeout=20)
    path = cap.stop()
    assert " 0% packet loss" in out, out
    info = server_status(prefix)
    assert info["counters"]["rekeys"] >= 2, info["counters"]
    hellos = [row for row in fields(path, ["udp.payload"]) if row[0].startswith("0000000003")]
    assert len(hellos) >= 2  # two rekeys at least (the first Hello came before the capture)
    stacks = [row[0] for row in fields(path, ["frame.protocols"], keys=sorted(rows))]
    decrypted = sum(stack.endswith(":esp:ip:icmp:data") for stack in stacks)
    assert decrypted == 240, sorted(set(stacks))  # every request and reply, under every key
