"""What a student has done: one JSON line per attempt at an exercise or task, for the instructor.

The notebooks' checks and ``vpnlab check`` append here; ``vpnlab check --report`` reads it back.
The file is ``$VPNLAB_PROGRESS`` or ``~/.vpnlab/progress.jsonl``; each line is
``{"item": "3.1", "passed": true, "time": 1764590000.0, "detail": ""}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS_ENV = "VPNLAB_PROGRESS"


@dataclass(frozen=True)
class Attempt:
    """One try at one exercise (``item``: "3.1") or lab task (``item``: "fault:...")."""

    item: str
    passed: bool
    time: float
    detail: str = ""


def progress_path() -> Path:
    """``$VPNLAB_PROGRESS``, or ``~/.vpnlab/progress.jsonl``."""
    return Path(os.environ.get(PROGRESS_ENV) or Path.home() / ".vpnlab" / "progress.jsonl")


def record(attempt: Attempt, path: Path | None = None) -> None:
    """Append ``attempt`` as one line (the folder is made if missing)."""
    path = path or progress_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(attempt)) + "\n")


def load(path: Path | None = None) -> list[Attempt]:
    """Every attempt recorded, oldest first; lines that are not an attempt are skipped."""
    path = path or progress_path()
    if not path.exists():
        return []
    attempts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            attempts.append(Attempt(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return attempts
