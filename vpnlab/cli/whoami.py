"""``vpnlab whoami``: the web node's "who am I" service (the lab starts it there)."""

from __future__ import annotations

import argparse

from vpnlab.cli.arguments import Subparsers, port_number


def register(sub: Subparsers) -> None:
    """``vpnlab whoami --listen A --port P``: answer each request with its source address."""
    p = sub.add_parser(
        "whoami",
        help='the web node\'s "who am I" HTTP service',
        description='The lab\'s "who am I" web service: it answers with the address it sees '
        "the request come from.",
    )
    p.add_argument("--listen", default="0.0.0.0", help="address to bind (default: all)")
    p.add_argument("--port", type=port_number, default=80, help="TCP port (default: 80)")
    p.add_argument(
        "--token", default="", help="what GET /token answers (the lab draws one per lab)"
    )
    p.set_defaults(func=cmd_whoami)


def cmd_whoami(args: argparse.Namespace) -> int:
    # imported here: http.server (and the email package it pulls in) would add about 8 ms to
    # every `vpnlab` command, the daemons' start included, for the one that serves HTTP
    from vpnlab.instruments.whoami import serve

    return serve(args.listen, args.port, args.token)
