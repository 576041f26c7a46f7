"""``vpnlab capture``: dumpcap in a lab node, or decode a capture file with tshark."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from vpnlab.cli.arguments import Subparsers
from vpnlab.instruments.capture import CaptureError, stack_counts, start_capture
from vpnlab.instruments.decode import decode, format_table, layer_overhead, layer_table

USAGE = """vpnlab capture [--prefix P] NODE IFACE [--count N] [--duration S] [-f BPF] -w FILE
       vpnlab capture decode FILE [--keys FILE] [--overhead] [--table] [--no-dissector]"""


def register(sub: Subparsers) -> None:
    """``vpnlab capture``: capture in a lab node, or decode a capture file."""
    p = sub.add_parser(
        "capture",
        usage=USAGE,
        help="capture in a lab node, or decode a file",
        description="The captures: dumpcap in a lab node; tshark to decode.",
    )
    p.add_argument("target", nargs="+", metavar="NODE IFACE | decode FILE")
    p.add_argument("--prefix", default=os.environ.get("VPNLAB_PREFIX", "vpnlab-"))
    p.add_argument("--count", type=int, default=100, help="stop after N packets (%(default)s)")
    p.add_argument("--duration", type=float, default=10, help="stop after S s (%(default)s)")
    p.add_argument("-w", "--write", type=Path, help="the pcapng file to write")
    p.add_argument("-f", "--filter", help="capture filter (BPF)")
    p.add_argument("--keys", help="decode: esp_sa rows (or a static-key file) to decrypt ESP")
    p.add_argument("--overhead", action="store_true", help="decode: header+trailer per layer")
    p.add_argument("--table", action="store_true", help="decode: every field with its bytes")
    p.add_argument(
        "--no-dissector",
        action="store_true",
        help="decode: without vpnlab's dissector (a Hello shows as tshark's udpencap:isakmp)",
    )
    p.set_defaults(func=cli_main)


def cli_main(args: argparse.Namespace) -> int:
    if args.target[0] == "decode":
        if len(args.target) != 2:
            raise CaptureError("usage: vpnlab capture decode FILE [--keys FILE]")
        packets = decode(args.target[1], args.keys, dissector=not args.no_dissector)
        for pkt in packets:
            print(f"{pkt.number:>4} {pkt.length:>5} B  {pkt.stack}")
            if args.overhead:
                print(
                    "      "
                    + "  ".join(
                        f"{o.layer} {o.header_bytes}+{o.trailer_bytes}" for o in layer_overhead(pkt)
                    )
                )
        if args.table:
            print(format_table(layer_table(packets)))
        return 0
    if len(args.target) != 2 or args.write is None:
        raise CaptureError("usage: vpnlab capture [--prefix P] NODE IFACE ... -w FILE")
    node, interface = args.target
    cap = None
    try:  # (start_capture stops its dumpcap itself if stopped while starting)
        cap = start_capture(
            args.prefix, node, interface, args.write, args.count, args.duration, args.filter
        )
        path = cap.wait(args.duration + 10)  # dumpcap stops by itself: count or duration
    finally:  # CleanUp: stopped first (Ctrl-C, SIGTERM), dumpcap is stopped too
        if cap is not None and cap.running:
            with contextlib.suppress(CaptureError):
                cap.stop(settle_s=0)
    counts = stack_counts(path)
    print(f"{path}: {sum(counts.values())} packets")
    for stack, n in counts.items():
        print(f"  {n:>4}  {stack}")
    return 0
