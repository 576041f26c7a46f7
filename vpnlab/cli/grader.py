"""``vpnlab grader``: the hub's grader service, a student's requests to it, the instructor's report.

vpnlab grader serve [--user vpnlab-grader] [--store DB] [--port 10101] [--prefix nb-]
                                 the service (started as root by the hub: the enterer
                                 keeps root, the rest runs as --user; vpnlab/grader/)
vpnlab grader check [ITEM [ANSWER]] [--prefix P]
                                 a student: judge my lab (ITEM lab, the default, or my
                                 open fault) or a live exercise (ANSWER as JSON, else text)
vpnlab grader fault [--prefix P] a student: give me a fault (in a lab made with
                                 vpnlab lab up --fault grader)
vpnlab grader attempts           a student: my attempts, as the grader keeps them
vpnlab grader report [--store DB] [--csv FILE] [--plot FILE.png]
                                 the instructor: per student and item, from the store
                                 (opened read-only)

A student's lab is the one `vpnlab lab` names: --prefix, else $VPNLAB_PREFIX, else vpnlab-
(a notebook's: its prefix, e.g. --prefix nb03-).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vpnlab.cli.arguments import Subparsers, port_number
from vpnlab.core.errors import LabError
from vpnlab.lab.state import DEFAULT_PREFIX

DEFAULT_STORE = Path("/var/lib/vpnlab-grader/grader.db")


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``grader`` to the ``vpnlab`` parser."""
    p = subparsers.add_parser(
        "grader",
        help="the hub's grader service, a student's checks through it, the instructor's report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="grader_command", required=True, metavar="VERB")
    serve = sub.add_parser("serve", help="run the service (as root: it drops to --user)")
    serve.add_argument("--user", default="vpnlab-grader")
    serve.add_argument("--store", type=Path, default=DEFAULT_STORE)
    serve.add_argument("--port", type=port_number, default=10101)
    serve.add_argument("--listen", default="127.0.0.1")
    serve.add_argument("--prefix", default="nb-", help="the students' lab prefix (%(default)s)")
    check = sub.add_parser("check", help="judge my lab, my open fault or a live exercise")
    check.add_argument("item", nargs="?", default="lab")
    check.add_argument("answer", nargs="?")
    fault = sub.add_parser("fault", help="give me a fault in my troubleshooting lab")
    for verb in (check, fault):  # the lab `vpnlab lab up --fault grader` made, by default
        verb.add_argument(
            "--prefix",
            default=os.environ.get("VPNLAB_PREFIX", DEFAULT_PREFIX),
            help=f"my lab (default: $VPNLAB_PREFIX, else {DEFAULT_PREFIX}, as vpnlab lab)",
        )
    sub.add_parser("attempts", help="my attempts as the grader keeps them")
    report = sub.add_parser("report", help="the instructor's report from the store")
    report.add_argument("--store", type=Path, default=DEFAULT_STORE)
    report.add_argument("--csv", type=Path, help="write the CSV here (default: stdout)")
    report.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    p.set_defaults(func=cmd_grader)
    return p


def cmd_grader(args: argparse.Namespace) -> int:
    if args.grader_command == "serve":
        from vpnlab.grader.service import serve

        return serve(args.user, args.store, args.port, args.prefix, args.listen)
    if args.grader_command == "report":
        return _report(args)
    from vpnlab.grader.client import ask

    if args.grader_command == "check":
        body: dict[str, Any] = {"item": args.item, "prefix": args.prefix}
        if args.answer is not None:
            try:
                body["answer"] = json.loads(args.answer)
            except ValueError:
                body["answer"] = args.answer
        reply = ask("check", body)
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    reply = ask(args.grader_command, {"prefix": getattr(args, "prefix", None)})
    print(json.dumps(reply, indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from vpnlab.grader.report import plot, rows, to_csv
    from vpnlab.grader.store import open_store

    if not args.store.exists():
        raise LabError(f"no grader store {args.store} (see --store)")
    store = open_store(args.store, read_only=True)  # the report never writes the grades
    table = rows(store.attempts())
    store.close()
    if args.csv:
        args.csv.write_text(to_csv(table))
        print(f"{args.csv}: {len(table)} rows")
    else:
        print(to_csv(table), end="")
    if args.plot:
        plot(table, args.plot)
        print(f"{args.plot}: the plot")
    return 0
