"""``vpnlab keys``: make key files, and print a lab's esp_sa export for tshark."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vpnlab.core.errors import VpnlabError
from vpnlab.keys import new_psk, read_secret, write_secret
from vpnlab.lab.state import state_dir
from vpnlab.wire.esp import generate_static_keys


def register(sub: argparse._SubParsersAction) -> None:
    """``vpnlab keys``: make key files, and export the live sessions' esp_sa rows."""
    keys = sub.add_parser("keys", help="pre-shared keys, static keys, esp_sa export for tshark")
    verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
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
