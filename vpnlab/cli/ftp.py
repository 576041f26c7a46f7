"""``vpnlab ftp serve|transfer|get``: the notes' FTP demo, one end of it (run inside a node).

    vpnlab ftp serve --listen 10.8.0.1 --root DIR          # in r2's namespace
    vpnlab ftp transfer --server 10.8.0.1 --mode active    # in r1's: STOR, RETR, SHA-256
    vpnlab ftp get --server 10.8.0.1 --name FILE           # anonymous, read only

``transfer`` and ``get`` print their result as one JSON line. ``ftp.lab_server`` and
``ftp.lab_transfer`` start these inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vpnlab.cli.arguments import Subparsers, port_number
from vpnlab.instruments.ftp_endpoints import (
    CLIENT_TIMEOUT_S,
    FTP_PORT,
    LIFETIME_S,
    MODES,
    FtpError,
    get,
    serve,
    transfer,
)


def register(sub: Subparsers) -> None:
    """``vpnlab ftp``: an FTP server, or a client's transfer, on the tunnel."""
    ftp = sub.add_parser(
        "ftp",
        help="FTP on the tunnel: serve, transfer, get (inside a node)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = ftp.add_subparsers(dest="ftp_command", required=True, metavar="VERB")
    p = verbs.add_parser("serve", help="FTP server (run it in r2's namespace)")
    p.add_argument("--listen", default="10.8.0.1")
    p.add_argument("--port", type=port_number, default=FTP_PORT)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--lifetime", type=float, default=LIFETIME_S, help="seconds before exiting")
    p.set_defaults(func=cmd_serve)
    for name, helptext in (("transfer", "STOR + RETR + SHA-256 check"), ("get", "anonymous RETR")):
        p = verbs.add_parser(name, help=helptext)
        p.add_argument("--server", default="10.8.0.1")
        p.add_argument("--port", type=port_number, default=FTP_PORT)
        p.add_argument("--mode", choices=MODES, default="passive")
        p.add_argument("--timeout", type=float, default=CLIENT_TIMEOUT_S)
        if name == "transfer":
            p.add_argument("--size", type=int, default=4096, help="bytes of random data")
            p.add_argument("--file", type=Path, help="upload this file instead")
            p.set_defaults(func=cmd_transfer)
        else:
            p.add_argument("--name", required=True)
            p.set_defaults(func=cmd_get)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        return serve(args.listen, args.root, args.port, args.lifetime)
    except OSError as exc:
        raise FtpError(str(exc)) from None


def cmd_transfer(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes() if args.file else None
        result = transfer(
            args.server, args.mode, data, args.size, port=args.port, timeout_s=args.timeout
        )
    except OSError as exc:
        raise FtpError(str(exc)) from None
    print(json.dumps(result), flush=True)
    if not result["ok"]:
        raise FtpError("SHA-256 mismatch")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    try:
        result = get(args.server, args.name, args.mode, args.port, args.timeout)
    except OSError as exc:
        raise FtpError(str(exc)) from None
    print(json.dumps(result), flush=True)
    return 0
