"""``vpnlab check --report``: one student's progress, per SEED VPN lab task, as JSON or CSV.

Practice, not a grade: the progress file is the student's own (grades: nbgrader's autograde
or the hub's grader, docs/course.md). A fixed fact's answer has no verdict here: its item is
``answered`` (the instructor's hidden tests grade it).

Read from the progress file (``progress.py``): every exercise a notebook checked (items
``N.M``: exercise M of notebook N) and every ``vpnlab check`` (``lab``, ``fault``). Each item:
passed or not, attempts, the first attempt and the first pass, and the seconds between them.

The nine tasks of the SEED Labs "VPN Tunneling Lab", and what checks each here (SEED_TASKS):

    SEED task                                   checked by
    1 network setup                             notebook 00's exercises (0.*)
    2 create and configure the TUN interface    notebooks 01 and 11 (1.1-1.4, 11.1-11.5;
                                                11.5: the student's echo reply written
                                                to a TUN device, task 2.d)
    3 send the IP packet to the VPN server      notebook 02 (2.*)
    4 set up the VPN server                     notebooks 03 and 04 (3.*, 4.*)
    5 handling traffic in both directions       notebook 05 (5.*), ``vpnlab check`` (lab)
    6 tunnel-breaking test                      notebooks 06 and 10 (6.*, 10.*)
    7 routing experiment on host V              notebook 08 (8.*)
    8 VPN between private networks              notebook 09 (9.*)
    9 experiment with the TAP interface         notebook 01's 1.5: a crafted ARP reply makes
                                                the kernel's neighbour entry REACHABLE;
                                                notebook 11's 11.6: the student's own ARP
                                                replies on a TAP device answer arping

Items of no SEED task (notebooks 07, 13 and 14: TCP meltdown, MTU, IPv6; the troubleshooting
labs) are reported too, under "beyond SEED": the attempts of ``vpnlab check`` in fault labs
one item per lab, ``fault:NAME`` once fixed (:func:`split_faults`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import defaultdict
from enum import unique
from pathlib import Path
from typing import TypedDict

from vpnlab.core.reasons import Reason
from vpnlab.lab.faults import FAULTS

from .grading import FACT_RECORDED
from .progress import Attempt


@unique
class Status(Reason):
    """An item's or a SEED task's status in the report (its JSON and CSV say the value)."""

    PASSED = "passed"
    ANSWERED = "answered"
    """A fixed fact recorded: the instructor's hidden tests grade it."""
    NOT_PASSED = "not passed"
    IN_PROGRESS = "in progress"
    """A SEED task: some of its items tried, not all passed."""
    NOT_ATTEMPTED = "not attempted"


class ItemSummary(TypedDict):
    """One item of the report (:func:`item_summary`); times in UTC, "" if none yet."""

    item: str
    passed: bool
    attempts: int
    first_attempt: str
    first_pass: str
    seconds_to_pass: float | None
    detail: str


class SeedTask(TypedDict):
    """One SEED task of the report: its status and the items that check it."""

    seed_task: int
    title: str
    status: Status
    checked_by: list[str]
    items: list[ItemSummary]


class Report(TypedDict):
    """:func:`report`'s result (``vpnlab check --report``'s JSON)."""

    student: str
    generated: str
    seed_tasks: list[SeedTask]
    beyond_seed: list[ItemSummary]


NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
"""The course's notebooks, in a checkout of the repository (where the exercises are listed)."""
_EXERCISE = re.compile(r'course\.(?:check_answer|observe)\(\s*"([^"]+)"')

SEED_TASKS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "Network setup", ("0.",)),
    (
        2,
        "Create and configure the TUN interface",
        ("1.1", "1.2", "1.3", "1.4", "11.1", "11.2", "11.3", "11.4", "11.5"),
    ),
    (3, "Send the IP packet to the VPN server through a tunnel", ("2.",)),
    (4, "Set up the VPN server", ("3.", "4.", "12.")),
    (5, "Handling traffic in both directions", ("5.", "12.", "lab")),
    (6, "Tunnel-breaking test", ("6.", "10.")),
    (7, "Routing experiment on host V", ("8.",)),
    (8, "VPN between private networks", ("9.",)),
    (9, "Experiment with the TAP interface", ("1.5", "11.6")),
]
"""(number, title, the items that check it: ``"3."`` is every exercise of notebook 3)."""

CSV_COLUMNS = [
    "student",
    "seed_task",
    "task",
    "item",
    "status",
    "passed",
    "attempts",
    "first_attempt",
    "first_pass",
    "seconds_to_pass",
    "detail",
]


def known_exercises(folder: Path = NOTEBOOKS) -> list[str]:
    """Every exercise id the notebooks check (``course.check_answer("3.1", ...)``), in order; none
    if the folder is not there (an installed package without the course)."""
    found = {m for path in sorted(folder.glob("*.py")) for m in _EXERCISE.findall(path.read_text())}
    return sorted(found, key=_sort_key)


