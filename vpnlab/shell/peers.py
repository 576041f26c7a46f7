"""The identity mode's files: the server's key and its peers, and one config file per client.

A folder holds the server's side (``vpnlab keys server DIR`` makes it)::

    DIR/server.key      the server's X25519 private key, base64 (mode 0600)
    DIR/peers.toml      the clients it answers: name, public key, tunnel address, networks
    DIR/NAME.conf       one client's config (``vpnlab keys add-peer DIR NAME``), to copy to it
    DIR/hello-stamps.json   the running server's latest Hello timestamp per peer, so that a
                        recorded Hello is never answered twice, across restarts too

A client's config is the one file a student copies, as a wg-quick or an .ovpn file: its own
private key, its address, the server's endpoint and public key, the cipher and the routes::

    [client]
    name = "r1"
    private_key = "..."
    address = "10.8.0.2/24"

    [server]
    endpoint = "198.51.100.2:4500"
    public_key = "..."
    cipher = "esp-aes-gcm"
    routes = []            # site to site: only these networks through the tunnel

``vpnlab keys revoke DIR NAME`` takes a peer out of ``peers.toml``; a running server reads the
file again when it changes and ends that peer's session. Every file with a private key or a
PSK is written with mode 0600 (``keys.write_secret``) and refused if others may read it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any

from vpnlab.core.constants import PORT, SERVER_TUNNEL_ADDRESS
from vpnlab.core.errors import VpnlabError
from vpnlab.core.formats import Peer
from vpnlab.shell.keys import read_secret, write_secret
from vpnlab.wire.identity import ClientIdentity, ServerIdentity, check_peers
from vpnlab.wire.noise import public_key

SERVER_KEY = "server.key"
DEFAULT_SERVER_ADDRESS = IPv4Interface(SERVER_TUNNEL_ADDRESS)
PEERS = "peers.toml"
HELLO_STAMPS = "hello-stamps.json"
HELLO_STAMPS_LOG = "hello-stamps.log"
"""A line per answered Hello since ``HELLO_STAMPS`` was last written whole: ``KEY STAMP``."""


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, what: str) -> bytes:
    """A 32-byte key from base64.

    Raises:
        VpnlabError: not base64 of 32 bytes.
    """
    if not isinstance(text, str):
        raise VpnlabError(f"{what} is not a 32-byte key in base64 (a {type(text).__name__})")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise VpnlabError(f"{what} is not a 32-byte key in base64")
    return key


def _toml(text: str, where: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VpnlabError(f"{where}: not valid TOML ({exc})") from None


def _value(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise VpnlabError(f"{where}: '{key}' is missing")
    return table[key]


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    """A string field (TOML is typed: ``public_key = 5`` is an integer, and refused)."""
    value = table.get(key, default) if default is not None else _value(table, key, where)
    if not isinstance(value, str):
        raise VpnlabError(f"{where}: '{key}' must be a string, not {type(value).__name__}")
    return value


def _texts(table: dict[str, Any], key: str, where: str) -> list[str]:
    """A list of strings, empty if missing."""
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise VpnlabError(f"{where}: '{key}' must be a list of strings")
    return value


@dataclass(frozen=True)
class ClientConfig:
    """A parsed client config: what ``vpnlab client --config FILE`` runs with."""

    name: str
    identity: ClientIdentity
    address: IPv4Interface
    server: IPv4Address | IPv6Address
    port: int
    cipher: str
    routes: tuple[IPv4Network | IPv6Network, ...]


def read_client_config(path: Path) -> ClientConfig:
    """Read and check a client's config file (mode 0600).

    Raises:
        VpnlabError: unreadable, readable by others, or a field missing or malformed.
    """
    data = _toml(read_secret(path, "client config"), path)
    try:
        client, server = data["client"], data["server"]
        host, port = parse_endpoint(str(_value(server, "endpoint", f"{path} [server]")))
        psk = server.get("psk")
        return ClientConfig(
            name=str(client.get("name", path.stem)),
            identity=ClientIdentity(
                decode_key(_value(client, "private_key", f"{path} [client]"), "private_key"),
                decode_key(_value(server, "public_key", f"{path} [server]"), "public_key"),
                decode_key(psk, "psk") if psk else None,
            ),
            address=IPv4Interface(_value(client, "address", f"{path} [client]")),
            server=host,
            port=port,
            cipher=str(server.get("cipher", "esp-aes-gcm")),
            routes=tuple(ip_network(net) for net in server.get("routes", [])),
        )
    except KeyError as exc:
        raise VpnlabError(f"{path}: the [{exc.args[0]}] table is missing") from None
    except (ValueError, TypeError) as exc:
        raise VpnlabError(f"{path}: {exc}") from None


def parse_endpoint(text: str) -> tuple[IPv4Address | IPv6Address, int]:
    """``198.51.100.2``, ``198.51.100.2:4500``, ``2001:db8:2::2`` or ``[2001:db8:2::2]:4500``.

    Raises:
        ValueError: no address, or a bad port.
    """
    if text.startswith("["):  # IPv6 with a port, as in a URL
        host, _, port = text[1:].partition("]:")
        return ip_address(host), int(port)
    host, _, port = text.rpartition(":")
    if not host or ":" in host:  # no port, or an IPv6 address without brackets
        return ip_address(text), PORT
    return ip_address(host), int(port)


def format_endpoint(host: IPv4Address | IPv6Address, port: int) -> str:
    """What :func:`parse_endpoint` reads back: ``[v6]:port`` or ``v4:port``."""
    return f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"


def client_config_text(config: ClientConfig) -> str:
    """The config file of one client (TOML; strings written as JSON strings, which TOML reads)."""
    identity = config.identity
    lines = [
        f"# vpnlab client {config.name}: vpnlab client --config {config.name}.conf",
        "[client]",
        f"name = {json.dumps(config.name)}",
        f'private_key = "{encode_key(identity.private_key)}"',
        f'address = "{config.address}"',
        "",
        "[server]",
        f'endpoint = "{format_endpoint(config.server, config.port)}"',
        f'public_key = "{encode_key(identity.server_public_key)}"',
        f"cipher = {json.dumps(config.cipher)}",
        f"routes = {json.dumps([str(net) for net in config.routes])}",
    ]
    if identity.psk:
        lines.append(f'psk = "{encode_key(identity.psk)}"')
    return "\n".join(lines) + "\n"


def read_peers(folder: Path) -> tuple[Peer, ...]:
    """The peers of ``folder/peers.toml`` (none if the file has none).

    Raises:
        VpnlabError: unreadable, or a peer malformed.
    """
    path = folder / PEERS
    data = _toml(read_secret(path, "peers file"), path)
    entries = data.get("peer", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VpnlabError(f"{path}: 'peer' must be [[peer]] tables")
    peers = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} peer {number}"
        try:
            psk = _text(entry, "psk", where, default="")
            peers.append(
                Peer(
                    name=_text(entry, "name", where),
                    public_key=decode_key(_text(entry, "public_key", where), f"{where} key"),
                    tunnel_address=IPv4Interface(_text(entry, "address", where)),
                    networks=tuple(ip_network(net) for net in _texts(entry, "networks", where)),
                    psk=decode_key(psk, f"{where} psk") if psk else None,
                )
            )
        except (ValueError, TypeError) as exc:
            raise VpnlabError(f"{where}: {exc}") from None
    return tuple(peers)


def read_hello_stamps(folder: Path) -> dict[bytes, int]:
    """The latest Hello timestamp answered per peer key: the whole file's, then the log's
    lines (the highest wins); none if both are missing. A last line without its newline
    (a write cut off by a crash of the machine) is left out.

    Raises:
        VpnlabError: a file is there but unreadable or malformed (better refuse to start
            than forget which Hellos were answered).
    """
    path, log = folder / HELLO_STAMPS, folder / HELLO_STAMPS_LOG
    stamps: dict[bytes, int] = {}
    try:
        if path.exists():
            data = json.loads(read_secret(path, "hello timestamps"))
            stamps = {decode_key(key, str(path)): int(stamp) for key, stamp in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise VpnlabError(f"{path}: not a map of keys to timestamps ({exc})") from None
    if not log.exists():
        return stamps
    text = read_secret(log, "hello timestamps")
    for number, line in enumerate(text.split("\n")[:-1], 1):  # the part after the last \n: cut
        try:
            key_text, stamp_text = line.split(" ")
            key, stamp = decode_key(key_text, str(log)), int(stamp_text)
        except ValueError as exc:
            raise VpnlabError(f"{log}, line {number}: not KEY STAMP ({exc})") from None
        stamps[key] = max(stamp, stamps.get(key, stamp))
    return stamps


def open_hello_stamps_log(folder: Path) -> int:
    """The log, emptied, for appending (mode 0600): call it once the whole file is durable."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    return os.open(folder / HELLO_STAMPS_LOG, flags, 0o600)


