"""What judging an exercise needs of a lab (``grading.LabView``; here so that ``exercises.py``,
which ``grading.py`` imports, can name it too)."""

from __future__ import annotations

import subprocess
from typing import Protocol


class LabView(Protocol):
    """What judging needs of a lab: the notebook's CourseLab, or the hub's grader entering a
    student's lab from outside (``judge(exercise, answer, lab)`` takes either).

    ``prefix``: the lab's namespace prefix. ``exec_in(node, argv, timeout)``: run a command in
    that lab node (text output). ``drawn()``: the values drawn for this lab at ``lab up``
    (who-am-I token, NAT port range, tunnel MTU, site LAN, ...).
    """

    prefix: str

    def exec_in(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]: ...

    def drawn(self) -> dict[str, object]: ...