def _belongs(item: str, patterns: tuple[str, ...]) -> bool:
    return any(item == p or (p.endswith(".") and item.startswith(p)) for p in patterns)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else ""


def item_summary(item: str, attempts: list[Attempt]) -> ItemSummary:
    """One item: passed, attempts, first attempt and first pass (UTC), seconds between."""
    if not attempts:
        return {
            "item": item,
            "passed": False,
            "attempts": 0,
            "first_attempt": "",
            "first_pass": "",
            "seconds_to_pass": None,
            "detail": "",
        }
    first = min(a.time for a in attempts)
    passes = [a.time for a in attempts if a.passed]
    first_pass = min(passes) if passes else None
    last = max(attempts, key=lambda a: a.time)
    return {
        "item": item,
        "passed": bool(passes),
        "attempts": len(attempts),
        "first_attempt": _when(first),
        "first_pass": _when(first_pass),
        "seconds_to_pass": round(first_pass - first, 1) if first_pass is not None else None,
        "detail": next((a.detail for a in attempts if a.passed), last.detail),
    }


def split_faults(attempts: list[Attempt]) -> dict[str, list[Attempt]]:
    """``vpnlab check``'s attempts in fault labs, one item per lab: ``fault:NAME`` once that
    lab's fault was fixed (the detail names it then), ``fault:unsolved-TOKEN`` before.

    Each detail starts with the lab's token (``[1a2b3c4d] ...``)."""
    by_lab: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        token = attempt.detail[1:9] if attempt.detail.startswith("[") else "?"
        by_lab[token].append(attempt)
    items: dict[str, list[Attempt]] = defaultdict(list)
    for token, tries in by_lab.items():
        fixed = [a.detail.split()[2] for a in tries if a.passed and " fixed " in a.detail]
        items[f"fault:{fixed[0]}" if fixed else f"fault:unsolved-{token}"] += tries
    return dict(items)


def _sort_key(item: str) -> tuple[tuple[int, int] | tuple[int, str], ...]:
    parts = item.split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def report(
    attempts: list[Attempt], student: str = "", exercises: list[str] | None = None
) -> Report:
    """The report: every SEED task with its items, then the items of no SEED task.

    Every exercise of ``exercises`` (default: :func:`known_exercises`) and every fault is an
    item, tried or not (0 attempts), besides every item tried.
    """
    by_item: dict[str, list[Attempt]] = defaultdict(list)
    for name in [*(known_exercises() if exercises is None else exercises), "lab"]:
        by_item[name] = []
    for name in FAULTS:
        by_item[f"fault:{name}"] = []
    for attempt in attempts:
        by_item[attempt.item].append(attempt)
    for name, tries in split_faults(by_item.pop("fault", [])).items():
        by_item[name] += tries
    items = {name: item_summary(name, tries) for name, tries in by_item.items()}
    tasks: list[SeedTask] = []
    placed: set[str] = set()
    for number, title, patterns in SEED_TASKS:
        mine = sorted((n for n in items if _belongs(n, patterns)), key=_sort_key)
        placed |= set(mine)
        if not mine:
            task_status = Status.NOT_ATTEMPTED
        elif all(_status(items[n]) in (Status.PASSED, Status.ANSWERED) for n in mine):
            task_status = Status.PASSED
        else:
            tried = any(items[n]["attempts"] for n in mine)
            task_status = Status.IN_PROGRESS if tried else Status.NOT_ATTEMPTED
        tasks.append(
            {
                "seed_task": number,
                "title": title,
                "status": task_status,
                "checked_by": list(patterns),
                "items": [items[n] for n in mine],
            }
        )
    extra = [items[n] for n in sorted(set(items) - placed, key=_sort_key)]
    generated = _when(time.time())
    return {"student": student, "generated": generated, "seed_tasks": tasks, "beyond_seed": extra}


def to_json(data: Report) -> str:
    return json.dumps(data, indent=2) + "\n"


def to_csv(data: Report) -> str:
    """One row per item (a SEED task without any: one row, its status), columns CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    student = data["student"]
    for task in data["seed_tasks"]:
        head = {"student": student, "seed_task": task["seed_task"], "task": task["title"]}
        if not task["items"]:
            writer.writerow({**head, "item": "", "status": task["status"]})
        for item in task["items"]:
            writer.writerow({**head, **item, "status": _status(item)})
    for item in data["beyond_seed"]:
        row = {"student": student, "seed_task": "", "task": "beyond SEED"}
        writer.writerow({**row, **item, "status": _status(item)})
    return out.getvalue()


def _status(item: ItemSummary) -> Status:
    if item["passed"]:
        return Status.PASSED
    if item["attempts"] and FACT_RECORDED in item["detail"]:
        return Status.ANSWERED
    return Status.NOT_PASSED if item["attempts"] else Status.NOT_ATTEMPTED
