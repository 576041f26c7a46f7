"""``vpnlab check``: does the lab work again? And ``--report``: a student's progress.

    vpnlab check [--prefix P] [--json]           the end-to-end checks, one a line; exit 0 if
                                                 all pass (a fault lab's fault is never named
                                                 before it is fixed); one attempt recorded
    vpnlab check --report [--format json|csv] [--student NAME] [-o FILE] [--progress FILE]
                                                 every exercise and task of the progress file
                                                 ($VPNLAB_PROGRESS or ~/.vpnlab/progress.jsonl)
                                                 per SEED VPN lab task

Errors are LabError / VpnlabError: ``vpnlab.cli.main`` prints them as one line and exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path

from vpnlab.cli.arguments import Subparsers
from vpnlab.core.errors import LabError
from vpnlab.course import progress
from vpnlab.course.check import check_local_lab, format_check
from vpnlab.course.report import report, to_csv, to_json
from vpnlab.lab.state import DEFAULT_PREFIX


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``check`` to the ``vpnlab`` parser."""
    p = subparsers.add_parser(
        "check",
        help="is the lab healthy (or repaired)? --report: a student's progress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("VPNLAB_PREFIX", DEFAULT_PREFIX),
        help="namespace prefix of the lab (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.add_argument("--report", action="store_true", help="write the progress report instead")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="of the report")
    p.add_argument(
        "--student", help="the name in the report (default: $SUDO_USER, else the user's name)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here (default: stdout)")
    p.add_argument(
        "--progress", metavar="FILE", help="the progress file (default: $VPNLAB_PROGRESS or ~)"
    )
    p.set_defaults(func=cmd_check)
    return p


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.progress) if args.progress else None
    if args.report:
        return _report(args, path)
    result = check_local_lab(args.prefix, save=lambda attempt: progress.record(attempt, path))
    print(json.dumps(result, indent=2) if args.json else format_check(result))
    return 0 if result["ok"] else 1


def _report(args: argparse.Namespace, path: Path | None) -> int:
    source = path or progress.progress_path()
    if not source.exists():
        raise LabError(f"no progress file {source} (nothing checked yet, or see --progress)")
    student = args.student or os.environ.get("SUDO_USER") or getpass.getuser()
    data = report(progress.load(source), student)
    text = to_csv(data) if args.format == "csv" else to_json(data)
    if args.output:
        Path(args.output).write_text(text)
        print(f"{args.output}: {args.format} report of {data['student']} ({source})")
    else:
        print(text, end="")
    return 0