def append_hello_stamps(fd: int, stamps: dict[bytes, int]) -> None:
    """A line per changed timestamp, in one write (the kernel keeps it if the server dies)."""
    os.write(fd, "".join(f"{encode_key(key)} {stamp}\n" for key, stamp in stamps.items()).encode())


def write_hello_stamps(folder: Path, stamps: dict[bytes, int], durable: bool = True) -> None:
    """Keep the timestamps: a temporary file, renamed (``write_secret``); ``durable``: with
    fsync of the file before and of the folder after the rename."""
    text = json.dumps({encode_key(key): stamp for key, stamp in sorted(stamps.items())})
    write_secret(folder / HELLO_STAMPS, text + "\n", durable=durable)


def peers_text(peers: tuple[Peer, ...]) -> str:
    lines = ["# vpnlab peers: the clients this server answers (vpnlab keys add-peer / revoke)"]
    for peer in peers:
        lines += [
            "",
            "[[peer]]",
            f"name = {json.dumps(peer.name)}",
            f'public_key = "{encode_key(peer.public_key)}"',
            f'address = "{peer.tunnel_address}"',
            f"networks = {json.dumps([str(net) for net in peer.networks])}",
        ]
        if peer.psk:
            lines.append(f'psk = "{encode_key(peer.psk)}"')
    return "\n".join(lines) + "\n"


