"""What the grader judges in a student's live lab, entered from outside (``enter.py``).

    lab            the end-to-end checks of ``vpnlab check`` that observe behaviour only
                   (``course/check.py``: pings, routes, who-am-I, big packets both ways, a
                   1 MB download), on the course's fixed topology, never the student's files
    fault          a fault the grader drew for this student and injected (:func:`give_fault`):
                   the same checks plus "not restarted" against the restart marks in the
                   grader's store; a pass closes the fault
    an exercise    ``course/grading.py``'s judge on a :class:`StudentLab`

Tries are counted and limited in the grader's store (MAX_TRIES per item; a fault's item is
``fault:N``, the student's N-th fault), never in a file the student can edit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from vpnlab.core.errors import LabError
from vpnlab.course import grading
from vpnlab.course.check import behaviour_checks, not_restarted
from vpnlab.course.exercises import EXERCISES
from vpnlab.lab import faults
from vpnlab.lab.draw import WHOAMI_TOKEN
from vpnlab.lab.nodes import python_argv
from vpnlab.lab.topology import DEFAULT_TOPOLOGY, Topology

from .store import Attempt, Store

MAX_TRIES = 10
"""Judged tries per student and item (an exercise, ``lab``, one fault)."""
MAX_FAULT_TRIES = 30
"""Checks of one fault: a student checks again after each step of a repair."""
Enter = Callable[..., subprocess.CompletedProcess[str]]
"""``enter.Enterer.run`` (or ``enter.run_in_student_lab`` where the caller is root)."""


class StudentLab:
    """A student's lab as the grader sees it (the course's ``LabView``: ``prefix``,
    ``exec_in``, ``drawn``), every command through the enterer."""

    def __init__(self, enter: Enter, student: str, prefix: str) -> None:
        self.enter = enter
        self.student = student
        self.prefix = prefix
        self.topology: Topology = DEFAULT_TOPOLOGY

    def exec_in(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return self.run(node, argv, None, timeout)

    def run(
        self, node: str, argv: list[str], input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A :data:`vpnlab.lab.faults.NodeRunner`: the service's Python runs as ``python``."""
        argv = ["python", *argv[1:]] if argv and argv[0] == sys.executable else list(argv)
        return self.enter(self.student, self.prefix, node, argv, input, timeout)

    def drawn(self) -> dict[str, object]:
        """The values drawn at ``lab up``, read from the live lab, never from the student's
        state folder (which the grader neither reads nor trusts): the who-am-I token is what
        the web node serves at ``/token`` now."""
        done = self.exec_in("web", python_argv("-c", _READ_TOKEN), timeout=10)
        token = done.stdout.strip() if done.returncode == 0 else ""
        return {WHOAMI_TOKEN: token} if token else {}


_READ_TOKEN = (
    "import urllib.request as u; "
    "print(u.urlopen('http://127.0.0.1/token', timeout=5).read().decode().strip())"
)


def _verdict(checks: list[dict[str, Any]]) -> tuple[bool, str]:
    ok = all(c["ok"] for c in checks)
    return ok, "" if ok else "failing: " + ", ".join(c["name"] for c in checks if not c["ok"])


def give_fault(store: Store, lab: StudentLab) -> dict[str, Any]:
    """The student's open fault's ticket, or a fault drawn for them (``faults.draw`` under the
    store's secret, among those they did not have yet) and injected into their troubleshooting
    lab, its record kept in the store.

    An open fault follows the student into a lab built anew (its namespaces are new: the idle
    culler stopped their server and the lab with it, or ``vpnlab lab down``): the same fault
    is injected there and its marks moved, so it can be repaired in that lab and a rebuild
    never gets rid of it. A VPN restarted in the same lab keeps the old marks ("not restarted").

    Raises LabError if the lab is not a troubleshooting lab (``vpnlab lab up --fault grader``).
    """
    topo = lab.topology
    drawn = store.open_fault(lab.student)
    if drawn is not None and not rebuilt(drawn.marks, faults.restart_marks(lab.run, topo)):
        return {"ticket": drawn.ticket, "new": False}
    guard = lab.run(topo.tunnel.clients[0], ["nft", "list", "table", "inet", faults.GUARD_TABLE])
    if guard.returncode != 0:
        raise LabError(
            f"lab {lab.prefix} is not a troubleshooting lab: "
            f"vpnlab lab up --prefix {lab.prefix} --fault grader"
        )
    if drawn is not None:
        faults.FAULTS[drawn.name].inject(lab.run, topo, lab.prefix)
        store.move_fault(drawn.id, faults.restart_marks(lab.run, topo))
        return {"ticket": drawn.ticket, "new": False}
    names = [n for n, f in faults.FAULTS.items() if not f.local_only]
    names = [n for n in names if n not in store.fault_names(lab.student)] or names  # each once
    name = faults.draw(names, lab.student, store.secret(), store.faults_drawn(lab.student))
    faults.FAULTS[name].inject(lab.run, topo, lab.prefix)
    ticket = faults.FAULTS[name].ticket
    store.add_fault(lab.student, name, faults.restart_marks(lab.run, topo), ticket)
    return {"ticket": ticket, "new": True}


def rebuilt(old: dict[str, int], now: dict[str, int]) -> bool:
    """Whether ``now``'s marks are of other namespaces than ``old``'s (their netns cookies
    differ: :func:`faults.restart_marks`), not merely of a restarted tun0."""
    return any(now.get(key) != value for key, value in old.items() if key.endswith(" netns"))


def check_lab(store: Store, lab: StudentLab) -> dict[str, Any]:
    """``lab`` or, with a fault open, that fault: the checks, the verdict, recorded."""
    drawn = store.open_fault(lab.student)
    item = "lab" if drawn is None else f"fault:{store.faults_drawn(lab.student)}"
    _tries_left(store, lab.student, item, MAX_FAULT_TRIES if drawn else MAX_TRIES)
    checks = behaviour_checks(lab, lab.topology)
    if drawn is not None:
        checks.append(not_restarted(lab.run, lab.topology, drawn.marks))
    ok, detail = _verdict(checks)
    if ok and drawn is not None:
        store.fix_fault(drawn.id)
        detail = f"fixed {drawn.name} after {time.time() - drawn.started:.0f} s"
    store.add(Attempt(lab.student, item, ok, time.time(), detail))
    return {"item": item, "ok": ok, "checks": checks, **_left(store, lab.student, item, drawn)}


def check_exercise(store: Store, lab: StudentLab, exercise: str, answer: Any) -> dict[str, Any]:
    """A live exercise judged in the student's lab now, recorded."""
    spec = EXERCISES.get(exercise)
    if spec is None:
        raise LabError(f"no exercise {exercise!r}")
    _tries_left(store, lab.student, exercise, MAX_TRIES)
    try:
        ok = grading.judge(exercise, answer, lab)
    except (TypeError, ValueError) as exc:
        raise LabError(f"exercise {exercise}: {exc}") from None
    store.add(Attempt(lab.student, exercise, ok, time.time(), "" if ok else "wrong"))
    return {"item": exercise, "ok": ok, **_left(store, lab.student, exercise, None)}


def _tries_left(store: Store, student: str, item: str, limit: int) -> None:
    if store.passed(student, item):
        raise LabError(f"{item}: already passed")
    if store.tries(student, item) >= limit:
        raise LabError(f"{item}: no tries left ({limit} used)")


def _left(store: Store, student: str, item: str, drawn: object) -> dict[str, int]:
    limit = MAX_FAULT_TRIES if drawn is not None else MAX_TRIES
    return {"tries_left": max(0, limit - store.tries(student, item))}
