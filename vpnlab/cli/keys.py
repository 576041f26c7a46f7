"""``vpnlab keys``: identities (a server key, its peers, one config file per client), the
notes' shared PSK, static keys, and a lab's esp_sa export for tshark.

    vpnlab keys server DIR                        the server's key and an empty peers.toml
    vpnlab keys add-peer DIR NAME --address A --endpoint HOST[:PORT] [--network N] [--psk]
                                                  a client: its line in peers.toml, DIR/NAME.conf
    vpnlab keys revoke DIR NAME                   the server answers NAME no more
    vpnlab keys peers DIR                         who is in peers.toml
    vpnlab keys public FILE                       the public key of a NAME.conf or server.key
    vpnlab keys psk FILE | static FILE | export   the simple cases and the tshark export
"""

from __future__ import annotations

import argparse
import os
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_network
from pathlib import Path

from vpnlab.cli.arguments import Subparsers
from vpnlab.core.errors import VpnlabError
from vpnlab.lab.state import state_dir
from vpnlab.shell.keys import new_psk, read_secret, write_secret
from vpnlab.shell.peers import (
    DEFAULT_SERVER_ADDRESS,
    SERVER_KEY,
    add_peer,
    create_server_identity,
    decode_key,
    encode_key,
    parse_endpoint,
    read_client_config,
    read_peers,
    revoke_peer,
)
from vpnlab.wire.esp import generate_static_keys
from vpnlab.wire.noise import public_key


def register(sub: Subparsers) -> None:
    """``vpnlab keys``: make key files, and export the live sessions' esp_sa rows."""
    keys = sub.add_parser(
        "keys",
        help="identities and peers, pre-shared keys, static keys, esp_sa export for tshark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
    register_identities(verbs)
    export = verbs.add_parser("export", help="print the esp_sa rows of a lab's live sessions")
    export.add_argument("--prefix", default="vpnlab-", help="the lab (default %(default)s)")
    export.add_argument("--file", type=Path, help="an esp_sa file instead of a lab's")
    export.set_defaults(func=export_main)
    psk = verbs.add_parser("psk", help="write a fresh pre-shared key file (mode 600)")
    psk.add_argument("file", type=Path)
    psk.set_defaults(func=lambda args: new_psk(args.file))
    static = verbs.add_parser("static", help="write a fresh static-key file (mode 600)")
    static.add_argument("file", type=Path)
    static.add_argument("--cipher", choices=("esp-null", "esp-aes-gcm"), default="esp-aes-gcm")
    static.add_argument("--client-address", default="10.8.0.2/24")
    static.set_defaults(func=static_main)


def export_main(args: argparse.Namespace) -> int:
    if args.file is None:
        args.file = state_dir(args.prefix) / "esp_sa"
        if not args.file.exists():
            raise VpnlabError(
                f"no esp_sa export in {args.file.parent}: is the lab up with an ESP cipher?"
            )
    sys.stdout.write(read_secret(args.file, "esp_sa export"))
    return 0


def static_main(args: argparse.Namespace) -> int:
    keys = generate_static_keys(args.cipher, os.urandom, args.client_address)
    write_secret(args.file, keys.to_json())
    return 0


def register_identities(verbs: Subparsers) -> None:
    """The identity mode's verbs: server, add-peer, revoke, peers."""
    server = verbs.add_parser("server", help="make a server identity: DIR/server.key, peers.toml")
    server.add_argument("folder", type=Path, metavar="DIR")
    server.set_defaults(func=server_main)
    add = verbs.add_parser("add-peer", help="a new client: its key pair, peers.toml, NAME.conf")
    add.add_argument("folder", type=Path, metavar="DIR")
    add.add_argument("name")
    add.add_argument("--address", type=IPv4Interface, required=True, help="e.g. 10.8.0.2/24")
    add.add_argument(
        "--endpoint", required=True, help="the server, HOST[:PORT] or [IPV6]:PORT (port 4500)"
    )
    add.add_argument("--cipher", choices=("esp-null", "esp-aes-gcm"), default="esp-aes-gcm")
    add.add_argument(
        "--network",
        type=ip_network,
        action="append",
        default=[],
        help="site to site: a network behind this client (repeatable)",
    )
    add.add_argument(
        "--route",
        type=ip_network,
        action="append",
        default=[],
        help="site to site: the client sends only these through the tunnel (default: all)",
    )
    add.add_argument("--psk", action="store_true", help="also a pre-shared key for this peer")
    add.add_argument(
        "--server-address",
        type=IPv4Interface,
        default=DEFAULT_SERVER_ADDRESS,
        help="the server's tunnel address (default %(default)s)",
    )
    add.set_defaults(func=add_peer_main)
    revoke = verbs.add_parser("revoke", help="take a peer out of peers.toml")
    revoke.add_argument("folder", type=Path, metavar="DIR")
    revoke.add_argument("name")
    revoke.set_defaults(func=revoke_main)
    listing = verbs.add_parser("peers", help="list the peers of DIR/peers.toml")
    listing.add_argument("folder", type=Path, metavar="DIR")
    listing.set_defaults(func=peers_main)
    public = verbs.add_parser("public", help="the public key of a NAME.conf or a server.key")
    public.add_argument("file", type=Path, metavar="FILE")
    public.set_defaults(func=public_main)


def endpoint(text: str) -> tuple[IPv4Address | IPv6Address, int]:
    try:
        return parse_endpoint(text)
    except ValueError:
        raise VpnlabError(
            f"endpoint {text!r}: want an address, ADDRESS:PORT or [IPV6]:PORT"
        ) from None


def server_main(args: argparse.Namespace) -> int:
    public = create_server_identity(args.folder)
    print(f"{args.folder / SERVER_KEY}: the server's key; public key {encode_key(public)}")
    return 0


def add_peer_main(args: argparse.Namespace) -> int:
    path = add_peer(
        args.folder,
        args.name,
        args.address,
        endpoint=endpoint(args.endpoint),
        cipher=args.cipher,
        networks=tuple(args.network),
        routes=tuple(args.route),
        psk=args.psk,
        server_address=args.server_address,
    )
    print(f"{path}: give this file to {args.name} (vpnlab client --config {path.name})")
    return 0


def revoke_main(args: argparse.Namespace) -> int:
    peer = revoke_peer(args.folder, args.name)
    print(f"revoked {peer.name} ({peer.tunnel_address}); a running server drops it within 1 s")
    return 0


def peers_main(args: argparse.Namespace) -> int:
    for peer in read_peers(args.folder):
        networks = " ".join(str(net) for net in peer.networks)
        print(
            f"{peer.name:<12} {peer.tunnel_address!s:<18} {encode_key(peer.public_key)} {networks}"
        )
    return 0


def public_main(args: argparse.Namespace) -> int:
    """The public key that belongs to a client config (what peers.toml must list for it) or
    to a server key (what the clients pin)."""
    if args.file.suffix == ".conf":
        private = read_client_config(args.file).identity.private_key
    else:
        private = decode_key(read_secret(args.file, "server key"), "server key")
    print(encode_key(public_key(private)))
    return 0