def read_server_identity(folder: Path, server_address: IPv4Interface) -> ServerIdentity:
    """The server's key and its peers, checked (one key and one address each).

    Raises:
        VpnlabError: a file unreadable or malformed, or two peers sharing a key or an address.
    """
    key = decode_key(read_secret(folder / SERVER_KEY, "server key"), str(folder / SERVER_KEY))
    peers = read_peers(folder)
    check_peers(peers, server_address)
    return ServerIdentity(key, peers)


def create_server_identity(folder: Path) -> bytes:
    """``vpnlab keys server DIR``: a fresh server key (and an empty peers file); returns the
    public key.

    Raises:
        VpnlabError: ``folder`` already holds a server key (it is never overwritten).
    """
    if (folder / SERVER_KEY).exists():
        raise VpnlabError(f"{folder / SERVER_KEY} exists: the server keeps its key")
    private = os.urandom(32)
    write_secret(folder / SERVER_KEY, encode_key(private) + "\n")
    if not (folder / PEERS).exists():
        write_secret(folder / PEERS, peers_text(()))
    return public_key(private)


def add_peer(
    folder: Path,
    name: str,
    address: IPv4Interface,
    *,
    endpoint: tuple[IPv4Address | IPv6Address, int],
    cipher: str = "esp-aes-gcm",
    networks: tuple[IPv4Network | IPv6Network, ...] = (),
    routes: tuple[IPv4Network | IPv6Network, ...] = (),
    psk: bool = False,
    server_address: IPv4Interface = DEFAULT_SERVER_ADDRESS,
) -> Path:
    """``vpnlab keys add-peer``: a key pair for a new client, its line in ``peers.toml`` and
    its config file ``folder/NAME.conf``; returns that file's path.

    ``server_address`` is the server's own tunnel address: the peer's must be another one in
    the same network.

    Raises:
        VpnlabError: a bad name, the name or address taken, or no server key in ``folder``.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise VpnlabError(f"peer name {name!r}: letters, digits, '-', '_' and '.' only")
    server_private = decode_key(read_secret(folder / SERVER_KEY, "server key"), "server key")
    peers = read_peers(folder)
    if any(peer.name == name for peer in peers):
        raise VpnlabError(f"there is a peer {name} already (vpnlab keys revoke it first)")
    private = os.urandom(32)
    shared = os.urandom(32) if psk else None
    peer = Peer(name, public_key(private), address, networks, shared)
    check_peers((*peers, peer), server_address)
    write_secret(folder / PEERS, peers_text((*peers, peer)))
    config = ClientConfig(
        name,
        ClientIdentity(private, public_key(server_private), shared),
        address,
        endpoint[0],
        endpoint[1],
        cipher,
        routes,
    )
    path = folder / f"{name}.conf"
    write_secret(path, client_config_text(config))
    return path


def revoke_peer(folder: Path, name: str) -> Peer:
    """``vpnlab keys revoke``: take ``name`` out of ``peers.toml`` (its config file stays, but
    the server answers it no more). Returns the peer removed.

    Raises:
        VpnlabError: no such peer.
    """
    peers = read_peers(folder)
    gone = [peer for peer in peers if peer.name == name]
    if not gone:
        known = ", ".join(peer.name for peer in peers) or "none"
        raise VpnlabError(f"no peer {name} in {folder / PEERS} (peers: {known})")
    write_secret(folder / PEERS, peers_text(tuple(p for p in peers if p.name != name)))
    return gone[0]
