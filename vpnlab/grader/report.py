"""The instructor's report from the grader's store: per student and per item, CSV and a plot.

    vpnlab grader report --store DB [--csv FILE] [--plot FILE.png]

One row per student and item (an exercise, ``lab``, ``fault:N``): passed, attempts, the first
attempt and the first pass (UTC), the seconds between them, and the detail of the pass (a
fault's name once fixed). The plot: students down, items across; a pass is green, tried and
not passed orange, untried white; each cell says the attempts.
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from pathlib import Path

from .store import Attempt

WHO = ["student", "item", "passed", "attempts"]
WHEN = ["first_attempt", "first_pass", "seconds_to_pass", "detail"]
COLUMNS = WHO + WHEN
"""The CSV's columns: who and what, then when (UTC) and the detail."""


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else ""


def rows(attempts: list[Attempt]) -> list[dict[str, object]]:
    """One row per (student, item) of ``attempts``, sorted by student then item."""
    grouped: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        grouped[(attempt.student, attempt.item)].append(attempt)
    out = []
    for (student, item), tries in sorted(grouped.items()):
        first = min(a.time for a in tries)
        passes = [a for a in tries if a.passed]
        first_pass = min((a.time for a in passes), default=None)
        out.append(
            {
                "student": student,
                "item": item,
                "passed": bool(passes),
                "attempts": len(tries),
                "first_attempt": _when(first),
                "first_pass": _when(first_pass),
                "seconds_to_pass": round(first_pass - first, 1) if first_pass else "",
                "detail": passes[0].detail if passes else tries[-1].detail,
            }
        )
    return out


def to_csv(table: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def plot(table: list[dict[str, object]], path: Path) -> None:
    """The students x items grid (module docstring) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    students = sorted({str(r["student"]) for r in table})
    items = sorted({str(r["item"]) for r in table})
    grid = [[0] * len(items) for _ in students]
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(items) + 2), max(2, 0.4 * len(students) + 1)))
    for r in table:
        y, x = students.index(str(r["student"])), items.index(str(r["item"]))
        grid[y][x] = 2 if r["passed"] else 1
        ax.text(x, y, str(r["attempts"]), ha="center", va="center", fontsize=8)
    ax.imshow(grid, cmap=ListedColormap(["white", "#f4a340", "#5cb85c"]), vmin=0, vmax=2)
    ax.set_xticks(range(len(items)), items, rotation=45, ha="right")
    ax.set_yticks(range(len(students)), students)
    ax.set_title("grader: passed (green), tried (orange); the number is attempts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
