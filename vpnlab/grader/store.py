"""The grader's own store: attempts, results, the faults it drew, its secret (SQLite).

Owned by the service's user, the folder 0700 and the database 0600 (made so from the start:
umask 077), so no student reads or writes it. The store is where tries are limited
(:meth:`Store.tries`) and what the instructor report reads (``grader/report.py``).

    attempts  student, item, passed, time, detail    one row per judged try
    faults    student, name, started, marks, ticket  one row per fault drawn; fixed (time) once
                                                     a check of it passed
    secret    value                                  32 random bytes: the fault draw's key
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.errors import LabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, student TEXT NOT NULL, item TEXT NOT NULL,
    passed INTEGER NOT NULL, time REAL NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_by_student ON attempts (student, item);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY, student TEXT NOT NULL, name TEXT NOT NULL, started REAL NOT NULL,
    marks TEXT NOT NULL, ticket TEXT NOT NULL, fixed REAL);
CREATE TABLE IF NOT EXISTS secret (value BLOB NOT NULL);
"""


@dataclass(frozen=True)
class Attempt:
    """One judged try: who, which item (an exercise id, ``lab``, ``fault:NAME``), the verdict."""

    student: str
    item: str
    passed: bool
    time: float
    detail: str


@dataclass(frozen=True)
class DrawnFault:
    """A fault the grader drew and injected into a student's lab (its record: only here)."""

    id: int
    student: str
    name: str
    started: float
    marks: dict[str, int]
    ticket: str
    fixed: float | None


class Store:
    """The SQLite store at ``path``, made with its folder if missing (0700, 0600).

    An existing folder or file that others may open is refused (:func:`closed_to_others`),
    never chmod-ed: ``--store`` may name any path, and a folder the store did not make is not
    the store's to change (``/etc/passwd`` as a store once left /etc 0700). ``read_only`` (the
    instructor's report): an existing store, opened so that nothing can be written to it, by
    whoever reads it (root leaves no file of its own beside the service's).
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise LabError(f"the grader's store {path} is a folder: --store names its file")
        old = os.umask(0o077)
        try:
            if not read_only:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            closed_to_others(self.path.parent)
            if self.path.exists() or read_only:
                closed_to_others(self.path)
            where = f"{self.path.resolve().as_uri()}?mode=ro" if read_only else self.path
            self.db = sqlite3.connect(
                where, check_same_thread=False, isolation_level=None, uri=read_only
            )
        finally:
            os.umask(old)
        self._lock = threading.Lock()
        if read_only:
            return
        with self._lock:
            self.db.executescript(SCHEMA)
            if self.db.execute("SELECT COUNT(*) FROM secret").fetchone()[0] == 0:
                self.db.execute("INSERT INTO secret VALUES (?)", (secrets.token_bytes(32),))

    def secret(self) -> bytes:
        """The key of the fault draw (never leaves the store)."""
        with self._lock:
            return bytes(self.db.execute("SELECT value FROM secret").fetchone()[0])

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO attempts (student, item, passed, time, detail) VALUES (?,?,?,?,?)",
                (attempt.student, attempt.item, int(attempt.passed), attempt.time, attempt.detail),
            )

    def tries(self, student: str, item: str) -> int:
        """How often ``student`` was judged on ``item``."""
        with self._lock:
            row = self.db.execute(
                "SELECT COUNT(*) FROM attempts WHERE student = ? AND item = ?", (student, item)
            ).fetchone()
        return int(row[0])

    def passed(self, student: str, item: str) -> bool:
        with self._lock:
            row = self.db.execute(
                "SELECT 1 FROM attempts WHERE student = ? AND item = ? AND passed = 1 LIMIT 1",
                (student, item),
            ).fetchone()
        return row is not None

    def attempts(self, student: str | None = None) -> list[Attempt]:
        """Every attempt (of ``student``), oldest first."""
        query = "SELECT student, item, passed, time, detail FROM attempts"
        args: tuple[str, ...] = ()
        if student is not None:
            query, args = query + " WHERE student = ?", (student,)
        with self._lock:
            rows = self.db.execute(query + " ORDER BY time, id", args).fetchall()
        return [Attempt(s, i, bool(p), t, d) for s, i, p, t, d in rows]

    def faults_drawn(self, student: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT COUNT(*) FROM faults WHERE student = ?", (student,))
            return int(row.fetchone()[0])

    def fault_names(self, student: str) -> set[str]:
        """The faults ``student`` was given so far."""
        with self._lock:
            rows = self.db.execute("SELECT name FROM faults WHERE student = ?", (student,))
            return {row[0] for row in rows.fetchall()}

    def add_fault(self, student: str, name: str, marks: dict[str, int], ticket: str) -> int:
        with self._lock:
            cursor = self.db.execute(
                "INSERT INTO faults (student, name, started, marks, ticket) VALUES (?,?,?,?,?)",
                (student, name, time.time(), json.dumps(marks), ticket),
            )
        return int(cursor.lastrowid or 0)

    def open_fault(self, student: str) -> DrawnFault | None:
        """The student's latest fault that no check passed yet, or None."""
        with self._lock:
            row = self.db.execute(
                "SELECT id, student, name, started, marks, ticket, fixed FROM faults"
                " WHERE student = ? AND fixed IS NULL ORDER BY id DESC LIMIT 1",
                (student,),
            ).fetchone()
        if row is None:
            return None
        return DrawnFault(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])

    def move_fault(self, fault_id: int, marks: dict[str, int]) -> None:
        """The open fault injected again into a lab built anew: that lab's marks."""
        with self._lock:
            self.db.execute(
                "UPDATE faults SET marks = ? WHERE id = ?", (json.dumps(marks), fault_id)
            )

    def fix_fault(self, fault_id: int) -> None:
        with self._lock:
            self.db.execute("UPDATE faults SET fixed = ? WHERE id = ?", (time.time(), fault_id))

    def close(self) -> None:
        self.db.close()


def closed_to_others(path: Path) -> None:
    """LabError (one line) unless only ``path``'s owner may open it (its mode has no group or
    other bits): the grades and the fault draw's secret are read by the grader alone."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        private = "700" if path.is_dir() else "600"
        raise LabError(
            f"the grader's store may not be in {path}: others may open it (mode {mode:o}); "
            f"give --store a folder of its own (it makes it 0700) or chmod {private} it"
        )


def open_store(path: Path, read_only: bool = False) -> Store:
    """The store, or LabError (one line) if it cannot be opened."""
    try:
        return Store(path, read_only)
    except (OSError, sqlite3.Error) as exc:
        raise LabError(f"cannot open the grader's store {path}: {exc}") from None
