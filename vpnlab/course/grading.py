"""The notebooks' checks: they measure or compare with a salted hash, and every try is recorded.

A check never holds its answer as a literal. Each exercise of ``exercises.py`` has either

- a ``digest``: a salted SHA-256 of the answer's canonical form (type included, so ``True``
  is not ``1``), which is all the course ships of a fixed answer; or
- a ``measure``: a function of the notebook's :class:`~vpnlab.course.notebook.CourseLab` that
  reads what the live lab measured (a count, a delay), compared with a ``tolerance``.

The registry of exercises is ``exercises.py``; ``notebook.check`` looks the exercise up there.
Every :func:`check` appends an :class:`~vpnlab.course.progress.Attempt` to the progress file
(``vpnlab check --report`` reads it). After ``MAX_FAILED`` wrong tries at one exercise the check
stops judging it: guessing through the answers is visible to the instructor, not rewarded.
:func:`predict` records a guess before a demonstration runs (the check says afterwards whether
it was right); :func:`explain` records a short written explanation for the instructor.

A hash stops copying, not a determined student: the answers of small spaces (a count, a
True/False) can be found by hashing each candidate. The limit on tries and the recorded
attempts are what make that visible.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vpnlab.course.progress import Attempt, load, record


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


SALT = "vpnlab-course-2026"
MAX_FAILED = 5
"""Wrong tries at one exercise after which its check stops judging (the instructor sees why)."""
MIN_EXPLANATION_WORDS = 8


@dataclass(frozen=True)
class Exercise:
    """How one exercise is judged: ``kind`` (``int``, ``str``, ``bool``) and one of
    ``digest`` (fixed answers) or ``measure`` (live answers, within ``tolerance``)."""

    kind: type
    hint: str
    digest: str = ""
    measure: Callable[[Any], Any] | None = None
    tolerance: float = 0.0


def canonical(value: Any) -> str:
    """The typed text that is hashed: ``bool:True``, ``num:32``, ``num:2.5``, ``str:tun0``.

    Strings are compared stripped and lower-case; ints and integral floats are one number;
    a bool is never a number.
    """
    if isinstance(value, bool):
        return f"bool:{value}"
    if isinstance(value, int | float):
        return f"num:{int(value)}" if float(value).is_integer() else f"num:{float(value)!r}"
    if isinstance(value, str):
        return "str:" + " ".join(value.split()).lower()
    raise TypeError(f"not an answer type: {type(value).__name__}")


def digest(exercise: str, value: Any) -> str:
    """The salted hash of ``value`` as the answer to ``exercise`` (16 hex digits)."""
    text = f"{SALT}/{exercise}/{canonical(value)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kind_ok(kind: type, answer: Any) -> bool:
    if kind is bool:
        return isinstance(answer, bool)
    if kind is int:  # 2.0 is 2; True is not 1
        return isinstance(answer, int | float) and not isinstance(answer, bool)
    return isinstance(answer, kind)


def judge(exercise: str, answer: Any, lab: LabView | None) -> bool:
    """Whether ``answer`` is right for ``exercise`` in ``lab`` (no output, nothing recorded).

    The one judging entry: the notebook's check and the hub's grader both call it.
    """
    from vpnlab.course.exercises import EXERCISES

    spec = EXERCISES[exercise]
    if not _kind_ok(spec.kind, answer):
        return False
    if spec.measure is None:
        return digest(exercise, answer) == spec.digest
    if lab is None:
        raise ValueError(f"exercise {exercise} is measured in the lab: pass lab=lab")
    expected = spec.measure(lab)
    if spec.kind is int:
        return abs(answer - expected) <= spec.tolerance
    return canonical(answer) == canonical(expected)


def failed_tries(exercise: str) -> int:
    return sum(a.item == exercise and not a.passed for a in load())


def check(exercise: str, answer: Any, spec: Exercise, lab: Any = None) -> None:
    """Autograder-style feedback for one exercise, recorded in the progress file.

    ``answer`` still ``...`` (Ellipsis): says so (so "Run all" goes on), records nothing.
    Otherwise prints a tick or raises AssertionError with the exercise's hint.
    """
    if answer is Ellipsis:
        print(f"Exercise {exercise}: not answered yet (replace ... with your answer).")
        return
    if failed_tries(exercise) >= MAX_FAILED:
        record(Attempt(exercise, False, time.time(), f"refused after {MAX_FAILED}: {answer!r}"))
        raise AssertionError(
            f"Exercise {exercise}: {MAX_FAILED} wrong tries already; this one is not judged. "
            "Explain your reasoning to your instructor (course.explain)."
        )
    ok = judge(exercise, answer, lab)
    verdict = _prediction_verdict(exercise, ok, spec, lab)
    record(Attempt(exercise, ok, time.time(), f"answer {answer!r}{verdict}"))
    if not ok:
        why = "" if _kind_ok(spec.kind, answer) else f" (a {spec.kind.__name__} is wanted)"
        raise AssertionError(f"Exercise {exercise}: not quite ({answer!r}){why}. {spec.hint}")
    print(f"Exercise {exercise}: correct \N{CHECK MARK} ({answer!r}){verdict}")


# --- predict, then observe, then explain --------------------------------------------------------


def predict(exercise: str, value: Any) -> None:
    """Record a prediction for ``exercise`` before the demonstration that answers it runs.

    ``value``: what the exercise's answer will be (an int, str or bool).
    """
    if value is Ellipsis:
        print(f"Prediction {exercise}: none yet (replace ... with what you expect).")
        return
    record(Attempt(f"{exercise}:predict", True, time.time(), json.dumps(value)))
    print(f"Prediction {exercise} recorded: {value!r}. Now run the experiment.")


def _prediction_verdict(exercise: str, ok: bool, spec: Exercise, lab: Any) -> str:
    """``; your prediction X was right/wrong``, judged as an answer once the answer is right."""
    guesses = [a for a in load() if a.item == f"{exercise}:predict"]
    if not guesses or not ok:
        return ""
    guess = json.loads(guesses[-1].detail)
    right = judge(exercise, guess, lab)
    return f"; your prediction {guess!r} was {'right' if right else 'wrong'}"


def explain(exercise: str, text: Any) -> None:
    """Record a short written explanation (``MIN_EXPLANATION_WORDS`` words at least)."""
    if text is Ellipsis:
        print(f"Explanation {exercise}: not written yet (replace ... with a few sentences).")
        return
    words = len(str(text).split())
    ok = isinstance(text, str) and words >= MIN_EXPLANATION_WORDS
    record(Attempt(f"{exercise}:explain", ok, time.time(), str(text)))
    if not ok:
        raise AssertionError(f"Explanation {exercise}: {words} words; write a few sentences.")
    print(f"Explanation {exercise} recorded ({words} words) for your instructor.")


def observe(exercise: str, facts: dict[str, bool]) -> None:
    """A behavioural check: passes when every fact the lab observed holds (notebook 12: a
    ping, a fetch and a capture through the student's own tunnel), recorded with the facts."""
    missing = [name for name, held in facts.items() if not held]
    record(Attempt(exercise, not missing, time.time(), json.dumps(facts)))
    if missing:
        raise AssertionError(f"Exercise {exercise}: not yet: {'; '.join(missing)}")
    print(f"Exercise {exercise}: correct \N{CHECK MARK} ({', '.join(facts)})")
